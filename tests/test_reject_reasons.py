"""One case per reject reason, through the engine's door. Every code must have a row."""

from __future__ import annotations

import pytest

from exchange.engine import Engine, ExchangeCore, MemoryJournal
from exchange.model import (
    AmendOrder,
    AmendRejected,
    CancelOrder,
    CancelRejected,
    CloseMarket,
    Command,
    CommandName,
    CommandRejected,
    Deposit,
    EndDay,
    HaltInstrument,
    Instrument,
    InstrumentKind,
    KillSwitch,
    LoadHolding,
    MassCancel,
    MemberKind,
    MemberStatus,
    OrderRejected,
    OrderType,
    RegisterMember,
    RejectReason,
    SetInstrumentLimits,
    SetMemberStatus,
    SetRiskLimits,
    SetTradingPhase,
    Side,
    StartDay,
    SubmitOrder,
    TimeInForce,
    TradingPhase,
    VoidDay,
    Withdraw,
)
from exchange.risk import RiskPolicy
from exchange.risk.schedule import SessionSchedule

SYMBOL = "CEA-2025"
# tick 5 fen, lot 10 t, at most 1,000 t; band +-10 % of 100.00 = 90.00 .. 110.00
INSTRUMENT = Instrument(SYMBOL, InstrumentKind.ALLOWANCE, 10_000, vintage=2025, tick_fen=5, lot_t=10, max_order_qty_t=1_000)
POLICY = RiskPolicy(position_limit_t=5_000)
HOLIDAY = "2026-11-25"  # a Wednesday the calendar does not trade

MEMBERS: list[Command] = [
    RegisterMember("alice", MemberKind.VOLUNTARY),
    RegisterMember("bob", MemberKind.VOLUNTARY),
    Deposit("alice", 1_000_000_000),
    Deposit("bob", 5_000_000),  # 50,000.00 CNY: 500 t at 100.00
]
PRE_OPEN: list[Command] = [*MEMBERS, StartDay("2026-11-23"), LoadHolding("alice", SYMBOL, 2_000), LoadHolding("bob", SYMBOL, 100)]
OPEN: list[Command] = [*PRE_OPEN, SetTradingPhase(TradingPhase.CONTINUOUS)]


def buy(qty: int = 100, price: int | None = 10_000, member: str = "alice", **kw) -> SubmitOrder:
    return SubmitOrder(member, SYMBOL, Side.BUY, qty, price, **kw)


def sell(qty: int = 100, price: int | None = 10_000, member: str = "alice") -> SubmitOrder:
    return SubmitOrder(member, SYMBOL, Side.SELL, qty, price)


RESTING = buy(100, 9_000)  # the order id is the command's sequence number
RESTING_ID = len(OPEN) + 1
# bob buys 100 t from alice today: owned, locked until the next trading day (T+1)
BOB_BOUGHT = [sell(100, 10_000), buy(100, 10_000, member="bob")]

CASES: dict[RejectReason, list] = {
    RejectReason.QTY_NOT_POSITIVE: [*OPEN, buy(0)],
    RejectReason.QTY_NOT_LOT_MULTIPLE: [*OPEN, buy(15)],
    RejectReason.QTY_ABOVE_MAXIMUM: [*OPEN, buy(1_010)],
    RejectReason.PRICE_NOT_POSITIVE: [*OPEN, buy(100, None)],
    RejectReason.PRICE_NOT_TICK_MULTIPLE: [*OPEN, buy(100, 10_002)],
    RejectReason.PRICE_OUTSIDE_BAND: [*OPEN, buy(100, 11_005)],
    RejectReason.MARKET_ORDER_WITH_PRICE: [*OPEN, buy(100, 10_000, order_type=OrderType.MARKET, tif=TimeInForce.IOC)],
    RejectReason.MARKET_ORDER_MUST_BE_IMMEDIATE: [*OPEN, buy(100, None, order_type=OrderType.MARKET)],
    RejectReason.UNKNOWN_ORDER: [*OPEN, RESTING, CancelOrder("bob", SYMBOL, RESTING_ID)],
    RejectReason.AMEND_NO_CHANGE: [*OPEN, RESTING, AmendOrder("alice", SYMBOL, RESTING_ID, 100, 9_000)],
    RejectReason.UNKNOWN_MEMBER: [*OPEN, buy(member="carol")],
    RejectReason.MEMBER_RESTRICTED: [*OPEN, SetMemberStatus("alice", MemberStatus.RESTRICTED), buy()],
    RejectReason.MEMBER_SUSPENDED: [*OPEN, SetMemberStatus("alice", MemberStatus.SUSPENDED), buy()],
    RejectReason.MEMBER_FROZEN: [*OPEN, SetMemberStatus("alice", MemberStatus.FROZEN), buy()],
    RejectReason.MEMBER_KILLED: [*OPEN, KillSwitch("alice"), buy()],
    RejectReason.INSUFFICIENT_FUNDS: [*OPEN, buy(600, member="bob")],
    RejectReason.INSUFFICIENT_ALLOWANCES: [*OPEN, sell(200, member="bob")],
    RejectReason.ALLOWANCES_NOT_YET_SELLABLE: [*OPEN, *BOB_BOUGHT, sell(200, member="bob")],
    RejectReason.ORDER_VALUE_ABOVE_MAXIMUM: [*OPEN, SetRiskLimits("alice", max_order_value_fen=999_999), buy(100)],
    RejectReason.POSITION_LIMIT: [*OPEN, buy(1_000), buy(1_000), buy(1_000), buy(100)],
    RejectReason.INSTRUMENT_HALTED: [*OPEN, HaltInstrument(SYMBOL), buy()],
    RejectReason.MARKET_CLOSED: [*OPEN, CloseMarket(), buy()],
    RejectReason.OUTSIDE_TRADING_HOURS: [*PRE_OPEN, buy()],
    RejectReason.THROTTLED: [*OPEN, SetRiskLimits("alice", order_burst=2), buy(), buy(), buy()],
    RejectReason.TOO_MANY_OPEN_ORDERS: [*OPEN, SetRiskLimits("alice", max_open_orders=1), RESTING, buy(100, 9_005)],
    RejectReason.INSUFFICIENT_AVAILABLE: [*MEMBERS, Withdraw("bob", 5_000_001)],
    RejectReason.MEMBER_ALREADY_REGISTERED: [*MEMBERS, RegisterMember("bob", MemberKind.COVERED, 10_000)],
    RejectReason.AMOUNT_NOT_POSITIVE: [*MEMBERS, Deposit("bob", 0)],
    RejectReason.REFERENCE_REUSED: [*MEMBERS, Deposit("bob", 5, "B-1"), Deposit("bob", 6, "B-1")],
    # alice sold 100 t for 1,000,000 fen today: she may buy with it, not withdraw it before settlement
    RejectReason.PROCEEDS_NOT_SETTLED: [*OPEN, *BOB_BOUGHT, Withdraw("alice", 1_000_000_001)],
    RejectReason.LIMIT_OUT_OF_RANGE: [*MEMBERS, SetRiskLimits("bob", order_burst=10**10)],
    RejectReason.STATUS_UNCHANGED: [*MEMBERS, SetMemberStatus("bob", MemberStatus.ACTIVE)],
    RejectReason.HOLDING_LOAD_DURING_TRADING: [*OPEN, LoadHolding("bob", SYMBOL, 500)],
    RejectReason.HOLDING_BELOW_COMMITTED: [
        *OPEN, sell(500), SetTradingPhase(TradingPhase.POST_CLOSE), LoadHolding("alice", SYMBOL, 400),
    ],
    RejectReason.UNKNOWN_INSTRUMENT: [*OPEN, SubmitOrder("alice", "CEA-1999", Side.BUY, 10, 10_000)],
    RejectReason.DAY_NOT_OPEN: [*MEMBERS, buy()],
    RejectReason.DAY_ALREADY_OPEN: [*OPEN, StartDay("2026-11-24")],
    RejectReason.DAY_NOT_AFTER_PREVIOUS: [*OPEN, EndDay(), StartDay("2026-11-20")],
    RejectReason.PHASE_OUT_OF_ORDER: [*OPEN, SetTradingPhase(TradingPhase.PRE_OPEN)],
    RejectReason.DAY_NOT_A_DATE: [*MEMBERS, StartDay("2026-13-45")],
    RejectReason.VOID_NO_DAY_OPEN: [*OPEN, EndDay(), VoidDay("2026-11-23")],
    RejectReason.VOID_NOT_THE_OPEN_DAY: [*OPEN, VoidDay("2026-11-24")],
    RejectReason.VOID_DAY_HAS_TRADES: [*OPEN, *BOB_BOUGHT, VoidDay("2026-11-23")],
    RejectReason.DAY_IS_WEEKEND: [*MEMBERS, StartDay("2026-11-28")],  # a Saturday
    RejectReason.DAY_IS_HOLIDAY: [*MEMBERS, StartDay(HOLIDAY)],
}


REJECTS = (OrderRejected, CancelRejected, AmendRejected, CommandRejected)


def events_of(result) -> list:
    """The events of ``Engine.execute``'s result (an ``Applied`` record)."""
    return result.events


def new_engine() -> Engine:
    core = ExchangeCore([INSTRUMENT], risk_policy=POLICY, calendar=SessionSchedule(holidays=[HOLIDAY]))
    return Engine(core, MemoryJournal(), clock=lambda: 1)


def run(commands: list) -> list:
    engine = new_engine()
    events: list = []
    for command in commands:
        events = events_of(engine.execute(command))
    return events


def test_every_reason_has_a_case() -> None:
    assert set(CASES) == set(RejectReason)


@pytest.mark.parametrize("reason", sorted(CASES), ids=lambda r: f"{int(r)}-{r.name}")
def test_reason_is_produced(reason: RejectReason) -> None:
    events = run(CASES[reason])
    assert [getattr(e, "reason", None) for e in events] == [reason]
    assert reason.text  # every code is documented for the wire


@pytest.mark.parametrize("reason", sorted(CASES), ids=lambda r: f"{int(r)}-{r.name}")
def test_the_setup_alone_is_accepted(reason: RejectReason) -> None:
    """Every command before the last is accepted, so the last one is what the case tests."""
    engine = new_engine()
    for command in CASES[reason][:-1]:
        rejected = [e for e in events_of(engine.execute(command)) if isinstance(e, REJECTS)]
        assert rejected == [], f"{command} was refused"


@pytest.mark.parametrize(
    "command",
    [
        CancelOrder("alice", "NOPE", 1),
        AmendOrder("alice", "NOPE", 1, 10, 10_000),
        MassCancel("alice", "NOPE"),
        HaltInstrument("NOPE"),
        LoadHolding("alice", "NOPE", 10),
    ],
    ids=["cancel", "amend", "mass-cancel", "halt", "load-holding"],
)
def test_unknown_instrument_on_every_command_that_names_one(command) -> None:
    assert [e.reason for e in run([*OPEN, command])] == [RejectReason.UNKNOWN_INSTRUMENT]


@pytest.mark.parametrize("reason", sorted(CASES), ids=lambda r: f"{int(r)}-{r.name}")
def test_a_rejected_command_changes_nothing_but_the_sequence(reason: RejectReason) -> None:
    engine = new_engine()
    *prefix, last = CASES[reason]
    for command in prefix:
        engine.execute(command)
    before = engine.core.state()
    engine.execute(last)
    after = engine.core.state()
    assert after.last_seq == before.last_seq + 1
    assert (after.books, without_rate_tokens(after.risk), after.trading_day, after.day_open, after.last_trade_id) == (
        before.books, without_rate_tokens(before.risk), before.trading_day, before.day_open, before.last_trade_id,
    )


def without_rate_tokens(risk):
    """A refused order attempt still spends a rate token (so a throttled member cannot probe
    the checks behind the throttle); everything else must be untouched."""
    for account in risk.accounts:
        account.tokens = account.tokens_ts_ns = 0
    return risk


def test_a_cancel_is_never_refused_for_risk() -> None:
    """Halted, closed, killed, suspended: a member can always take an order off."""
    engine = new_engine()
    for command in OPEN:
        engine.execute(command)
    engine.execute(RESTING)
    for command in (HaltInstrument(SYMBOL), CloseMarket(), SetMemberStatus("alice", MemberStatus.SUSPENDED)):
        engine.execute(command)
    events = events_of(engine.execute(CancelOrder("alice", SYMBOL, RESTING_ID)))
    assert [type(e).__name__ for e in events] == ["OrderCancelled"]
    assert not any(isinstance(e, CommandRejected) for e in events)


@pytest.mark.parametrize(
    ("band_bps", "max_qty", "reason"),
    [
        (10_000, None, RejectReason.LIMIT_OUT_OF_RANGE),  # 100 %: out of range, not "not positive"
        (25_000, None, RejectReason.LIMIT_OUT_OF_RANGE),
        (10_000, 0, RejectReason.AMOUNT_NOT_POSITIVE),  # a non-positive value is refused first
        (-1, None, RejectReason.AMOUNT_NOT_POSITIVE),
        (None, 0, RejectReason.AMOUNT_NOT_POSITIVE),
        (None, -5, RejectReason.AMOUNT_NOT_POSITIVE),
    ],
)
def test_instrument_limits_out_of_range(band_bps, max_qty, reason) -> None:
    events = run([*OPEN, SetInstrumentLimits(SYMBOL, band_bps, max_qty)])
    assert events == [CommandRejected(CommandName.SET_INSTRUMENT_LIMITS, reason, SYMBOL)]


def test_instrument_band_just_below_100_percent_is_accepted() -> None:
    events = run([*OPEN, SetInstrumentLimits(SYMBOL, 9_999)])
    assert [type(e).__name__ for e in events] == ["InstrumentLimitsChanged"]


def test_order_rejected_carries_the_order() -> None:
    """A consumer can report a reject from the event alone."""
    market = buy(100, None, order_type=OrderType.MARKET, tif=TimeInForce.FOK, member="carol")
    [event] = run([*OPEN, market])
    assert event == OrderRejected(
        "carol", SYMBOL, "", RejectReason.UNKNOWN_MEMBER, Side.BUY, OrderType.MARKET, TimeInForce.FOK, None, 100,
    )
    [event] = run([*OPEN, sell(200, 10_000, member="bob")])
    assert (event.side, event.order_type, event.tif, event.price_fen, event.qty_t) == (
        Side.SELL, OrderType.LIMIT, TimeInForce.DAY, 10_000, 200,
    )


def test_command_rejected_names_the_command_as_before() -> None:
    """``CommandRejected.command`` is a ``CommandName``; it still equals the command's class
    name and encodes to the same bytes as the string did."""
    import msgspec

    from exchange.model import CommandName

    [event] = run([*OPEN, StartDay("2026-11-24")])
    assert event.command is CommandName.START_DAY and event.command == "StartDay" and f"{event.command}" == "StartDay"
    # deliberately the plain string the event carried before CommandName: it must encode the same
    as_string = CommandRejected("StartDay", RejectReason.DAY_ALREADY_OPEN)  # type: ignore[arg-type]
    assert msgspec.msgpack.encode(event) == msgspec.msgpack.encode(as_string)
    assert msgspec.json.decode(msgspec.json.encode(event), type=CommandRejected) == event


def test_a_session_guard_is_reported_for_a_member_and_refused_for_a_stranger() -> None:
    from exchange.model import SetSessionGuard
    from exchange.model.events import SessionGuardSet

    assert run([*MEMBERS, SetSessionGuard("alice", True, 30_000)]) == [SessionGuardSet("alice", True, 30_000)]
    [refused] = run([*MEMBERS, SetSessionGuard("carol", True)])
    assert (refused.command, refused.reason, refused.subject) == ("SetSessionGuard", RejectReason.UNKNOWN_MEMBER, "carol")
