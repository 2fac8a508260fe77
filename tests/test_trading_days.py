"""Trading days are dates (issue 10, finding 5).

``2026-13-45`` used to open, trade and settle, and from then on every real date was refused
for good (504); a typo such as ``2062-11-25`` locked out every earlier date the same way. Now
one parser reads every trading day (core, operator API, CLI), the core refuses a non-date
with reject 506, the operator API opens only days near today, and a day opened by mistake can
be voided (``VoidDay``) before anything trades on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from exchange.cli import main
from exchange.config import CalendarConfig
from exchange.engine import Engine, ExchangeCore, MemoryJournal, decode_state, encode_events, encode_state, replay
from exchange.model import (
    CancelReason,
    CommandName,
    CommandRejected,
    DayVoided,
    Deposit,
    EndDay,
    Instrument,
    InstrumentKind,
    LoadHolding,
    MemberKind,
    OrderAccepted,
    OrderCancelled,
    RegisterMember,
    RejectReason,
    SetTradingPhase,
    Side,
    StartDay,
    SubmitOrder,
    TimeInForce,
    TradingPhase,
    TradingPhaseChanged,
    VoidDay,
)
from exchange.model.commands import Command
from exchange.model.units import is_trading_day, parse_trading_day
from tests.gateway.conftest import DAY, Served, call, fast_config, logged_on, order, start_served, stop_served

SYM = "CEA-2025"
INSTRUMENT = Instrument(SYM, InstrumentKind.ALLOWANCE, 10_000, vintage=2025)
SETUP: list[Command] = [
    RegisterMember("alice", MemberKind.VOLUNTARY), RegisterMember("bob", MemberKind.VOLUNTARY),
    Deposit("alice", 10**9), Deposit("bob", 10**9),
]


def new_engine() -> Engine:
    return Engine(ExchangeCore([INSTRUMENT]), MemoryJournal(), clock=lambda: 1)


def run(engine: Engine, commands: list[Command]) -> list:
    events: list = []
    for command in commands:
        events = engine.execute(command).events
    return events


def continuous(day: str) -> list[Command]:
    return [StartDay(day), LoadHolding("alice", SYM, 1_000), LoadHolding("bob", SYM, 1_000), SetTradingPhase(TradingPhase.CONTINUOUS)]


# -- the one parser ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-12-04", "2024-02-29", "0001-01-01", "9999-12-31"])
def test_calendar_dates_parse(text: str) -> None:
    assert parse_trading_day(text).isoformat() == text and is_trading_day(text)


@pytest.mark.parametrize(("text", "problem"), [
    ("2026-13-45", "month must be in 1..12"),
    ("2026-02-29", "day is out of range for month"),
    ("2026-04-31", "day is out of range for month"),
    ("0000-01-01", "year 0 is out of range"),
    ("20261204", "YYYY-MM-DD"),  # date.fromisoformat takes these since Python 3.11
    ("2026-W49-5", "YYYY-MM-DD"),
    ("2026-1-5", "YYYY-MM-DD"),
    ("\uff12\uff10\uff12\uff16-01-05", "YYYY-MM-DD"),  # full-width digits match \d
    ("2026-01-05\n", "YYYY-MM-DD"),
    ("", "YYYY-MM-DD"),
])
def test_impossible_days_are_refused_naming_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_trading_day(text)
    assert not is_trading_day(text)


# -- the core -----------------------------------------------------------------------------------


def test_an_impossible_date_is_refused_and_real_dates_still_open() -> None:
    """The regression: 2026-13-45 opened, then 2026-12-04 was 504 for good."""
    engine = new_engine()
    run(engine, SETUP)
    before = engine.core.state()
    events = run(engine, [StartDay("2026-13-45")])
    assert events == [CommandRejected(CommandName.START_DAY, RejectReason.DAY_NOT_A_DATE, "2026-13-45")]
    assert (engine.core.trading_day, engine.core.day_open) == ("", False)
    assert engine.core.state().books == before.books
    opened = run(engine, [StartDay("2026-12-04")])
    assert [type(e).__name__ for e in opened] == ["DayStarted"] and engine.core.trading_day == "2026-12-04"


def test_a_journal_that_holds_an_impossible_date_replays_the_same_refusal_and_state() -> None:
    """Older journals could hold one: its shape still decodes, and the core refuses it the same
    way on every replay, so the replay's state equals the running core's."""
    commands = [*SETUP, StartDay("2026-13-45"), *continuous("2026-12-04")]
    engine = new_engine()
    run(engine, commands)
    core = ExchangeCore([INSTRUMENT])
    replayed = {seq: events for seq, _, events in replay(core, engine.journal.records())}
    assert replayed[len(SETUP) + 1] == [CommandRejected(CommandName.START_DAY, RejectReason.DAY_NOT_A_DATE, "2026-13-45")]
    assert core.state_hash() == engine.core.state_hash() and core.trading_day == "2026-12-04"


# -- voiding a day opened by mistake ---------------------------------------------------------------


def mistaken_day_with_orders() -> tuple[Engine, int]:
    """Day 2026-12-03 traded and closed; a GTC order rests from it; then 2026-12-07 was opened
    by mistake (the right day is 2026-12-04) and orders came in. The GTC order's id."""
    engine = new_engine()
    run(engine, [*SETUP, *continuous("2026-12-03")])
    accepted = engine.execute(SubmitOrder("alice", SYM, Side.BUY, 10, 9_500, tif=TimeInForce.GTC)).events[0]
    assert isinstance(accepted, OrderAccepted)
    gtc = accepted.order_id
    run(engine, [SubmitOrder("alice", SYM, Side.SELL, 5, 10_000), SubmitOrder("bob", SYM, Side.BUY, 5, 10_000), EndDay()])
    run(engine, continuous("2026-12-07"))
    run(engine, [SubmitOrder("alice", SYM, Side.BUY, 20, 9_900), SubmitOrder("bob", SYM, Side.SELL, 30, 10_100, tif=TimeInForce.GTC)])
    return engine, gtc


def test_void_cancels_the_days_orders_and_puts_the_last_day_back() -> None:
    engine, gtc = mistaken_day_with_orders()
    core = engine.core
    day_number = core.risk.day_number
    events = run(engine, [VoidDay("2026-12-07")])
    cancels = [e for e in events if isinstance(e, OrderCancelled)]
    assert [(c.member_id, c.qty_t, c.reason) for c in cancels] == [
        ("alice", 20, CancelReason.DAY_VOIDED), ("bob", 30, CancelReason.DAY_VOIDED)]
    assert events[len(cancels):] == [TradingPhaseChanged(TradingPhase.POST_CLOSE), DayVoided("2026-12-07", "2026-12-03", 2)]
    assert (core.trading_day, core.day_open, core.risk.day_number) == ("2026-12-03", False, day_number - 1)
    assert [o.order_id for o in core.books[SYM].open_orders("alice")] == [gtc]  # an earlier day's GTC order stays
    assert core.books[SYM].open_orders("bob") == []
    alice, bob = core.risk.accounts["alice"], core.risk.accounts["bob"]
    assert alice.cash_reserved_fen == 10 * 9_500  # only the GTC order's hold is left
    assert bob.holdings[SYM].reserved_t == 0
    # the right date opens now (it was "not after" the mistaken one before the void)
    assert [type(e).__name__ for e in run(engine, [StartDay("2026-12-04")])] == ["DayStarted"]
    assert core.risk.day_number == day_number


def test_a_day_with_a_trade_is_binding() -> None:
    engine, _ = mistaken_day_with_orders()
    run(engine, [SubmitOrder("alice", SYM, Side.BUY, 1, 10_100)])  # takes 1 t of bob's GTC sell
    before = encode_state(engine.core.state())
    assert any(book.stats.trade_count for book in engine.core.books.values())
    [refusal] = run(engine, [VoidDay("2026-12-07")])
    assert refusal == CommandRejected(CommandName.VOID_DAY, RejectReason.VOID_DAY_HAS_TRADES, "2026-12-07")
    after = decode_state(encode_state(engine.core.state()))
    after.last_seq -= 1
    assert encode_state(after) == before
    assert [type(e).__name__ for e in run(engine, [EndDay()])][-1] == "MemberPosition"  # it ends as it is


@pytest.mark.parametrize(("commands", "reason"), [
    ([VoidDay("2026-12-07")], RejectReason.VOID_NO_DAY_OPEN),  # nothing ever opened
    ([*continuous("2026-12-07"), EndDay(), VoidDay("2026-12-07")], RejectReason.VOID_NO_DAY_OPEN),  # ended: binding
    ([*continuous("2026-12-07"), VoidDay("2026-12-04")], RejectReason.VOID_NOT_THE_OPEN_DAY),
])
def test_void_refusals(commands: list[Command], reason: RejectReason) -> None:
    engine = new_engine()
    events = run(engine, [*SETUP, *commands])
    assert [e.reason for e in events] == [reason]


def test_a_void_survives_a_snapshot_and_replays_byte_for_byte() -> None:
    """Mid-day snapshot: the restored core knows what to void; the journal replays the void."""
    engine, _ = mistaken_day_with_orders()
    restored = ExchangeCore([INSTRUMENT])
    restored.restore(decode_state(encode_state(engine.core.state())))
    assert restored.opening == engine.core.opening and restored.opening is not None
    voided = engine.execute(VoidDay("2026-12-07"))
    assert restored.apply(voided.seq, voided.ts_ns, voided.command) == voided.events
    assert restored.state_hash() == engine.core.state_hash()
    replayed = ExchangeCore([INSTRUMENT])
    last = None
    for seq, ts_ns, events in replay(replayed, engine.journal.records()):
        last = encode_events(seq, ts_ns, events)
    assert last == encode_events(voided.seq, voided.ts_ns, voided.events)
    assert replayed.state_hash() == engine.core.state_hash() and replayed.opening is None


# -- the operator API: one parser, a window around today, the void endpoint ----------------------------


def epoch_ms(day: str, hour_local: int = 10, utc_offset_hours: int = 8) -> int:
    """``hour_local`` o'clock on ``day`` in exchange time, as epoch milliseconds."""
    local = datetime.fromisoformat(day).replace(hour=hour_local, tzinfo=timezone(timedelta(hours=utc_offset_hours)))
    return int(local.timestamp()) * 1000


def shifted(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def windowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    """A served exchange with the default window (7 days) whose clock says it is ``DAY``."""
    config = msgspec.structs.replace(fast_config(), calendar=CalendarConfig())
    served = await start_served(tmp_path / "data", config=config)
    monkeypatch.setattr(served.hub, "now_ms", lambda: epoch_ms(DAY))
    yield served
    await stop_served(served)


async def post(http, served, role: str, path: str, body: dict) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {served.tokens[role]}"}
    async with http.post(served.url + path, json=body, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.asyncio
async def test_start_of_day_refuses_impossible_and_far_days_naming_the_field(windowed, http) -> None:
    served = windowed
    await served.add_member("M1")
    seq = served.hub.service.last_seq
    for text, says in [("2026-13-45", "month must be in 1..12"), ("2062-11-25", "days after today"),
                       (shifted(DAY, 8), "8 days after today (2026-01-05)"), (shifted(DAY, -8), "8 days before"),
                       ("2026/01/05", "YYYY-MM-DD")]:
        status, body = await post(http, served, "clearing", "/clearing/start-of-day", {"trading_day": text})
        assert (status, body["field"]) == (400, "trading_day"), (text, body)
        assert says in body["error"], (text, body)
    assert served.hub.service.last_seq == seq  # nothing was journalled
    status, body = await post(http, served, "clearing", "/clearing/start-of-day", {"trading_day": shifted(DAY, 7)})
    assert status == 200, body


@pytest.mark.asyncio
async def test_today_is_the_exchanges_local_date(windowed, http, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 23:30 UTC on the day before, it is already DAY in Beijing (UTC+8)."""
    served = windowed
    monkeypatch.setattr(served.hub, "now_ms", lambda: epoch_ms(DAY, hour_local=7))  # 23:00 UTC the day before
    status, body = await post(http, served, "clearing", "/clearing/start-of-day", {"trading_day": shifted(DAY, -8)})
    assert status == 400 and "8 days before today (2026-01-05)" in body["error"], body


@pytest.mark.asyncio
async def test_trading_day_paths_and_queries_use_the_one_parser(windowed, http) -> None:
    served = windowed
    for path in ("/regulator/trades/2026-13-45", "/regulator/positions?trading_day=2026-02-30",
                 "/clearing/statements/2026-13-45", "/clearing/statements/2026-13-45/settlement-report.json"):
        role = "regulator"
        async with http.get(served.url + path, headers={"Authorization": f"Bearer {served.tokens[role]}"}) as response:
            body = await response.json()
        in_path = "?" not in path  # a day in a path names a resource: no such day is 404 (issue 11)
        assert (response.status, body["field"]) == (404 if in_path else 400, "trading_day"), (path, body)
        assert "not a date on the calendar" in body["error"]
    status, body = await post(http, served, "clearing", "/clearing/settlements", {"trading_day": "2026-13-45"})
    assert (status, body["field"]) == (400, "trading_day") and "month must be in 1..12" in body["error"]


@pytest.mark.asyncio
async def test_a_mistaken_day_is_voided_over_the_api_and_the_right_one_opens(windowed, http) -> None:
    served = windowed
    buyer, seller = await served.add_member("B1"), await served.add_member("S1")
    mistaken = shifted(DAY, 3)
    await call(http, served.url, served.tokens["clearing"], "POST", "/clearing/start-of-day", {"trading_day": mistaken})
    await call(http, served.url, served.tokens["admin"], "POST", "/market/phase", {"phase": "continuous"})
    b = await logged_on(http, served, buyer, timestamp_ms=served.hub.now_ms())  # the frozen clock's
    await b.send(order("b1", "buy", 10, "58.00"))
    assert (await b.expect("execution_report"))["exec_type"] == "new"
    status, body = await post(http, served, "clearing", "/market/void-day", {"trading_day": mistaken})
    assert status == 403  # the admin's
    status, body = await post(http, served, "admin", "/market/void-day", {"trading_day": DAY})
    assert (status, body["code"]) == (409, RejectReason.VOID_NOT_THE_OPEN_DAY.value)
    status, body = await post(http, served, "admin", "/market/void-day", {"trading_day": "2026-13-45"})
    assert (status, body["field"]) == (400, "trading_day")
    voided = await call(http, served.url, served.tokens["admin"], "POST", "/market/void-day", {"trading_day": mistaken})
    assert [e["event"] for e in voided["events"]] == ["OrderCancelled", "TradingPhaseChanged", "DayVoided"]
    report = await b.expect("execution_report")
    assert (report["exec_type"], report["cancel_reason"]) == ("canceled", "day_voided")
    assert served.hub.trading_day == "" and served.hub.service.trading_day == ""
    await call(http, served.url, served.tokens["clearing"], "POST", "/clearing/start-of-day", {"trading_day": DAY})
    # a day with a trade is binding
    await call(http, served.url, served.tokens["admin"], "POST", "/market/phase", {"phase": "continuous"})
    s = await logged_on(http, served, seller, timestamp_ms=served.hub.now_ms())
    await b.send(order("b2", "buy", 10, "58.20"))
    await s.send(order("s2", "sell", 10, "58.20"))
    await s.expect("execution_report")
    while (await s.expect("execution_report"))["exec_type"] != "trade":
        pass
    status, body = await post(http, served, "admin", "/market/void-day", {"trading_day": DAY})
    assert (status, body["code"]) == (409, RejectReason.VOID_DAY_HAS_TRADES.value)
    assert "binding" in body["error"]


# -- the CLI ---------------------------------------------------------------------------------------


def test_settle_refuses_an_impossible_date_without_a_traceback(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["settle", "--date", "2026-13-45", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --date: 2026-13-45 is not a date on the calendar (month must be in 1..12)" in err
    assert "Traceback" not in err
