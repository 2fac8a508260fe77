"""Orders and the L2 book as the gateway sees them, rebuilt from the engine's events alone.

``OrderTracker`` turns each command's events (what ``Engine.execute`` returns) into the
private messages members receive, and answers order status, duplicate client order ids and
the resync after a logon. ``Depth`` keeps the public L2 book (resting quantity and order count
per price level) from the same events, netted per command. Neither looks inside the engine's
books: what they know is what the events said, so the gateway stays on the engine's public
side of the house, and the differential test against the real book proves the two agree.

Decisions:

* **Execution reports in FIX terms.** A fill gives one report to each side's member, about its
  own order only (no counterparty). ``qty`` is the order quantity: after an amend it becomes
  the filled quantity plus the new open quantity, so ``leaves == qty - cum`` while open. A
  market order reports ``price`` null (the engine's accepted price is only the band limit it
  may trade to).
* **A rejected order uses up its client order id**, as an accepted one does: the id is
  unique per member per trading day whatever became of the order, and its status query
  returns the reject. The engine's ``OrderRejected`` carries no order id and no order details;
  :meth:`OrderTracker.apply` takes the command that caused the events to fill them in (side,
  type, time in force, price, quantity). Without it (a replay) the report gives what the
  event says and nulls for the rest.
* **A client order id is taken by the first order that used it**; a duplicate that reaches
  the engine anyway (the session refuses them first) does not displace it.
* **The trading day.** Finished orders (filled, cancelled, expired, rejected) stay for status
  queries until the next ``DayStarted``; then they are dropped and the client order ids start
  afresh, except that an order still open (GTC) keeps its id reserved while it lives, so a
  cancel by client order id is never ambiguous.
* **Cancel and amend rejects** name the client order id only when the order is the member's
  own: a reject for another member's order id says nothing about that order.
* **L2 is netted per command.** ``Depth.apply`` works through one command's events in order:
  an accepted order is added at its price, fills and cancels take it away, an amend moves
  it. IOC, FOK and market orders are added too and leave again within the same events, so the
  changes are compared per level before and after the whole list: market data never shows a
  transient level. A market order is added at its band limit; any fill is at the resting
  order's price, and the aggressor's own fills reduce only its not-yet-rested quantity.
* **Completeness.** Both classes must see every event since the engine was empty (live, or
  by replaying the journal from its start); an event about an order they never saw accepted
  is a broken invariant and asserts. The core's snapshots do not keep client order ids, so
  restarting the gateway from an engine snapshot needs the tracker's own persisted state
  (not done here).
"""

from __future__ import annotations

import bisect
from typing import Iterable, NamedTuple

import msgspec
from msgspec import UNSET

from exchange.model.commands import SubmitOrder
from exchange.model.enums import CancelReason, OrderType, Side, TimeInForce
from exchange.model.events import (
    AmendRejected,
    CancelRejected,
    DayStarted,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from exchange.model.rejects import RejectReason
from exchange.gateway.wire import (
    CANCEL_REASON_NAMES,
    ORDER_TYPE_NAMES,
    SIDE_NAMES,
    TIF_NAMES,
    AmendRequest,
    CancelReject,
    CancelRequest,
    ExecType,
    ExecutionReport,
    OrderStatusRequest,
    OrdStatus,
    PrivateMessage,
    format_price,
)

OPEN_STATUSES = ("new", "partially_filled")


class TrackedOrder(msgspec.Struct):
    """One order as its member sees it. ``order_id`` is None for an order rejected at entry;
    ``side``, ``order_type`` and ``tif`` are None only for such a reject seen without its
    command. ``price_fen`` is None for market orders."""

    member_id: str
    client_order_id: str
    instrument: str
    side: Side | None
    order_type: OrderType | None
    tif: TimeInForce | None
    price_fen: int | None
    qty_t: int
    order_id: int | None = None
    cum_qty_t: int = 0
    leaves_t: int = 0
    status: OrdStatus = "new"
    reject_reason: RejectReason | None = None
    cancel_reason: CancelReason | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


def execution_report(order: TrackedOrder, exec_type: ExecType, fill: OrderFilled | None = None) -> ExecutionReport:
    """The order's current state as a report; ``fill`` adds the last execution."""
    reject = order.reject_reason
    return ExecutionReport(
        exec_type, order.status, order.order_id, order.client_order_id, order.instrument,
        SIDE_NAMES.get(order.side), ORDER_TYPE_NAMES.get(order.order_type), TIF_NAMES.get(order.tif),  # type: ignore[arg-type]
        None if order.price_fen is None else format_price(order.price_fen),
        order.qty_t, order.cum_qty_t, order.leaves_t,
        last_px=None if fill is None else format_price(fill.price_fen),
        last_qty=None if fill is None else fill.qty_t,
        trade_id=None if fill is None else fill.trade_id,
        reject_code=None if reject is None else int(reject),
        reject_reason=None if reject is None else reject.text,
        cancel_reason=None if order.cancel_reason is None else CANCEL_REASON_NAMES[order.cancel_reason],
    )


def unknown_client_order_reject(message: CancelRequest | AmendRequest) -> CancelReject:
    """The answer to a cancel or amend whose client order id resolves to no order."""
    response_to = "cancel" if isinstance(message, CancelRequest) else "amend"
    reason = RejectReason.UNKNOWN_ORDER
    return CancelReject(response_to, None, message.client_order_id or None, message.instrument, int(reason), reason.text)  # type: ignore[arg-type]


Outbox = list[tuple[str, PrivateMessage]]


class OrderTracker:
    """Every order of the trading day (and open GTC orders), per member, from events."""

    def __init__(self) -> None:
        self.trading_day = ""
        self._orders: dict[int, TrackedOrder] = {}  # by exchange id: open, and finished today
        self._open: dict[str, dict[int, TrackedOrder]] = {}  # member -> open orders by id
        self._client_ids: dict[str, dict[str, TrackedOrder]] = {}  # member -> client order id -> order

    def apply(self, events: Iterable[object], command: object = None) -> Outbox:
        """Learn from one command's events; return (member id, message) for each report."""
        out: Outbox = []
        for event in events:
            match event:
                case OrderAccepted():
                    self._accepted(event, out)
                case OrderFilled():
                    self._filled(event, out)
                case OrderCancelled():
                    self._finished(event.order_id, event.member_id, event.qty_t, "canceled", out, event.reason)
                case OrderExpired():
                    self._finished(event.order_id, event.member_id, event.qty_t, "expired", out)
                case OrderAmended():
                    self._amended(event, out)
                case OrderRejected():
                    self._rejected(event, command, out)
                case CancelRejected():
                    out.append((event.member_id, self._cancel_reject("cancel", event)))
                case AmendRejected():
                    out.append((event.member_id, self._cancel_reject("amend", event)))
                case DayStarted():
                    self._start_day(event.trading_day)
        return out

    # -- events ------------------------------------------------------------------------------

    def _accepted(self, event: OrderAccepted, out: Outbox) -> None:
        assert event.order_id not in self._orders, f"order {event.order_id} accepted twice"
        price = event.price_fen if event.order_type == OrderType.LIMIT else None
        order = TrackedOrder(
            event.member_id, event.client_order_id, event.instrument, event.side, event.order_type, event.tif,
            price, event.qty_t, event.order_id, leaves_t=event.qty_t,
        )
        self._orders[event.order_id] = order
        self._open.setdefault(event.member_id, {})[event.order_id] = order
        self._claim(order)
        out.append((event.member_id, execution_report(order, "new")))

    def _rejected(self, event: OrderRejected, command: object, out: Outbox) -> None:
        cmd = command if isinstance(command, SubmitOrder) and command.member_id == event.member_id \
            and command.client_order_id == event.client_order_id else None
        order = TrackedOrder(
            event.member_id, event.client_order_id, event.instrument,
            cmd.side if cmd else None, cmd.order_type if cmd else None, cmd.tif if cmd else None,
            cmd.price_fen if cmd else None, cmd.qty_t if cmd else 0,
            status="rejected", reject_reason=event.reason,
        )
        self._claim(order)
        out.append((event.member_id, execution_report(order, "rejected")))

    def _filled(self, event: OrderFilled, out: Outbox) -> None:
        for order_id, member_id, leaves in (
            (event.buy_order_id, event.buy_member_id, event.buy_leaves_t),
            (event.sell_order_id, event.sell_member_id, event.sell_leaves_t),
        ):
            order = self._orders[order_id]
            assert order.member_id == member_id and order.leaves_t - event.qty_t == leaves, (order, event)
            order.cum_qty_t += event.qty_t
            order.leaves_t = leaves
            order.status = "partially_filled" if leaves else "filled"
            if not leaves:
                self._close(order)
            out.append((member_id, execution_report(order, "trade", event)))

    def _finished(
        self, order_id: int, member_id: str, qty_t: int, status: OrdStatus, out: Outbox,
        reason: CancelReason | None = None,
    ) -> None:
        order = self._orders[order_id]
        assert order.member_id == member_id and order.leaves_t == qty_t and order.is_open, (order, qty_t)
        order.leaves_t = 0
        order.status = status
        order.cancel_reason = reason
        self._close(order)
        out.append((member_id, execution_report(order, "canceled" if status == "canceled" else "expired")))

    def _amended(self, event: OrderAmended, out: Outbox) -> None:
        order = self._orders[event.order_id]
        assert order.member_id == event.member_id and order.is_open, (order, event)
        order.price_fen = event.price_fen
        order.leaves_t = event.qty_t
        order.qty_t = order.cum_qty_t + event.qty_t
        out.append((event.member_id, execution_report(order, "replaced")))

    def _cancel_reject(self, response_to: str, event: CancelRejected | AmendRejected) -> CancelReject:
        own = self.order(event.member_id, event.order_id)
        return CancelReject(
            response_to, event.order_id, own.client_order_id if own else None,  # type: ignore[arg-type]
            event.instrument, int(event.reason), event.reason.text,
        )

    def _start_day(self, trading_day: str) -> None:
        """Drop yesterday's finished orders and client order ids; open orders carry over."""
        if trading_day == self.trading_day:
            return  # one DayStarted per instrument: the first one rolls the day
        self.trading_day = trading_day
        self._orders = {order_id: order for order_id, order in self._orders.items() if order.is_open}
        self._client_ids = {}
        for order in self._orders.values():
            self._claim(order)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _claim(self, order: TrackedOrder) -> None:
        if order.client_order_id:
            self._client_ids.setdefault(order.member_id, {}).setdefault(order.client_order_id, order)

    def _close(self, order: TrackedOrder) -> None:
        assert order.order_id is not None
        orders = self._open[order.member_id]
        del orders[order.order_id]
        if not orders:
            del self._open[order.member_id]

    # -- queries -------------------------------------------------------------------------------

    def order(self, member_id: str, order_id: int) -> TrackedOrder | None:
        """The member's order by exchange id; another member's order is not visible."""
        order = self._orders.get(order_id)
        return order if order is not None and order.member_id == member_id else None

    def lookup_client_order(self, member_id: str, client_order_id: str) -> TrackedOrder | None:
        """The order that used this client order id today (or is still open), if any."""
        return self._client_ids.get(member_id, {}).get(client_order_id)

    def open_orders(self, member_id: str) -> list[TrackedOrder]:
        """The member's open orders in ascending order id (for the resync after a logon)."""
        return [order for _, order in sorted(self._open.get(member_id, {}).items())]

    def resolve(self, member_id: str, message: CancelRequest | AmendRequest | OrderStatusRequest) -> int | None:
        """The exchange id a cancel or amend targets: its own, or its client order id's.

        A given ``order_id`` passes as it is (the engine answers an unknown one); a client
        order id that names no order of the member, or a rejected one, gives None."""
        if message.order_id is not UNSET:
            return message.order_id
        order = self.lookup_client_order(member_id, message.client_order_id)  # type: ignore[arg-type]
        return None if order is None else order.order_id

    def status(self, member_id: str, message: OrderStatusRequest) -> ExecutionReport | None:
        """An ``order_status`` report, or None when the member has no such order."""
        if message.order_id is not UNSET:
            order = self.order(member_id, message.order_id)
        else:
            order = self.lookup_client_order(member_id, message.client_order_id)  # type: ignore[arg-type]
        return None if order is None else execution_report(order, "order_status")


# -- L2 depth ------------------------------------------------------------------------------------

DepthLevel = tuple[int, int, int]  # (price in fen, quantity in tonnes, number of orders)


class LevelChanges(NamedTuple):
    """One instrument's changed levels after a command, best first; (price, 0, 0) = gone."""

    bids: list[DepthLevel]
    asks: list[DepthLevel]


class _Resting(msgspec.Struct, gc=False):
    instrument: str
    side: Side
    price_fen: int
    qty_t: int


class _Side:
    """One side of one instrument: price -> [quantity, orders], and the prices in order."""

    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.levels: dict[int, list[int]] = {}
        self.prices: list[int] = []  # ascending

    def best_first(self, side: Side, limit: int | None = None) -> list[DepthLevel]:
        prices = self.prices[::-1] if side == Side.BUY else self.prices
        chosen = prices if limit is None else prices[:limit]
        return [(price, *self.levels[price]) for price in chosen]  # type: ignore[misc]


class Depth:
    """The L2 book of every instrument, from events, with per-command net changes."""

    def __init__(self) -> None:
        self._resting: dict[int, _Resting] = {}
        self._sides: dict[tuple[str, Side], _Side] = {}
        self._before: dict[tuple[str, Side, int], tuple[int, int]] = {}  # this command's touched levels

    def apply(self, events: Iterable[object]) -> dict[str, LevelChanges]:
        """Work through one command's events; return the levels that changed, per instrument."""
        for event in events:
            match event:
                case OrderAccepted():
                    self._add(event.order_id, _Resting(event.instrument, event.side, event.price_fen, event.qty_t))
                case OrderFilled():
                    self._fill(event.buy_order_id, event.qty_t, event.buy_leaves_t)
                    self._fill(event.sell_order_id, event.qty_t, event.sell_leaves_t)
                case OrderCancelled() | OrderExpired():
                    self._remove(event.order_id)
                case OrderAmended():
                    old = self._remove(event.order_id)
                    self._add(event.order_id, _Resting(old.instrument, old.side, event.price_fen, event.qty_t))
        return self._net_changes()

    def levels(self, instrument: str, limit: int | None = None) -> tuple[list[DepthLevel], list[DepthLevel]]:
        """(bids best first, asks best first), as ``OrderBook.depth`` gives them."""
        return (
            self._side(instrument, Side.BUY).best_first(Side.BUY, limit),
            self._side(instrument, Side.SELL).best_first(Side.SELL, limit),
        )

    def resting_qty(self, order_id: int) -> int:
        """An order's resting quantity as the depth counts it (0 when not resting)."""
        resting = self._resting.get(order_id)
        return 0 if resting is None else resting.qty_t

    # -- changes -------------------------------------------------------------------------------

    def _side(self, instrument: str, side: Side) -> _Side:
        book = self._sides.get((instrument, side))
        if book is None:
            book = self._sides[(instrument, side)] = _Side()
        return book

    def _level(self, resting: _Resting) -> list[int]:
        """The order's level, remembering how it looked before this command touched it."""
        book = self._side(resting.instrument, resting.side)
        price = resting.price_fen
        level = book.levels.get(price)
        key = (resting.instrument, resting.side, price)
        if key not in self._before:
            self._before[key] = (level[0], level[1]) if level else (0, 0)
        if level is None:
            level = book.levels[price] = [0, 0]
            bisect.insort(book.prices, price)
        return level

    def _drop_if_empty(self, resting: _Resting, level: list[int]) -> None:
        if level[1]:
            assert level[0] > 0, level
            return
        assert level[0] == 0, level
        book = self._side(resting.instrument, resting.side)
        del book.levels[resting.price_fen]
        del book.prices[bisect.bisect_left(book.prices, resting.price_fen)]

    def _add(self, order_id: int, resting: _Resting) -> None:
        assert order_id not in self._resting and resting.qty_t > 0, (order_id, resting)
        level = self._level(resting)
        level[0] += resting.qty_t
        level[1] += 1
        self._resting[order_id] = resting

    def _fill(self, order_id: int, qty_t: int, leaves_t: int) -> None:
        resting = self._resting[order_id]
        assert resting.qty_t - qty_t == leaves_t, (order_id, resting, qty_t, leaves_t)
        if not leaves_t:
            self._remove(order_id)
            return
        level = self._level(resting)
        level[0] -= qty_t
        resting.qty_t = leaves_t

    def _remove(self, order_id: int) -> _Resting:
        resting = self._resting.pop(order_id)
        level = self._level(resting)
        level[0] -= resting.qty_t
        level[1] -= 1
        self._drop_if_empty(resting, level)
        return resting

    def _net_changes(self) -> dict[str, LevelChanges]:
        changes: dict[str, LevelChanges] = {}
        for (instrument, side, price), before in self._before.items():
            level = self._sides[(instrument, side)].levels.get(price)
            after = (level[0], level[1]) if level else (0, 0)
            if after == before:
                continue
            entry = changes.get(instrument)
            if entry is None:
                entry = changes[instrument] = LevelChanges([], [])
            (entry.bids if side == Side.BUY else entry.asks).append((price, *after))  # type: ignore[arg-type]
        self._before = {}
        for entry in changes.values():
            entry.bids.sort(reverse=True)
            entry.asks.sort()
        return changes
