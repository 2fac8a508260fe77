"""The trading day runs itself: ``exchange serve`` under ``--time-scale`` from start of day to
settled statements with no operator phase call, a SIGKILL in the lunch break and a restart
that opens the afternoon session on time, the operator's overrides kept, and a weekend and a
holiday refused at the operator API.

Verdicts are read from the journal after the server stops (which commands, in which order,
by which process, never before their scheduled moment), with generous deadlines for getting
there: nothing depends on how fast the machine is, only on the calendar being followed.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import msgspec
import pytest

from exchange.config import parse_config
from exchange.engine import FileJournal, decode_command
from exchange.gateway.calendar_driver import CLOCK_FILE, CalendarClock, CalendarDriver, calendar_ns
from exchange.model import (
    CommandRejected, Deposit, EndDay, MemberKind, RegisterMember, SetTradingPhase, StartDay, TradingPhase,
)
from exchange.model.stream import Applied
from exchange.serve import compose
from registry_adapter.demo import allocate_holdings
from registry_adapter.sql import SqlRegistry
from tests.gateway.conftest import replay_journal
from tests.gateway.conftest import (
    SYMBOL, Member, call, fast_config, order, start_served, start_serve_process, stop_served,
)

pytestmark = pytest.mark.asyncio

DAY = "2026-12-07"  # a Monday
SCALE = 300  # a calendar hour in 12 real seconds
START = f"{DAY}T09:15"
# Start of day 09:20; the morning 09:30-10:30 (12 s), lunch 10:30-11:30 (12 s: time for a
# restart), the afternoon 11:30-12:00 (6 s), settlement 12:05: the day in 34 real seconds.
CONFIG_TOML = """\
[risk]
position_limit_t = 1000000000

[calendar]
sessions = [["09:30", "10:30"], ["11:30", "12:00"]]
start_of_day_lead_minutes = 10
settle_delay_minutes = 5
"""
DEADLINE_S = 300.0  # generous: a busy machine is slow, never wrong
C, B, P = TradingPhase.CONTINUOUS, TradingPhase.BREAK, TradingPhase.POST_CLOSE
CASH_FEN = 10**10


async def admit_members(data_dir: Path) -> dict[str, str]:
    """The registry (S1 holds allowances, B1 none), then the members admitted, funded and keyed
    by the served composition in this process (no calendar driver: the day has not started);
    the operator tokens and the members' keys (``key_id:secret``)."""
    data_dir.mkdir(parents=True)
    registry = SqlRegistry(f"sqlite:///{data_dir / 'registry.db'}")
    registry.create_schema()
    allocate_holdings(registry, {"S1": {SYMBOL: 10_000}, "B1": {}})
    registry.close()
    (data_dir.parent / "calendar.toml").write_text(CONFIG_TOML)
    served = compose(parse_config(CONFIG_TOML), data_dir)
    await served.start()
    try:
        keys = {}
        for member_id in ("S1", "B1"):
            await served.hub.submit(RegisterMember(member_id, MemberKind.VOLUNTARY))
            await served.hub.submit(Deposit(member_id, CASH_FEN, f"{member_id}-opening"))
            issued = served.hub.credentials.issue(member_id, served.hub.now_ms())
            keys[member_id] = f"{issued.key_id}:{issued.secret_hex}"
        served.hub.credentials_changed()
        return {**served.tokens, **keys}
    finally:
        await served.stop()
        served.close()


async def start_calendar_serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    return await start_serve_process(data_dir, "--config", str(data_dir.parent / "calendar.toml"),
                                     "--time-scale", str(SCALE), "--calendar-start", START)


async def stop_process(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 60) == 0


async def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def phase_is(http: aiohttp.ClientSession, url: str, token: str, phase: str) -> bool:
    instruments = await call(http, url, token, "GET", "/instruments")
    return all(item["phase"] == phase for item in instruments)


async def settled(http: aiohttp.ClientSession, url: str, token: str) -> bool:
    async with http.get(f"{url}/clearing/statements/{DAY}", headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status == 200 and bool(await response.json())


def journalled(data_dir: Path) -> list[Applied]:
    """The journal replayed with the served configuration: each command with its events."""
    return replay_journal(data_dir, parse_config(CONFIG_TOML))


def day_commands(records: list[Applied]) -> list[object]:
    return [r.command for r in records if isinstance(r.command, (StartDay, SetTradingPhase, EndDay))]


def scheduled_real_ns(data_dir: Path, clock: str) -> int:
    """The wall-clock moment the served calendar reached ``clock`` on ``DAY`` (from the anchor
    the server kept in its data directory)."""
    anchor = msgspec.json.decode((data_dir / CLOCK_FILE).read_bytes())
    calendar = CalendarClock(anchor["scale"], anchor["real_start_ns"], anchor["calendar_start_ns"])
    return calendar.real_ns_at(calendar_ns(datetime.fromisoformat(f"{DAY}T{clock}"), 8))


def assert_a_whole_day(records: list[Applied]) -> None:
    assert day_commands(records) == [StartDay(DAY), SetTradingPhase(C), SetTradingPhase(B), SetTradingPhase(C),
                                     SetTradingPhase(P), EndDay()]
    refused = [r.command for r in records if any(isinstance(e, CommandRejected) for e in r.events)]
    assert refused == []


def assert_on_time(data_dir: Path, records: list[Applied]) -> None:
    phases = [r for r in records if isinstance(r.command, SetTradingPhase)]
    for record, clock in zip(phases, ("09:30", "10:30", "11:30", "12:00"), strict=True):
        assert record.ts_ns >= scheduled_real_ns(data_dir, clock), f"{record.command} before {clock}"


async def test_a_served_day_runs_from_start_of_day_to_settled_statements_by_itself(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secrets = await admit_members(data_dir)
    process, url = await start_calendar_serve(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            members = []
            for member_id in ("S1", "B1"):  # logged on before the open: the session only sends
                key_id, secret = secrets[member_id].split(":")
                member = await Member.connect(http, url + "/ws")
                assert (await member.logon(key_id, bytes.fromhex(secret)))["type"] == "logon_ack"
                members.append(member)
            await wait_for(lambda: phase_is(http, url, secrets["admin"], "continuous"), "the morning session")
            for member, side in zip(members, ("sell", "buy"), strict=True):
                await member.send(order(f"{side}-1", side, 100, "58.20"))
            await wait_for(lambda: settled(http, url, secrets["clearing"]), "the day's statements")
            trades = await call(http, url, secrets["regulator"], "GET", f"/regulator/trades/{DAY}")
            for member in members:
                await member.close()
    finally:
        await stop_process(process)
    assert [(t["buy_member_id"], t["sell_member_id"], t["qty_t"]) for t in trades] == [("B1", "S1", 100)]
    records = journalled(data_dir)
    assert_a_whole_day(records)
    assert_on_time(data_dir, records)
    statements = sorted(path.name for path in (data_dir / "statements" / DAY).iterdir())
    assert any("S1" in name for name in statements) and any("B1" in name for name in statements), statements


async def test_a_restart_in_the_lunch_break_opens_the_afternoon_on_time(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secrets = await admit_members(data_dir)
    process, url = await start_calendar_serve(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: phase_is(http, url, secrets["admin"], "break"), "the lunch break")
            killed_at_seq = (await call(http, url, secrets["admin"], "GET", "/state"))["last_seq"]
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 60)
        process, url = await start_calendar_serve(data_dir)  # the same command line: the same calendar
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: settled(http, url, secrets["clearing"]), "the day's statements")
    finally:
        if process.poll() is None:
            await stop_process(process)
    records = journalled(data_dir)
    assert_a_whole_day(records)  # nothing repeated, nothing refused, nothing missed
    assert_on_time(data_dir, records)
    [afternoon] = [r for r in records if r.command == SetTradingPhase(C) and r.seq > killed_at_seq]
    assert afternoon.ts_ns >= scheduled_real_ns(data_dir, "11:30")  # by the restarted server, at its time
    [lunch] = [r for r in records if r.command == SetTradingPhase(B)]
    assert lunch.seq <= killed_at_seq


# -- in this process: the operator's overrides, and the calendar's refusals ---------------------------


async def test_the_driver_keeps_the_operators_override_and_never_repeats_a_step(tmp_path: Path) -> None:
    config = fast_config()
    schedule = config.calendar.schedule()
    served = await start_served(tmp_path / "data", config=config)
    try:
        await served.add_member("M1")
        driver = CalendarDriver(served.hub, schedule, CalendarClock())
        opening, morning, lunch, afternoon, close, settle = schedule.steps(datetime(2026, 12, 7).date())
        saturday = schedule.latest_step(calendar_ns(datetime(2026, 12, 5, 10, 0), 8))
        assert saturday is not None
        await driver.take(saturday)  # the weekend: Friday's settlement, with no day ever opened
        assert served.hub.service.last_seq == 2  # the member's registration and deposit only
        await driver.take(opening)
        state = await served.hub.read(lambda service: service.day_state())
        assert (state.trading_day, state.day_open, state.phase) == (DAY, True, TradingPhase.PRE_OPEN)
        await served.hub.submit(SetTradingPhase(C))  # the operator opens early
        seq = served.hub.service.last_seq
        await driver.take(opening)
        await driver.take(morning)
        assert served.hub.service.last_seq == seq  # already done: nothing sent
        await driver.take(lunch)
        await served.hub.submit(SetTradingPhase(C))  # the operator ends the break early
        seq = served.hub.service.last_seq
        await driver.take(afternoon)
        assert served.hub.service.last_seq == seq
        await driver.take(close)
        await driver.take(settle)
        state = await served.hub.read(lambda service: service.day_state())
        assert (state.day_open, state.settled) == (False, True)
        seq = served.hub.service.last_seq
        await driver.take(settle)
        assert served.hub.service.last_seq == seq  # settled once
    finally:
        await stop_served(served)
    records = journalled_fast(tmp_path / "data")
    assert day_commands(records) == [StartDay(DAY), SetTradingPhase(C), SetTradingPhase(B), SetTradingPhase(C),
                                     SetTradingPhase(P), EndDay()]


def journalled_fast(data_dir: Path) -> list[Applied]:
    journal = FileJournal(data_dir / "commands.journal")
    records = [Applied(r.seq, r.ts_ns, "", decode_command(r.payload), []) for r in journal.records()]
    journal.close()
    return records


@pytest.mark.parametrize("day, code, said", [
    ("2026-12-05", 510, "2026-12-05 is a Saturday: A start-of-day named a day of the calendar's weekend ([calendar] weekend)"),
    ("2026-12-06", 510, "2026-12-06 is a Sunday"),
    ("2026-12-08", 511, "2026-12-08 is a Tuesday: A start-of-day named a holiday of the calendar ([calendar] holidays)"),
])
async def test_the_operator_api_refuses_a_weekend_or_a_holiday_naming_the_calendar(
    tmp_path: Path, http: aiohttp.ClientSession, day: str, code: int, said: str,
) -> None:
    calendar = msgspec.structs.replace(fast_config().calendar, holidays=["2026-12-08"])
    served = await start_served(tmp_path / "data", config=msgspec.structs.replace(fast_config(), calendar=calendar))
    try:
        headers = {"Authorization": f"Bearer {served.tokens['clearing']}"}
        async with http.post(served.url + "/clearing/start-of-day", json={"trading_day": day}, headers=headers) as response:
            body = await response.json()
        assert (response.status, body["code"], body["field"]) == (409, code, "trading_day")
        assert body["error"].startswith(said), body
        assert served.hub.service.trading_day == ""  # nothing opened
        await call(http, served.url, served.tokens["clearing"], "POST", "/clearing/start-of-day", {"trading_day": DAY})
    finally:
        await stop_served(served)
