"""Our book against other pip-installable Python order books, on the same workload.

Peers (each is skipped, with a note, when it is not installed):

* ``pyorderbook`` 0.4.9 (``pip install pyorderbook==0.4.9``, in the ``test`` extra): heap of
  price levels, a dict per level, ``Decimal`` prices, ``uuid4`` ids.
* ``akhil4n-orderbook`` 0.1.1 (``pip install akhil4n-orderbook``; the module is ``orderbook``):
  ``SortedDict`` of levels, an ``OrderedDict`` per level, a trade log.

Looked at and left out: ``order-matching`` (a cancel scans the whole book; needs polars and
pandera; float prices), ``OrderBook`` 0.1.2 (Python 2 only).

Neither peer has self-trade prevention, IOC or a price band, so the comparison runs on the
*self-trade-free* variant of a workload (marketable orders come from members who never rest an
order), an IOC order is "match, then cancel what rested", and a market order is a limit order
at the band's edge (pyorderbook) or the peer's own market order (akhil4n). Peer orders are
mutable objects, so they are built fresh before every run (unmeasured), as our commands are.

Before timing, one untimed pass of each book collects the fills; they must agree with ours
exactly: the same trades, in the same order, with the same price, quantity, aggressor and
resting order (peer ids mapped back to ours). Reported per peer and shape:
``book.<shape>.vs.<peer>``: ``ratio`` (our ops/s over theirs, the median of the paired runs),
``ours_ops_per_s``, ``theirs_ops_per_s``, ``fills_agree`` (1 or 0) and ``fills``.
"""

from __future__ import annotations

import gc
import importlib.metadata
import statistics
import time
from typing import Any

from bench.book_bench import throughput_pass, workload
from bench.registry import Context, register
from bench.workload import Workload, new_book
from exchange.model.commands import CancelOrder
from exchange.model.enums import OrderType, Side, TimeInForce
from exchange.model.events import OrderFilled

Fill = tuple[int, int, int, int]  # price_fen, qty_t, aggressor order id, resting order id

# What a peer book that cannot handle the workload raises (a bad order id, an unexpected state,
# an assertion inside the library): reported as a difference in fills, not a crash of the bench.
PEER_FAILURES = (ArithmeticError, AssertionError, AttributeError, LookupError, RuntimeError, TypeError, ValueError)


def our_fills(wl: Workload) -> list[Fill]:
    book = wl.prefilled_book()
    fills: list[Fill] = []
    for order_id, op in wl.ops:
        events = book.cancel(op) if isinstance(op, CancelOrder) else book.submit(order_id, op)
        for e in events:
            if type(e) is OrderFilled:
                if e.aggressor == Side.BUY:
                    fills.append((e.price_fen, e.qty_t, e.buy_order_id, e.sell_order_id))
                else:
                    fills.append((e.price_fen, e.qty_t, e.sell_order_id, e.buy_order_id))
    return fills


# Operation codes of the peers' prepared operation lists.
PASSIVE, IOC, MARKET, CANCEL = 0, 1, 2, 3


def _code(cmd) -> int:
    if cmd.order_type == OrderType.MARKET:
        return MARKET
    return IOC if cmd.tif in (TimeInForce.IOC, TimeInForce.FOK) else PASSIVE


class Peer:
    """Adapter: build a prefilled peer book and its operation list, run it, read its fills."""

    name = ""
    distribution = ""

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def prepare(self, wl: Workload) -> tuple[Any, list, dict]:
        """(prefilled book, operations, peer order id -> our order id)."""
        raise NotImplementedError

    def run(self, book, ops) -> None:
        """The measured loop: every operation once, results dropped."""
        raise NotImplementedError

    def fills(self, book, ops, id_map: dict) -> list[Fill]:
        raise NotImplementedError


class PyOrderBook(Peer):
    name = distribution = "pyorderbook"

    def prepare(self, wl: Workload):
        import pyorderbook

        band = new_book()
        lower, upper = band.lower_fen, band.upper_fen  # a market order is a limit at the band's edge
        book = pyorderbook.Book()
        id_map: dict = {}
        by_ours: dict[int, Any] = {}

        def order(order_id, cmd):
            price = cmd.price_fen if cmd.price_fen is not None else (upper if cmd.side == Side.BUY else lower)
            side = pyorderbook.Side.BID if cmd.side == Side.BUY else pyorderbook.Side.ASK
            o = pyorderbook.Order(side, cmd.instrument, price, cmd.qty_t)
            id_map[o.id] = order_id
            by_ours[order_id] = o
            return o

        for order_id, cmd in wl.iter_prefill():
            book.match(order(order_id, cmd))
        ops = []
        for order_id, op in wl.ops:
            if isinstance(op, CancelOrder):
                ops.append((CANCEL, by_ours[op.order_id]))
            else:
                code = _code(op)
                ops.append((IOC if code == MARKET else code, order(order_id, op)))
        return book, ops, id_map

    def run(self, book, ops) -> None:
        match, cancel = book.match, book.cancel
        for code, order in ops:
            if code == PASSIVE:
                match(order)
            elif code == IOC:
                match(order)
                if order.quantity:
                    cancel(order)
            else:
                cancel(order)

    def fills(self, book, ops, id_map) -> list[Fill]:
        fills: list[Fill] = []
        for code, order in ops:
            if code == CANCEL:
                book.cancel(order)
                continue
            blotter = book.match(order)
            for t in blotter.trades:
                fills.append((int(t.fill_price), t.fill_quantity, id_map[t.incoming_order_id], id_map[t.standing_order_id]))
            if code == IOC and order.quantity:
                book.cancel(order)
        return fills


class Akhil4nOrderBook(Peer):
    name = distribution = "akhil4n-orderbook"

    def prepare(self, wl: Workload):
        import orderbook as ob  # the module of akhil4n-orderbook

        book = ob.OrderBook()
        id_map: dict = {}
        by_ours: dict[int, Any] = {}

        def order(order_id, cmd, code):
            side = ob.OrderSide.BID if cmd.side == Side.BUY else ob.OrderSide.ASK
            o = ob.MarketOrder(side, cmd.qty_t) if code == MARKET else ob.Order(side, cmd.price_fen, cmd.qty_t)
            id_map[o.order_id] = order_id
            by_ours[order_id] = o
            return o

        for order_id, cmd in wl.iter_prefill():
            book.add_limit_order(order(order_id, cmd, PASSIVE))
        ops = []
        for order_id, op in wl.ops:
            if isinstance(op, CancelOrder):
                ops.append((CANCEL, by_ours[op.order_id].order_id))
            else:
                code = _code(op)
                ops.append((code, order(order_id, op, code)))
        book.trade_log.clear()
        return book, ops, id_map

    def run(self, book, ops) -> None:
        add_limit, add_market, cancel = book.add_limit_order, book.add_market_order, book.cancel_order
        for code, arg in ops:
            if code == PASSIVE:
                add_limit(arg)
            elif code == IOC:
                add_limit(arg)
                if arg.remaining_quantity:
                    cancel(arg.order_id)
            elif code == MARKET:
                add_market(arg)
            else:
                cancel(arg)

    def fills(self, book, ops, id_map) -> list[Fill]:
        self.run(book, ops)
        return [(int(t.price), t.quantity_filled, id_map[t.aggressor_id], id_map[t.filler_id]) for t in book.trade_log]


def compare_fills(ours: list[Fill], theirs: list[Fill]) -> str | None:
    """None when identical, else a description of the first difference."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return f"fill {i}: ours {a} vs theirs {b}"
    if len(ours) != len(theirs):  # the common prefix agrees; the lengths may differ
        return f"{len(ours)} fills vs {len(theirs)}"
    return None


def peer_bench(ctx: Context, peer: Peer, shape: str, full_runs: int) -> None:
    bench = f"book.{shape}.vs.{peer.name}"
    version = peer.version()
    if version is None:
        ctx.note(f"{bench}: {peer.distribution} is not installed; skipped")
        return
    ctx.note(f"{peer.name} {version}")
    wl = workload(ctx, shape, stp_free=True)

    ours = our_fills(wl)
    book, ops, id_map = peer.prepare(wl)
    try:
        theirs = peer.fills(book, ops, id_map)
        difference = compare_fills(ours, theirs)
    except PEER_FAILURES as exc:  # a peer that breaks on the workload does not agree
        difference = f"{type(exc).__name__}: {exc}"
    del book, ops
    ctx.note(f"{bench}: {len(ours):,} fills; " + ("fills agree" if difference is None else f"FILLS DIFFER: {difference}"))

    runs = ctx.runs(full_runs)
    ours_rate: list[float] = []
    theirs_rate: list[float] = []
    for _ in range(runs):
        gc.collect()
        book = wl.prefilled_book()
        gc.collect()
        ours_rate.append(len(wl.ops) * 1e9 / throughput_pass(book, wl.ops))
        del book
        book, ops, _ids = peer.prepare(wl)
        gc.collect()
        theirs_rate.append(len(ops) * 1e9 / _timed(peer.run, book, ops))
        del book, ops, _ids
    ratios = [a / b for a, b in zip(ours_rate, theirs_rate, strict=True)]
    ctx.report(bench, "ratio", round(statistics.median(ratios), 2), "x", runs=runs, stat="median")
    ctx.report_median(bench, "ours_ops_per_s", ours_rate, "ops/s", digits=0)
    ctx.report_median(bench, "theirs_ops_per_s", theirs_rate, "ops/s", digits=0)
    ctx.report(bench, "fills_agree", int(difference is None), "bool")
    ctx.report(bench, "fills", len(ours), "fills")


def _timed(fn, *args) -> int:
    t0 = time.perf_counter_ns()
    fn(*args)
    return time.perf_counter_ns() - t0


PEERS = (PyOrderBook(), Akhil4nOrderBook())
PEER_SHAPES = (("normal", 5), ("deep", 3), ("wide", 3))  # (shape, runs at full size)

for _peer in PEERS:
    for _shape, _runs in PEER_SHAPES:

        def _bench(ctx: Context, peer: Peer = _peer, shape: str = _shape, runs: int = _runs) -> None:
            peer_bench(ctx, peer, shape, runs)

        register(
            f"book.{_shape}.vs.{_peer.name}",
            f"same self-trade-free {_shape} workload on {_peer.name}: fills must agree; ratio ours/theirs",
        )(_bench)
