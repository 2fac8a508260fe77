"""Commands: what members and operators ask of the core. Imperative names, frozen Structs.

The ``Command`` union is what the engine journals; it is tagged so that one decoder, built
once, turns journal records back into commands. Commands encode as arrays (the tag, then
the fields in declaration order): half the bytes of a map and twice as fast to write. So
fields are only ever appended, never reordered or removed, once a journal exists. The
gateway's wire messages are their own structs and are not tied to this layout. Bounds on fields are checked when decoding at
the edge; business rules (lot, tick, band, size) are checked by the core and answered with a
numbered reject.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from exchange.model.enums import CancelReason, MemberKind, MemberStatus, OrderType, Side, TimeInForce, TradingPhase
from exchange.model.instruments import PriceFen, QtyT, Symbol
from exchange.model.units import MAX_ID, MAX_NOTIONAL_FEN

MemberId = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
ClientOrderId = Annotated[str, msgspec.Meta(max_length=64)]
OrderId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
# The shape only, checked when a journal decodes: a journal that holds an impossible date (as
# older ones could) must still decode, so that the core can refuse it with a numbered reject
# (DAY_NOT_A_DATE); whether it is a calendar date is ``units.parse_trading_day``'s to say.
TradingDay = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]
AmountFen = Annotated[int, msgspec.Meta(ge=-MAX_NOTIONAL_FEN, le=MAX_NOTIONAL_FEN)]
Limit = Annotated[int, msgspec.Meta(ge=-(2**62), le=2**62)]
# A clearing house's payment reference: 1 to 64 of letters, digits and _ . : - (enough for a
# bank reference or a UUID, and nothing that needs quoting in a log line or a CSV); "" is none.
FUNDS_REFERENCE_PATTERN = r"^[A-Za-z0-9_.:-]*\Z"  # \Z: "$" would let a trailing newline in
FundsReference = Annotated[str, msgspec.Meta(max_length=64, pattern=FUNDS_REFERENCE_PATTERN)]


class SubmitOrder(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """A new order. ``price_fen`` is required for limit orders and absent for market orders."""

    member_id: MemberId
    instrument: Symbol
    side: Side
    qty_t: QtyT
    price_fen: PriceFen | None = None
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    client_order_id: ClientOrderId = ""


class CancelOrder(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    member_id: MemberId
    instrument: Symbol
    order_id: OrderId


class AmendOrder(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Change a resting order's price and/or its open (leaves) quantity.

    ``qty_t`` is the new open quantity, not the original size. Reducing it at the same price
    keeps time priority; a new price or a larger quantity loses it (the order goes to the back
    of its new level, and a price that now crosses trades at once as the aggressor).
    """

    member_id: MemberId
    instrument: Symbol
    order_id: OrderId
    qty_t: QtyT
    price_fen: PriceFen


class MassCancel(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Cancel all of a member's open orders, on one instrument or (``None``) on all.

    ``reason`` is what the cancels report (``OrderCancelled.reason``): ``MEMBER`` when the
    member asked, else who acted for it (cancel-on-disconnect, the dead-man timer, the
    exchange). It was appended with the default every journal written before it meant, so an
    old two- or three-element record decodes to the same command and replays to the same
    events (tests/gateway/test_protocol_member.py decodes the old forms)."""

    member_id: MemberId
    instrument: Symbol | None = None
    reason: CancelReason = CancelReason.MEMBER


class StartDay(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Open a trading day: bands follow from each instrument's previous close."""

    trading_day: TradingDay


class EndDay(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Close the trading day: day orders expire, each instrument's close is struck."""


class VoidDay(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Take back a trading day opened by mistake (a wrong date), before anything traded on it.

    ``trading_day`` must name the open day (so a void meant for one day never ends another).
    Every order accepted since that day's ``StartDay`` is cancelled (its hold released), the
    phase goes back to post-close and the last trading day back to the one before, so the
    right date can be opened. A day with a trade is binding: it is ended and settled as it is.
    The command is journalled like any other, so the void is audited and replays."""

    trading_day: TradingDay


_ADMIN = dict(frozen=True, tag=True, array_like=True, forbid_unknown_fields=True)


class RegisterMember(msgspec.Struct, **_ADMIN):
    """Admit a trading member. Members of one ``linked_group`` count as one for self-trade
    prevention and surveillance (linked accounts); empty means the member stands alone."""

    member_id: MemberId
    kind: MemberKind
    annual_allocation_t: QtyT = 0
    linked_group: Annotated[str, msgspec.Meta(max_length=32)] = ""


class SetMemberStatus(msgspec.Struct, **_ADMIN):
    """Restrict, suspend, freeze or restore (ACTIVE) a member. Restoring also lifts a kill
    switch."""

    member_id: MemberId
    status: MemberStatus


class KillSwitch(msgspec.Struct, **_ADMIN):
    """Cancel all of a member's resting orders and refuse new ones until it is restored."""

    member_id: MemberId


class Deposit(msgspec.Struct, **_ADMIN):
    """Cash from the clearing house into the member's available funds.

    ``reference`` is the clearing house's own id of the payment, unique per member: a retry
    with a reference the member already used moves nothing and repeats the first outcome
    (``FundsRetried``); the same reference with another amount, or for a withdrawal, is refused
    (``REFERENCE_REUSED``). See ``exchange.risk.members``. Empty means no reference: the
    journals written before references existed hold such deposits and must replay as they
    did, so the field stays optional here; the operator API requires one."""

    member_id: MemberId
    amount_fen: AmountFen
    reference: FundsReference = ""


class Withdraw(msgspec.Struct, **_ADMIN):
    """Cash out of the member's available funds, to the clearing house. ``reference`` as for
    ``Deposit``: deposits and withdrawals share one set of references per member."""

    member_id: MemberId
    amount_fen: AmountFen
    reference: FundsReference = ""


class LoadHolding(msgspec.Struct, **_ADMIN):
    """Start of day: the member's settled holding of an instrument, as the registry has it.

    It replaces the exchange's view of the settled holding; allowances bought on days still
    inside the holding period stay locked (T+1)."""

    member_id: MemberId
    instrument: Symbol
    qty_t: QtyT


class HaltInstrument(msgspec.Struct, **_ADMIN):
    """Technical suspension of one instrument: resting orders stay, new orders are refused,
    cancels are allowed."""

    instrument: Symbol


class ResumeInstrument(msgspec.Struct, **_ADMIN):
    instrument: Symbol


class CloseMarket(msgspec.Struct, **_ADMIN):
    """Temporary closure of the whole market; cancels stay allowed."""


class ReopenMarket(msgspec.Struct, **_ADMIN):
    """End a temporary closure: new orders are accepted again."""


class SetTradingPhase(msgspec.Struct, **_ADMIN):
    """Move the trading day to its next phase; the session schedule sends these."""

    phase: TradingPhase


class SetRiskLimits(msgspec.Struct, **_ADMIN):
    """Change risk limits at once, for one member or (``member_id`` None) the market default.
    A field left None keeps its value."""

    member_id: MemberId | None = None
    max_order_value_fen: Limit | None = None
    orders_per_second: Limit | None = None
    order_burst: Limit | None = None
    max_open_orders: Limit | None = None


class SetInstrumentLimits(msgspec.Struct, **_ADMIN):
    """Change an instrument's band or maximum order quantity at once. Orders resting outside
    a narrowed band are cancelled; a lower maximum applies to new orders and amends."""

    instrument: Symbol
    band_bps: Limit | None = None
    max_order_qty_t: Limit | None = None


class SetSessionGuard(msgspec.Struct, **_ADMIN):
    """The gateway records, in the journal, what protects a member's resting orders when its
    sessions go away: cancel-on-disconnect and the dead-man timer (``dead_man_ms``, 0: off).
    The journal, not the gateway's memory, must know it, so that a crash of the server cannot
    leave the orders of a member who never comes back resting: after a restart the gateway
    cancels them once the member's grace period has passed without a logon. The core only
    checks the member and reports the guard; it changes nothing else."""

    member_id: MemberId
    cancel_on_disconnect: bool
    dead_man_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] = 0


Command = (
    SubmitOrder | CancelOrder | AmendOrder | MassCancel | StartDay | EndDay | RegisterMember
    | SetMemberStatus | KillSwitch | Deposit | Withdraw | LoadHolding | HaltInstrument
    | ResumeInstrument | CloseMarket | ReopenMarket | SetTradingPhase | SetRiskLimits
    | SetInstrumentLimits | SetSessionGuard | VoidDay
)
