"""Seeded, prebuilt workloads for the order-book benchmarks.

A workload is a *prefill* (passive orders that give the book its shape before anything is
measured) and a list of *operations*: 60 % passive limit orders near the touch, 25 % cancels of
resting orders, 15 % marketable orders (IOC limit orders a few ticks through the touch, and
some market orders). Everything is generated up front from ``random.Random(seed)``, so
generation is never measured and the same seed always gives the same commands.

To know the best prices and which orders are resting, the generator replays every command
through a model book, which is simply our own ``OrderBook`` run once at generation time. So
passive orders never cross, and every cancel targets an order that is resting at that moment
(stale cancels are still counted, and should be 0). The model run also counts fills and
self-trades (with several hundred members they are rare).

An operation is a tuple ``(order_id, command)``: a ``SubmitOrder`` with the exchange order id
to give it, or ``(0, CancelOrder)``. The prefill is not stored: ``Workload.iter_prefill()``
regenerates it from the seed each time. That costs a little time (unmeasured) and saves the
memory of a million prebuilt commands; it also means that the resting orders a benchmark
builds hold only what the book itself keeps alive, which is what ``book.bytes_per_order``
must count.

Shapes (resting orders after the prefill, and how far from the touch passive orders rest):

========  ==========  ==================================================================
normal        4,000   exponential distance, mean 8 ticks: a few dozen busy levels a side
deep        100,000   uniform over 100 ticks: ~100 levels a side, ~500 orders per level
wide         18,000   uniform over 900 ticks: ~900 levels a side, ~10 orders per level
million   1,000,000   uniform over 500 ticks: ~500 levels a side, ~1,000 orders per level
========  ==========  ==================================================================

The number of resting orders is held near the shape's size by scaling the size of marketable
orders (more resting orders, larger takers), so the shape survives 200,000 operations.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from exchange.book.order_book import OrderBook, TradeIds
from exchange.model.commands import CancelOrder, SubmitOrder
from exchange.model.enums import CancelReason, InstrumentKind, OrderType, SelfTradePolicy, Side, TimeInForce
from exchange.model.events import CancelRejected, OrderCancelled, OrderFilled
from exchange.model.instruments import Instrument

SYMBOL = "CEA-2025"
TRADING_DAY = "2025-06-02"
MID_FEN = 100_000

# Band 50 %: [50,000, 150,000] fen, wide enough for every shape and for the mid to wander.
INSTRUMENT = Instrument(
    symbol=SYMBOL,
    kind=InstrumentKind.ALLOWANCE,
    vintage=2025,
    reference_price_fen=MID_FEN,
    band_bps=5_000,
    tick_fen=1,
    lot_t=1,
)

PASSIVE_SHARE = 0.60
CANCEL_SHARE = 0.25
MARKETABLE_SHARE = 0.15
MARKET_ORDER_SHARE = 0.20  # of the marketable orders; the rest are IOC limit orders
MAX_THROUGH_TICKS = 4  # an IOC limit order is priced 0..4 ticks through the touch
PASSIVE_QTY_MAX = 100  # passive quantities are uniform 1..100 t
MEMBERS = 500

# Resting orders consumed per marketable order that keeps the count steady:
# passive in = cancels out + marketable * k  ->  k = (0.60 - 0.25) / 0.15.
_TAKE_ORDERS = (PASSIVE_SHARE - CANCEL_SHARE) / MARKETABLE_SHARE
_MEAN_PASSIVE_QTY = (1 + PASSIVE_QTY_MAX) / 2


@dataclass(frozen=True)
class Shape:
    name: str
    resting: int  # resting orders after the prefill
    distance: str  # "exponential" or "uniform": ticks behind the touch for passive orders
    distance_ticks: int  # the mean (exponential) or the number of ticks (uniform)


SHAPES = {
    "normal": Shape("normal", 4_000, "exponential", 8),
    "deep": Shape("deep", 100_000, "uniform", 100),
    "wide": Shape("wide", 18_000, "uniform", 900),
    "million": Shape("million", 1_000_000, "uniform", 500),
}


def new_book() -> OrderBook:
    """An empty book of the benchmark instrument, day started (CANCEL_NEWEST)."""
    book = OrderBook(INSTRUMENT, TradeIds(), SelfTradePolicy.CANCEL_NEWEST)
    book.start_day(TRADING_DAY)
    return book


def member_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(count)]


@dataclass
class Workload:
    shape: Shape
    seed: int
    resting: int  # prefill size (may be smaller than the shape's at --size small)
    ops: list[tuple[int, SubmitOrder | CancelOrder]]
    stp_free: bool
    stats: dict[str, int] = field(default_factory=dict)

    def iter_prefill(self) -> Iterator[tuple[int, SubmitOrder]]:
        """The prefill commands, regenerated from the seed (order ids 1..resting)."""
        return prefill_commands(self.shape.name, self.resting, self.seed, self.stp_free)

    def prefilled_book(self) -> OrderBook:
        book = new_book()
        submit = book.submit
        for order_id, cmd in self.iter_prefill():
            submit(order_id, cmd)
        return book


def _distance(rng: random.Random, shape: Shape) -> int:
    """Ticks behind the touch for a passive order."""
    if shape.distance == "uniform":
        return rng.randrange(shape.distance_ticks)
    return min(int(rng.expovariate(1.0 / shape.distance_ticks)), 20 * shape.distance_ticks)


def _makers_and_takers(stp_free: bool) -> tuple[list[str], list[str]]:
    """Who sends passive orders and who sends marketable ones.

    Normally every member does both, so an occasional self-trade happens (and is counted).
    ``stp_free``: marketable orders come from members who never rest an order, so no
    self-trade can occur (for comparing with books that have no self-trade prevention).
    """
    if stp_free:
        return member_ids("M", MEMBERS - 100), member_ids("T", 100)
    members = member_ids("M", MEMBERS)
    return members, members


def prefill_commands(shape_name: str, resting: int, seed: int, stp_free: bool = False) -> Iterator[tuple[int, SubmitOrder]]:
    """The prefill: passive orders alternating buy and sell around MID_FEN; they never cross.

    Yields ``(order_id, SubmitOrder)`` with order ids 1..resting, built on the fly.
    """
    shape = SHAPES[shape_name]
    rng = random.Random(f"{seed}/prefill/{shape.name}")
    makers, _ = _makers_and_takers(stp_free)
    for order_id in range(1, resting + 1):
        distance = _distance(rng, shape)
        if order_id % 2:
            side, price = Side.BUY, MID_FEN - 1 - distance
        else:
            side, price = Side.SELL, MID_FEN + 1 + distance
        member = makers[rng.randrange(len(makers))]
        qty = rng.randint(1, PASSIVE_QTY_MAX)
        yield order_id, SubmitOrder(member, SYMBOL, side, qty, price)


class _LiveIds:
    """The ids of resting orders, with O(1) add, discard and uniform random choice."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.index: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, order_id: int) -> None:
        self.index[order_id] = len(self.ids)
        self.ids.append(order_id)

    def discard(self, order_id: int) -> None:
        i = self.index.pop(order_id, None)
        if i is None:
            return
        last = self.ids.pop()
        if last != order_id:
            self.ids[i] = last
            self.index[last] = i

    def choice(self, rng: random.Random) -> int:
        return self.ids[rng.randrange(len(self.ids))]


def generate(shape_name: str, n_ops: int, seed: int, *, resting: int | None = None, stp_free: bool = False) -> Workload:
    """Build the workload: replay the prefill and every generated op through a model book."""
    shape = SHAPES[shape_name]
    resting = shape.resting if resting is None else resting
    rng = random.Random(f"{seed}/ops/{shape.name}/{stp_free}")
    makers, takers = _makers_and_takers(stp_free)
    model = new_book()
    live = _LiveIds()
    member_of: dict[int, str] = {}
    for order_id, prefill_cmd in prefill_commands(shape.name, resting, seed, stp_free):
        model.submit(order_id, prefill_cmd)
        live.add(order_id)
        member_of[order_id] = prefill_cmd.member_id

    stats = dict.fromkeys(
        ("passive", "cancels", "marketable", "market_orders", "fills", "self_trades", "stale_cancels"), 0
    )
    ops: list[tuple[int, SubmitOrder | CancelOrder]] = []
    next_id = resting + 1
    lower, upper = model.lower_fen, model.upper_fen
    for _ in range(n_ops):
        r = rng.random()
        best_bid, best_ask = model.best_bid(), model.best_ask()
        if r < PASSIVE_SHARE:
            kind = "passive"
        elif r < PASSIVE_SHARE + CANCEL_SHARE:
            kind = "cancel" if len(live) else "passive"
        else:
            kind = "marketable" if best_bid or best_ask else "passive"

        if kind == "cancel":
            target = live.choice(rng)
            cmd: SubmitOrder | CancelOrder = CancelOrder(member_of[target], SYMBOL, target)
            stats["cancels"] += 1
        elif kind == "marketable":
            buy = rng.random() < 0.5
            if buy and best_ask is None or not buy and best_bid is None:
                buy = not buy  # only one side has orders: take from that one
            scale = min(8.0, max(0.125, (len(live) / resting) ** 4))
            qty = rng.randint(1, max(1, int(2 * _TAKE_ORDERS * _MEAN_PASSIVE_QTY * scale)))
            member = takers[rng.randrange(len(takers))]
            side = Side.BUY if buy else Side.SELL
            if rng.random() < MARKET_ORDER_SHARE:
                cmd = SubmitOrder(member, SYMBOL, side, qty, None, OrderType.MARKET, TimeInForce.IOC)
                stats["market_orders"] += 1
            else:
                through = rng.randint(0, MAX_THROUGH_TICKS)
                if buy:
                    assert best_ask is not None  # ``buy`` was turned to the side that has orders
                    price = best_ask[0] + through
                else:
                    assert best_bid is not None
                    price = best_bid[0] - through
                price = min(max(price, lower), upper)
                cmd = SubmitOrder(member, SYMBOL, side, qty, price, OrderType.LIMIT, TimeInForce.IOC)
            stats["marketable"] += 1
        else:
            buy = rng.random() < 0.5
            distance = _distance(rng, shape)
            if buy:  # strictly below the best ask, so it never crosses
                touch = best_ask[0] if best_ask else (best_bid[0] + 1 if best_bid else MID_FEN)
                price = max(touch - 1 - distance, lower)
            else:
                touch = best_bid[0] if best_bid else (best_ask[0] - 1 if best_ask else MID_FEN)
                price = min(touch + 1 + distance, upper)
            member = makers[rng.randrange(len(makers))]
            side = Side.BUY if buy else Side.SELL
            cmd = SubmitOrder(member, SYMBOL, side, rng.randint(1, PASSIVE_QTY_MAX), price)
            stats["passive"] += 1

        if isinstance(cmd, CancelOrder):
            ops.append((0, cmd))
            events = model.cancel(cmd)
        else:
            order_id = next_id
            next_id += 1
            ops.append((order_id, cmd))
            events = model.submit(order_id, cmd)
            if model.order(cmd.member_id, order_id) is not None:
                live.add(order_id)
                member_of[order_id] = cmd.member_id
        for event in events:
            if isinstance(event, OrderFilled):
                stats["fills"] += 1
                if event.aggressor == Side.BUY:
                    if not event.sell_leaves_t:
                        live.discard(event.sell_order_id)
                elif not event.buy_leaves_t:
                    live.discard(event.buy_order_id)
            elif isinstance(event, OrderCancelled):
                live.discard(event.order_id)
                if event.reason == CancelReason.SELF_TRADE:
                    stats["self_trades"] += 1
            elif isinstance(event, CancelRejected):
                stats["stale_cancels"] += 1

    bids, asks = model.depth()
    stats["resting_at_end"] = model.open_order_count()
    stats["bid_levels_at_end"] = len(bids)
    stats["ask_levels_at_end"] = len(asks)
    return Workload(shape, seed, resting, ops, stp_free, stats)


def describe(workload: Workload) -> str:
    s = workload.stats
    n = len(workload.ops)
    return (
        f"{workload.shape.name}{' (self-trade free)' if workload.stp_free else ''}: "
        f"{workload.resting:,} resting after prefill, {n:,} ops = "
        f"{s['passive'] / n:.1%} passive, {s['cancels'] / n:.1%} cancels, {s['marketable'] / n:.1%} marketable "
        f"({s['market_orders']:,} market orders); {s['fills']:,} fills, {s['self_trades']:,} self-trades, "
        f"{s['stale_cancels']:,} stale cancels; at the end {s['resting_at_end']:,} resting on "
        f"{s['bid_levels_at_end']:,} bid / {s['ask_levels_at_end']:,} ask levels"
    )
