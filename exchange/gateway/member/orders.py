"""Orders as the gateway sees them: a snapshotted projection of the engine's stream.

``OrderTracker`` follows the one event stream (:class:`~exchange.model.stream.Applied`
records, handed over by the engine once they are durable), turns each record's events into
the private messages members receive (an outbox the hub drains after its group commit), and
answers order status, duplicate client order ids and the resync after a logon. It does not
look inside the engine's books: what it knows is what the events said, so the gateway stays
on the engine's public side of the house, and the differential test against the real book
proves the two agree.

Decisions:

* **Execution reports in FIX terms.** A fill gives one report to each side's member, about its
  own order only (no counterparty). ``qty`` is the order quantity: after an amend it becomes
  the filled quantity plus the new open quantity, so ``leaves == qty - cum`` while open. A
  market order reports ``price`` null (the engine's accepted price is only the band limit it
  may trade to).
* **A rejected order uses up its client order id**, as an accepted one does: the id is
  unique per member per trading day whatever became of the order, and its status query
  returns the reject. ``OrderRejected`` carries the refused order's fields (side, type, time
  in force, price, quantity); only a bare reject without them (``side`` None) falls back to
  the record's command, when that command is the order; without either the report gives what
  the event says and nulls for the rest.
* **A client order id is taken by the first order that used it**; a duplicate that reaches
  the engine anyway (the session refuses them first) does not displace it.
* **The trading day.** Finished orders (filled, cancelled, expired, rejected) stay for status
  queries until the next ``DayStarted``; then they are dropped and the client order ids start
  afresh, except that an order still open (GTC) keeps its id reserved while it lives, so a
  cancel by client order id is never ambiguous.
* **Cancel and amend rejects** name the client order id only when the order is the member's
  own: a reject for another member's order id says nothing about that order.
* **The outbox.** Messages are kept only once the hub opened the outbox
  (:meth:`OrderTracker.open_outbox`): the records replayed at start-up build state, not
  messages nobody would read. Each entry is ``(seq, member id, message)``, in stream order.
* **Snapshots.** The tracker's whole state (the day, every order it keeps and who holds each
  client order id) travels in the engine's snapshots as msgspec bytes, sorted so that equal
  states give equal bytes; a restart restores it and replays only the journal's tail. Every
  event must follow from what the tracker already holds (an event about an order it never saw
  accepted is a broken invariant and asserts).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from msgspec import UNSET

from exchange.model.commands import SubmitOrder
from exchange.model.enums import CancelReason, OrderType, Side, TimeInForce
from exchange.model.events import (
    AmendRejected,
    CancelRejected,
    CommandRejected,
    DayStarted,
    DayVoided,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from exchange.model.rejects import RejectReason
from exchange.model.stream import Applied
from exchange.gateway.member.wire import (
    CANCEL_REASON_NAMES,
    ORDER_TYPE_NAMES,
    SIDE_NAMES,
    TIF_NAMES,
    AmendRequest,
    CancelReject,
    CancelRequest,
    ExecType,
    ExecutionReport,
    MassCancelReport,
    OrderStatusRequest,
    OrdStatus,
    PrivateMessage,
    format_price,
)

OPEN_STATUSES = ("new", "partially_filled")


class TrackedOrder(msgspec.Struct, array_like=True, gc=False):
    """One order as its member sees it. ``order_id`` is None for an order rejected at entry;
    ``side``, ``order_type`` and ``tif`` are None only for such a reject seen without its
    command. ``price_fen`` is None for market orders.

    The tracker keeps every order of the day, so the struct is an array in the snapshots (a
    map repeated every field name: 182 bytes an order instead of about 50) and untracked by
    the garbage collector (it refers to no container, so it can take part in no cycle)."""

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


def mass_cancel_report(instrument: str | None, events: Iterable[object]) -> MassCancelReport:
    """The answer to a member's ``mass_cancel`` from the events its command caused: how many
    orders it cancelled (0: nothing to cancel), or the exchange's reject of the command."""
    cancelled = 0
    for event in events:
        if isinstance(event, OrderCancelled):
            cancelled += 1
        elif isinstance(event, CommandRejected):
            return unlisted_mass_cancel_report(instrument, event.reason)
    return MassCancelReport(instrument, cancelled)


def unlisted_mass_cancel_report(instrument: str | None, reason: RejectReason = RejectReason.UNKNOWN_INSTRUMENT) -> MassCancelReport:
    """A ``mass_cancel`` refused: nothing cancelled, the reject's code and text."""
    return MassCancelReport(instrument, 0, int(reason), reason.text)


def unknown_client_order_reject(message: CancelRequest | AmendRequest) -> CancelReject:
    """The answer to a cancel or amend whose client order id resolves to no order."""
    response_to = "cancel" if isinstance(message, CancelRequest) else "amend"
    reason = RejectReason.UNKNOWN_ORDER
    return CancelReject(response_to, None, message.client_order_id or None, message.instrument, int(reason), reason.text)  # type: ignore[arg-type]


Outbox = list[tuple[int, str, PrivateMessage]]  # (seq, member id, message)
_Out = list[tuple[str, PrivateMessage]]  # one record's messages


class _Claim(msgspec.Struct, array_like=True, frozen=True):
    member_id: str
    client_order_id: str
    order_id: int


class TrackerState(msgspec.Struct, array_like=True):
    """What a snapshot holds of the tracker: the orders it keeps (by exchange id), the
    client order ids claimed by those orders, and the rejected orders (which only claim)."""

    trading_day: str
    orders: list[TrackedOrder]
    claims: list[_Claim]
    rejected: list[TrackedOrder]


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(TrackerState)


class OrderTracker:
    """Every order of the trading day (and open GTC orders), per member, from the stream."""

    name = "gateway.orders"

    def __init__(self) -> None:
        self.trading_day = ""
        self.last_seq = 0
        self.restored_seq = 0  # the snapshot's position this tracker was restored at (0: none)
        self.records_applied = 0  # records applied since construction (replayed and live)
        self.outbox: Outbox | None = None
        self._orders: dict[int, TrackedOrder] = {}  # by exchange id: open, and finished today
        self._open: dict[str, dict[int, TrackedOrder]] = {}  # member -> open orders by id
        self._client_ids: dict[str, dict[str, TrackedOrder]] = {}  # member -> client order id -> order

    # -- the projection ----------------------------------------------------------------------

    def apply(self, applied: Applied) -> None:
        """Learn from one durable record; queue a message per report (once the outbox is open)."""
        assert applied.seq > self.last_seq, (applied.seq, self.last_seq)
        self.last_seq = applied.seq
        self.records_applied += 1
        out: list[tuple[str, PrivateMessage]] = []
        for event in applied.events:
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
                    self._rejected(event, applied.command, out)
                case CancelRejected():
                    out.append((event.member_id, self._cancel_reject("cancel", event)))
                case AmendRejected():
                    out.append((event.member_id, self._cancel_reject("amend", event)))
                case DayStarted():
                    self._start_day(event.trading_day)
                case DayVoided():
                    self.trading_day = event.restored_day  # the next start rolls the voided day's orders away
        if self.outbox is not None:
            seq = applied.seq
            self.outbox.extend((seq, member_id, message) for member_id, message in out)

    def flush(self) -> None:
        """In memory: nothing to write (the engine's snapshots carry the state)."""

    def open_outbox(self) -> None:
        """Start keeping messages for the hub (live from here on)."""
        if self.outbox is None:
            self.outbox = []

    def drain(self) -> Outbox:
        """The messages queued since the last drain, in stream order."""
        out = self.outbox or []
        if self.outbox is not None:
            self.outbox = []
        return out

    def snapshot_state(self) -> bytes:
        claims, rejected = [], []
        for member_id in sorted(self._client_ids):
            by_id = self._client_ids[member_id]
            for client_order_id in sorted(by_id):
                order = by_id[client_order_id]
                if order.order_id is None:
                    rejected.append(order)
                else:
                    claims.append(_Claim(member_id, client_order_id, order.order_id))
        orders = [order for _, order in sorted(self._orders.items())]
        return _state_encoder.encode(TrackerState(self.trading_day, orders, claims, rejected))

    def restore_state(self, data: bytes, seq: int) -> None:
        assert self.last_seq == 0 and not self._orders and not self._client_ids, "restore needs a fresh tracker"
        state = _state_decoder.decode(data)
        self.trading_day = state.trading_day
        for order in state.orders:
            assert order.order_id is not None
            self._orders[order.order_id] = order
            if order.is_open:
                self._open.setdefault(order.member_id, {})[order.order_id] = order
        for claim in state.claims:
            self._client_ids.setdefault(claim.member_id, {})[claim.client_order_id] = self._orders[claim.order_id]
        for order in state.rejected:
            self._client_ids.setdefault(order.member_id, {})[order.client_order_id] = order
        self.last_seq = self.restored_seq = seq

    # -- events ------------------------------------------------------------------------------

    def _accepted(self, event: OrderAccepted, out: _Out) -> None:
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

    def _rejected(self, event: OrderRejected, command: object, out: _Out) -> None:
        source: OrderRejected | SubmitOrder = event
        if event.side is None and isinstance(command, SubmitOrder) and command.member_id == event.member_id \
                and command.client_order_id == event.client_order_id:
            source = command  # a bare reject: the order's fields are the command's
        order = TrackedOrder(
            event.member_id, event.client_order_id, event.instrument,
            source.side, source.order_type, source.tif, source.price_fen, source.qty_t,
            status="rejected", reject_reason=event.reason,
        )
        self._claim(order)
        out.append((event.member_id, execution_report(order, "rejected")))

    def _filled(self, event: OrderFilled, out: _Out) -> None:
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
        self, order_id: int, member_id: str, qty_t: int, status: OrdStatus, out: _Out,
        reason: CancelReason | None = None,
    ) -> None:
        order = self._orders[order_id]
        assert order.member_id == member_id and order.leaves_t == qty_t and order.is_open, (order, qty_t)
        order.leaves_t = 0
        order.status = status
        order.cancel_reason = reason
        self._close(order)
        out.append((member_id, execution_report(order, "canceled" if status == "canceled" else "expired")))

    def _amended(self, event: OrderAmended, out: _Out) -> None:
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
