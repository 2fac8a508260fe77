"""The day that runs itself, in pieces: the calendar's steps, what a step still needs given the
engine's state (the driver's whole decision, table-driven), the engine refusing a day the
calendar does not trade, and the scaled clock with its anchor kept across a restart.
The served process is tests/gateway/test_served_calendar.py."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from exchange.app import build_core
from exchange.config import CalendarConfig, Config, ConfigError, parse_config
from exchange.engine import Engine, MemoryJournal
from exchange.gateway.calendar_driver import CLOCK_FILE, CalendarClock, calendar_clock, calendar_ns, parse_calendar_start
from exchange.model import CommandRejected, RejectReason, StartDay, TradingPhase
from exchange.risk.schedule import DayAction, DayStep, SessionSchedule, StepKind, next_action

CHINA = timezone(timedelta(hours=8))
C, B, P, PRE = TradingPhase.CONTINUOUS, TradingPhase.BREAK, TradingPhase.POST_CLOSE, TradingPhase.PRE_OPEN
MONDAY, FRIDAY, SATURDAY = date(2026, 12, 7), date(2026, 12, 4), date(2026, 12, 5)


def at(day: date, clock: str) -> int:
    """Local exchange time (UTC+8) as UTC nanoseconds."""
    return calendar_ns(datetime.fromisoformat(f"{day.isoformat()}T{clock}"), 8)


def local(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, CHINA).strftime("%a %H:%M")


# -- the calendar's steps ------------------------------------------------------------------------


def test_a_trading_day_has_its_steps_at_the_configured_times() -> None:
    steps = SessionSchedule().steps(MONDAY)
    assert [(local(s.at_ns), s.kind, s.phase, s.session) for s in steps] == [
        ("Mon 09:15", StepKind.START_OF_DAY, None, 0),
        ("Mon 09:30", StepKind.PHASE, C, 0), ("Mon 11:30", StepKind.PHASE, B, 0), ("Mon 13:00", StepKind.PHASE, C, 1),
        ("Mon 15:00", StepKind.CLOSE, None, 1),
        ("Mon 15:30", StepKind.SETTLE, None, 1),
    ]
    assert {s.trading_day for s in steps} == {"2026-12-07"}
    shifted = SessionSchedule(start_of_day_lead_minutes=60, settle_delay_minutes=5).steps(MONDAY)
    assert (local(shifted[0].at_ns), local(shifted[-1].at_ns)) == ("Mon 08:30", "Mon 15:05")


def test_weekends_and_holidays_have_no_steps_and_the_weekend_is_configurable() -> None:
    schedule = SessionSchedule(holidays=["2026-12-08"])
    assert schedule.steps(SATURDAY) == [] and schedule.steps(date(2026, 12, 8)) == []
    assert (schedule.why_not_trading(SATURDAY), schedule.why_not_trading(date(2026, 12, 8))) == ("weekend", "holiday")
    assert schedule.why_not_trading(MONDAY) is None
    gulf = SessionSchedule(weekend=["friday", "saturday"])
    assert gulf.steps(FRIDAY) == [] and gulf.steps(date(2026, 12, 6)) != []  # Sunday trades


def test_the_latest_and_next_steps_reach_across_weekends_and_holidays() -> None:
    schedule = SessionSchedule(holidays=["2026-12-07"])
    latest = schedule.latest_step(at(SATURDAY, "10:00"))
    assert latest is not None and (latest.trading_day, latest.kind) == ("2026-12-04", StepKind.SETTLE)
    upcoming = schedule.next_step(at(FRIDAY, "16:00"))
    assert upcoming is not None and (upcoming.trading_day, local(upcoming.at_ns)) == ("2026-12-08", "Tue 09:15")
    assert schedule.next_step(at(MONDAY, "08:00")) == upcoming  # the holiday Monday is skipped
    during = schedule.latest_step(at(FRIDAY, "12:00"))
    assert during is not None and (during.kind, during.phase) == (StepKind.PHASE, B)
    assert schedule.latest_step(at(FRIDAY, "11:30")) == during  # a step is due at its very moment


@pytest.mark.parametrize("calendar, problem", [
    ('weekend = ["caturday"]', "weekend names days of the week"),
    ('weekend = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]', "leaves one to trade"),
    ('sessions = [["00:10", "11:30"]]', "same calendar day"),
    ('sessions = [["09:30", "23:50"]]', "same calendar day"),
    ("start_of_day_lead_minutes = -1", "start_of_day_lead_minutes"),
])
def test_a_bad_calendar_is_a_configuration_error_naming_it(calendar: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(f"[calendar]\n{calendar}\n")


def test_the_calendar_keys_reach_the_schedule() -> None:
    config = parse_config('[calendar]\nweekend = ["sunday"]\nholidays = ["2026-12-08"]\nautomatic = false\n'
                          "start_of_day_lead_minutes = 20\nsettle_delay_minutes = 45\n")
    schedule = config.calendar.schedule()
    assert config.calendar.automatic is False and CalendarConfig().automatic is True
    assert (schedule.weekend, schedule.holidays, schedule.start_of_day_lead_minutes, schedule.settle_delay_minutes) == (
        ["sunday"], ["2026-12-08"], 20, 45)
    assert schedule.is_trading_day(SATURDAY)


# -- what a step still needs, from the engine's state alone ---------------------------------------

DAY, BEFORE, LATER = "2026-12-07", "2026-12-04", "2026-12-08"


def step(kind: StepKind, phase: TradingPhase | None = None, session: int = 0) -> DayStep:
    return DayStep(0, DAY, kind, phase, session)


SOD, OPEN_1, BREAK_1 = step(StepKind.START_OF_DAY), step(StepKind.PHASE, C), step(StepKind.PHASE, B)
OPEN_2 = step(StepKind.PHASE, C, 1)
CLOSE, SETTLE = step(StepKind.CLOSE), step(StepKind.SETTLE)
START, SETTLE_BEFORE = DayAction("start_day", DAY), DayAction("settle", BEFORE)
TO_C, TO_B, TO_P, END = DayAction("phase", phase=C), DayAction("phase", phase=B), DayAction("phase", phase=P), DayAction("end_day")

# (the step, the engine: trading day, open, phase, settled) -> what to send next
ACTIONS = [
    # start of day
    (SOD, ("", False, P, False), START, "the first day ever"),
    (SOD, (BEFORE, False, P, True), START, "yesterday settled"),
    (SOD, (BEFORE, False, P, False), SETTLE_BEFORE, "yesterday ended, not settled: settle it first"),
    (SOD, (BEFORE, True, C, False), TO_P, "yesterday still open: end it first"),
    (SOD, (BEFORE, True, P, False), END, "yesterday in post-close: end it"),
    (SOD, (DAY, True, PRE, False), None, "the operator opened it already"),
    (SOD, (DAY, False, P, True), None, "already ended and settled: never opened twice"),
    (SOD, (LATER, True, PRE, False), None, "the operator opened a later day: theirs"),
    # phases
    (OPEN_1, (DAY, True, PRE, False), TO_C, "the open"),
    (OPEN_1, (DAY, True, C, False), None, "the operator opened early: not sent again"),
    (OPEN_1, (DAY, True, B, False), None, "the operator paused the session: not fought"),
    (OPEN_1, (BEFORE, False, P, True), START, "a restart after a missed start of day: open late"),
    (BREAK_1, (DAY, True, C, False), TO_B, "the break"),
    (OPEN_2, (DAY, True, B, False), TO_C, "the afternoon session"),
    (OPEN_2, (DAY, True, PRE, False), TO_C, "the afternoon session of a day opened in the break"),
    (OPEN_2, (DAY, True, C, False), None, "the operator ended the break early: not sent again"),
    (BREAK_1, (DAY, True, B, False), None, "a restart in the break: nothing"),
    (BREAK_1, (DAY, True, PRE, False), None, "opened late in the break: wait for the next session"),
    (BREAK_1, (DAY, True, P, False), None, "the operator closed early: never taken back"),
    (BREAK_1, (DAY, False, P, False), None, "the operator ended the day early"),
    # the close and settlement
    (CLOSE, (DAY, True, C, False), TO_P, "the close: post-close first"),
    (CLOSE, (DAY, True, P, False), END, "then end of day"),
    (CLOSE, (DAY, False, P, False), None, "ended: settlement waits for its time"),
    (CLOSE, (BEFORE, False, P, True), None, "a day never opened is not opened after its close"),
    (SETTLE, (DAY, True, B, False), TO_P, "a restart after the close: close first"),
    (SETTLE, (DAY, False, P, False), DayAction("settle", DAY), "settlement"),
    (SETTLE, (DAY, False, P, True), None, "the operator settled already"),
    (SETTLE, (BEFORE, False, P, True), None, "nothing to open after the close"),
]


@pytest.mark.parametrize("the_step, state, expected, why", ACTIONS, ids=[row[3] for row in ACTIONS])
def test_what_a_step_still_needs(the_step: DayStep, state: tuple, expected: DayAction | None, why: str) -> None:
    assert next_action(the_step, *state) == expected, why


def test_following_the_actions_reaches_the_step_from_any_earlier_state() -> None:
    """A toy engine that obeys each action: from yesterday still open mid-session, catching up
    with today's break ends and settles yesterday, then opens today, which waits in pre-open
    (a day opened in the break) for the afternoon session."""
    day, day_open, phase, settled = BEFORE, True, C, False
    sent: list[DayAction] = []
    while (action := next_action(BREAK_1, day, day_open, phase, settled)) is not None and len(sent) < 10:
        sent.append(action)
        if action.phase is not None:
            phase = action.phase
        elif action.name == "end_day":
            day_open = False
        elif action.name == "settle":
            settled = True
        else:
            day, day_open, phase, settled = action.trading_day, True, PRE, False
    assert sent == [TO_P, END, SETTLE_BEFORE, START]
    assert next_action(OPEN_2, day, day_open, phase, settled) == TO_C  # the afternoon session opens it


# -- the engine refuses a day the calendar does not trade -------------------------------------------


def test_start_of_day_on_a_weekend_or_holiday_is_refused_naming_the_calendar() -> None:
    config = Config(calendar=CalendarConfig(holidays=["2026-12-08"]))
    engine = Engine(build_core(config), MemoryJournal(), clock=lambda: 1)
    refusals = []
    for day in ("2026-12-05", "2026-12-06", "2026-12-08"):
        [event] = engine.execute(StartDay(day)).events
        assert isinstance(event, CommandRejected) and event.subject == day
        refusals.append(event.reason)
    assert refusals == [RejectReason.DAY_IS_WEEKEND, RejectReason.DAY_IS_WEEKEND, RejectReason.DAY_IS_HOLIDAY]
    assert "[calendar] weekend" in RejectReason.DAY_IS_WEEKEND.text
    assert "[calendar] holidays" in RejectReason.DAY_IS_HOLIDAY.text
    assert (engine.core.trading_day, engine.core.day_open) == ("", False)
    [opened, *_] = engine.execute(StartDay("2026-12-07")).events
    assert not isinstance(opened, CommandRejected) and engine.core.trading_day == "2026-12-07"


# -- the scaled clock ---------------------------------------------------------------------------------


def test_a_scaled_clock_runs_faster_from_its_anchor() -> None:
    real = [1_000 * 10**9]
    clock = CalendarClock(60, anchor_real_ns=real[0], anchor_calendar_ns=at(MONDAY, "09:00"), real_ns=lambda: real[0])
    assert local(clock.now_ns()) == "Mon 09:00"
    real[0] += 60 * 10**9  # a real minute is a calendar hour
    assert local(clock.now_ns()) == "Mon 10:00"
    assert clock.real_ns_at(at(MONDAY, "11:00")) == real[0] + 60 * 10**9


@pytest.mark.asyncio
async def test_sleeping_until_a_calendar_moment_never_wakes_early() -> None:
    clock = CalendarClock(10_000)
    target = clock.now_ns() + 2_000 * 10**9  # 2,000 calendar seconds: 0.2 real seconds
    await asyncio.wait_for(clock.sleep_until(target), timeout=60)
    assert clock.now_ns() >= target


def test_the_anchor_is_kept_across_a_restart_with_the_same_scale_and_start(tmp_path: Path) -> None:
    start = at(MONDAY, "09:00")
    first = calendar_clock(tmp_path, 300, start)
    kept = msgspec.json.decode((tmp_path / CLOCK_FILE).read_bytes())
    assert kept["scale"] == 300 and kept["calendar_start_ns"] == start
    again = calendar_clock(tmp_path, 300, start)
    assert (again.anchor_real_ns, again.anchor_calendar_ns) == (first.anchor_real_ns, start)
    same_without_start = calendar_clock(tmp_path, 300)
    assert same_without_start.anchor_real_ns == first.anchor_real_ns
    other = calendar_clock(tmp_path, 600, start)  # another scale: a new timeline
    assert other.anchor_real_ns >= first.anchor_real_ns and other.scale == 600
    assert msgspec.json.decode((tmp_path / CLOCK_FILE).read_bytes())["scale"] == 600
    wall = calendar_clock(tmp_path / "unscaled")
    assert wall.scale == 1 and not (tmp_path / "unscaled").exists()  # the wall clock keeps no file


def test_the_calendar_start_is_a_local_time_without_an_offset() -> None:
    assert parse_calendar_start("2026-12-07T09:15") == datetime(2026, 12, 7, 9, 15)
    for text in ("tomorrow", "2026-12-07T09:15+08:00"):
        with pytest.raises(ValueError):
            parse_calendar_start(text)


@pytest.mark.parametrize("arguments, named", [
    (["--time-scale", "0"], "--time-scale"),
    (["--time-scale", "fast"], "--time-scale"),
    (["--calendar-start", "monday"], "--calendar-start"),
])
def test_a_bad_time_scale_or_calendar_start_is_one_line_from_the_command_line(
    arguments: list[str], named: str, capsys: pytest.CaptureFixture[str],
) -> None:
    from exchange.serve import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", *arguments])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exited.value.code == 2 and f"argument {named}:" in error and "Traceback" not in error


def test_serve_runs_the_calendar_unless_the_configuration_leaves_it_to_the_operators(tmp_path: Path) -> None:
    import argparse

    from exchange.serve import _calendar_clock

    args = argparse.Namespace(time_scale=300.0, calendar_start=datetime(2026, 12, 7, 9, 0))
    clock = _calendar_clock(args, Config(), tmp_path)
    assert clock is not None and clock.scale == 300 and local(clock.anchor_calendar_ns) == "Mon 09:00"
    manual = Config(calendar=CalendarConfig(automatic=False))
    assert _calendar_clock(args, manual, tmp_path / "manual") is None
