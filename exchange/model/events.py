"""Events: what the core did. Past-tense names, frozen Structs, tagged for one decoder.

Events carry no sequence number or time: the engine hands them out stamped with the
command's sequence number and timestamp (see ``exchange.engine``).
"""

from __future__ import annotations

import msgspec

from exchange.model.enums import (
    CancelReason,
    CommandName,
    MemberKind,
    MemberStatus,
    OrderType,
    Side,
    TimeInForce,
    TradingPhase,
)
from exchange.model.rejects import RejectReason


class OrderAccepted(msgspec.Struct, frozen=True, tag=True):
    """A new order passed validation. For a market order ``price_fen`` is the band limit it
    may execute up to (buy) or down to (sell)."""

    order_id: int
    member_id: str
    instrument: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price_fen: int
    qty_t: int
    client_order_id: str


class OrderRejected(msgspec.Struct, frozen=True, tag=True):
    """A new order refused. Self-sufficient: it carries the refused order's own fields, so a
    consumer (the gateway's order tracker, a drop copy) can report the reject from the event
    alone. The fields after ``reason`` have defaults so that a bare 4-field construction (the
    book's own) stays valid; the core fills them from the ``SubmitOrder``. ``price_fen`` is
    None for a market order, as submitted."""

    member_id: str
    instrument: str
    client_order_id: str
    reason: RejectReason
    side: Side | None = None
    order_type: OrderType | None = None
    tif: TimeInForce | None = None
    price_fen: int | None = None
    qty_t: int = 0


class OrderFilled(msgspec.Struct, frozen=True, tag=True):
    """One execution, both sides. A side whose ``leaves`` is 0 is filled, otherwise partially
    filled. The price is always the resting order's."""

    trade_id: int
    instrument: str
    price_fen: int
    qty_t: int
    aggressor: Side
    buy_order_id: int
    buy_member_id: str
    buy_leaves_t: int
    sell_order_id: int
    sell_member_id: str
    sell_leaves_t: int


class OrderCancelled(msgspec.Struct, frozen=True, tag=True):
    """``qty_t`` is the open quantity that was cancelled."""

    order_id: int
    member_id: str
    instrument: str
    qty_t: int
    reason: CancelReason


class OrderAmended(msgspec.Struct, frozen=True, tag=True):
    """``qty_t`` is the new open quantity; ``priority_kept`` is false when it went to the back."""

    order_id: int
    member_id: str
    instrument: str
    price_fen: int
    qty_t: int
    priority_kept: bool


class OrderExpired(msgspec.Struct, frozen=True, tag=True):
    """A day order still open at the end of the trading day."""

    order_id: int
    member_id: str
    instrument: str
    qty_t: int


class CancelRejected(msgspec.Struct, frozen=True, tag=True):
    member_id: str
    instrument: str
    order_id: int
    reason: RejectReason


class AmendRejected(msgspec.Struct, frozen=True, tag=True):
    member_id: str
    instrument: str
    order_id: int
    reason: RejectReason


class CommandRejected(msgspec.Struct, frozen=True, tag=True):
    """A command that is not about one order (day, member, funds, controls) refused.
    ``subject`` names what it was about (a member or instrument), when anything."""

    command: CommandName
    reason: RejectReason
    subject: str = ""


class DayStarted(msgspec.Struct, frozen=True, tag=True):
    """One per instrument at the open: the day's band from the previous close."""

    trading_day: str
    instrument: str
    prev_close_fen: int
    lower_fen: int
    upper_fen: int


class DayClosed(msgspec.Struct, frozen=True, tag=True):
    """One per instrument at the close. ``open``/``high``/``low`` are ``None`` on a day without
    trades; ``close_fen`` is then the previous close. The next band follows from the close."""

    trading_day: str
    instrument: str
    open_fen: int | None
    high_fen: int | None
    low_fen: int | None
    close_fen: int
    volume_t: int
    turnover_fen: int
    trade_count: int
    next_lower_fen: int
    next_upper_fen: int


class DayVoided(msgspec.Struct, frozen=True, tag=True):
    """The open day was voided (``VoidDay``): it comes after the cancels of its orders. The
    last trading day is ``restored_day`` again ("" when the voided day was the first)."""

    trading_day: str
    restored_day: str
    cancelled_orders: int


class MemberRegistered(msgspec.Struct, frozen=True, tag=True):
    member_id: str
    kind: MemberKind
    annual_allocation_t: int
    linked_group: str
    position_limit_t: int


class MemberStatusChanged(msgspec.Struct, frozen=True, tag=True):
    """``killed`` is true while the kill switch refuses the member's new orders."""

    member_id: str
    status: MemberStatus
    killed: bool


# ``omit_defaults``: an event without a reference (journals from before references) keeps
# the bytes it always had, so the event stream of an old journal does not change.
class FundsDeposited(msgspec.Struct, frozen=True, tag=True, omit_defaults=True):
    member_id: str
    amount_fen: int
    available_fen: int
    reference: str = ""


class FundsWithdrawn(msgspec.Struct, frozen=True, tag=True, omit_defaults=True):
    member_id: str
    amount_fen: int
    available_fen: int
    reference: str = ""


class FundsRetried(msgspec.Struct, frozen=True, tag=True):
    """A deposit or withdrawal whose reference the member already used for the same movement:
    nothing moved this time. It repeats the first outcome: ``available_fen`` is what the first
    left available (not what is available now). Projections that move money ignore it."""

    command: CommandName
    member_id: str
    reference: str
    amount_fen: int
    available_fen: int

    def first(self) -> FundsDeposited | FundsWithdrawn:
        """The event the first movement under this reference reported."""
        kind = FundsDeposited if self.command == CommandName.DEPOSIT else FundsWithdrawn
        return kind(self.member_id, self.amount_fen, self.available_fen, self.reference)


class HoldingLoaded(msgspec.Struct, frozen=True, tag=True):
    """The settled holding from the registry; ``change_t`` is what it changed the exchange's
    view by (an explicit adjustment, for the conservation accounts)."""

    member_id: str
    instrument: str
    qty_t: int
    change_t: int


class InstrumentStatusChanged(msgspec.Struct, frozen=True, tag=True):
    instrument: str
    halted: bool


class MarketStatusChanged(msgspec.Struct, frozen=True, tag=True):
    closed: bool


class TradingPhaseChanged(msgspec.Struct, frozen=True, tag=True):
    phase: TradingPhase


class RiskLimitsChanged(msgspec.Struct, frozen=True, tag=True):
    """The limits now in force for a member (or, ``member_id`` empty, the market default)."""

    member_id: str
    max_order_value_fen: int
    orders_per_second: int
    order_burst: int
    max_open_orders: int


class InstrumentLimitsChanged(msgspec.Struct, frozen=True, tag=True):
    instrument: str
    band_bps: int
    max_order_qty_t: int
    lower_fen: int
    upper_fen: int


class SessionGuardSet(msgspec.Struct, frozen=True, tag=True):
    """What now protects a member's resting orders when its sessions are gone (see
    ``SetSessionGuard``): the gateway's guard projection keeps the latest per member."""

    member_id: str
    cancel_on_disconnect: bool
    dead_man_ms: int


class LargeHolderThresholdCrossed(msgspec.Struct, frozen=True, tag=True):
    """A member's position reached the reporting threshold (by default 80 % of its limit).
    Reported once each time it crosses upwards; it does not reject anything."""

    member_id: str
    position_t: int
    threshold_t: int
    limit_t: int


class HeldPosition(msgspec.Struct, frozen=True, array_like=True):
    """One instrument in a member's closing position, in tonnes."""

    instrument: str
    settled_t: int  # what the registry must show once the day is settled
    obligation_t: int  # + to deliver at settlement, - to receive


class MemberPosition(msgspec.Struct, frozen=True, tag=True):
    """The exchange's view of one member at the close, one per member at ``EndDay``: what
    settlement must post (the obligations) and what the registry and the cash ledger must
    show afterwards. Reconciliation compares the stores against it to the tonne and the fen.

    ``settled_cash_fen`` is the member's money once the day settles (available, reserved for
    open orders and pending proceeds); ``cash_obligation_fen`` is + to pay, - to receive.
    Holdings are sorted by instrument; an instrument the member never held is left out."""

    trading_day: str
    member_id: str
    settled_cash_fen: int
    cash_obligation_fen: int
    holdings: list[HeldPosition]


Event = (
    OrderAccepted
    | OrderRejected
    | OrderFilled
    | OrderCancelled
    | OrderAmended
    | OrderExpired
    | CancelRejected
    | AmendRejected
    | CommandRejected
    | DayStarted
    | DayClosed
    | MemberRegistered
    | MemberStatusChanged
    | FundsDeposited
    | FundsWithdrawn
    | FundsRetried
    | HoldingLoaded
    | InstrumentStatusChanged
    | MarketStatusChanged
    | TradingPhaseChanged
    | RiskLimitsChanged
    | InstrumentLimitsChanged
    | LargeHolderThresholdCrossed
    | MemberPosition
    | SessionGuardSet
    | DayVoided
)
