"""The session schedule: which trading phase a moment belongs to, from a calendar.

Pure: it reads no clock. The shell asks it, for a moment it supplies, which step of the
trading day is due and what that step still needs doing given the engine's state; the
shell sends the commands, which then live in the journal like any other command. Times are
local exchange time (China, UTC+8 by default).

Decisions:

* **A day is a list of steps** (:meth:`SessionSchedule.steps`): start of day
  ``start_of_day_lead_minutes`` before the first session opens, each session's open and end
  (a break between sessions, post-close after the last), the close (end of day, at the last
  session's end) and settlement ``settle_delay_minutes`` after it. A weekend or holiday has
  none. Every step lies inside its calendar day (checked when the schedule is built), so a
  day's steps never mix with the next day's.
* **What a step still needs is decided from the engine's state alone**
  (:func:`next_action`): the trading day, whether it is open, its phase and whether it is
  settled. The driver asks after every action, so a crash between two commands is picked up
  where the journal left it, and the operator's own commands count as done: a phase the
  operator already set is not sent again, a day already opened is not opened again.
* **It only moves the day forward**, at a step's time: it never takes a phase back, never
  opens a day after its close (a day the exchange was down for stays closed), and never
  touches a day later than the step's (the operator opened it). A day still open from an
  earlier date is ended and settled before the next one opens: start of day loads the
  holdings that settlement leaves in the registry.
"""

from __future__ import annotations

import enum
from datetime import date, timedelta

import msgspec

from exchange.model.enums import TradingPhase

NS_PER_S = 1_000_000_000
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
LOOK_AROUND_DAYS = 400  # how far a search for the previous or next step goes (a year of holidays)


def _seconds(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class StepKind(enum.IntEnum):
    """A step of the trading day, in the day's order."""

    START_OF_DAY = 1
    PHASE = 2  # a session opens or ends
    CLOSE = 3  # end of day
    SETTLE = 4


class DayStep(msgspec.Struct, frozen=True):
    at_ns: int  # UTC nanoseconds
    trading_day: str
    kind: StepKind
    phase: TradingPhase | None = None  # for a PHASE step
    session: int = 0  # the session it opens or ends, from 0 (the last session for the close and after)


class DayAction(msgspec.Struct, frozen=True):
    """One command the driver sends: ``start_day``, ``phase``, ``end_day`` or ``settle``."""

    name: str
    trading_day: str = ""
    phase: TradingPhase | None = None


class SessionSchedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Continuous sessions of a trading day and the days that are not trading days."""

    sessions: list[tuple[str, str]] = msgspec.field(default_factory=lambda: [("09:30", "11:30"), ("13:00", "15:00")])
    holidays: list[str] = msgspec.field(default_factory=list)  # ISO dates
    utc_offset_hours: int = 8
    weekend: list[str] = msgspec.field(default_factory=lambda: ["saturday", "sunday"])
    start_of_day_lead_minutes: int = 15
    settle_delay_minutes: int = 30

    def __post_init__(self) -> None:
        bounds = [_seconds(t) for session in self.sessions for t in session]
        if not self.sessions or bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("sessions must be ordered, non-empty and not overlap")
        for holiday in self.holidays:
            date.fromisoformat(holiday)
        unknown = [day for day in self.weekend if day not in WEEKDAYS]
        if unknown or len(self.weekend) >= len(WEEKDAYS):
            raise ValueError(f"weekend names days of the week ({', '.join(WEEKDAYS)}) and leaves one to trade")
        if bounds[0] - self.start_of_day_lead_minutes * 60 < 0 or bounds[-1] + self.settle_delay_minutes * 60 >= 86_400:
            raise ValueError("start of day and settlement must fall on the same calendar day as the sessions")

    def is_trading_day(self, day: date) -> bool:
        return WEEKDAYS[day.weekday()] not in self.weekend and day.isoformat() not in self.holidays

    def why_not_trading(self, day: date) -> str | None:
        """``weekend`` or ``holiday`` for a day the calendar does not trade; None for a trading day."""
        if WEEKDAYS[day.weekday()] in self.weekend:
            return "weekend"
        return "holiday" if day.isoformat() in self.holidays else None

    def next_trading_day(self, day: date) -> date:
        day += timedelta(days=1)
        while not self.is_trading_day(day):
            day += timedelta(days=1)
        return day

    def midnight_ns(self, day: date) -> int:
        """The start of ``day`` in exchange time, as UTC nanoseconds."""
        return ((day - date(1970, 1, 1)).days * 86_400 - self.utc_offset_hours * 3600) * NS_PER_S

    def local_date(self, ts_ns: int) -> date:
        """The calendar date at ``ts_ns`` in exchange time."""
        return date(1970, 1, 1) + timedelta(days=(ts_ns // NS_PER_S + self.utc_offset_hours * 3600) // 86_400)

    def transitions(self, day: date) -> list[tuple[int, TradingPhase]]:
        """The day's phase changes as (UTC nanoseconds, phase); none on a non-trading day."""
        if not self.is_trading_day(day):
            return []
        midnight_ns = self.midnight_ns(day)
        changes: list[tuple[int, TradingPhase]] = []
        for number, (start, end) in enumerate(self.sessions):
            changes.append((midnight_ns + _seconds(start) * NS_PER_S, TradingPhase.CONTINUOUS))
            last = number == len(self.sessions) - 1
            changes.append((midnight_ns + _seconds(end) * NS_PER_S, TradingPhase.POST_CLOSE if last else TradingPhase.BREAK))
        return changes

    def steps(self, day: date) -> list[DayStep]:
        """The day's steps in time order (the close and post-close share their moment; the
        close is the step, post-close is part of it); none on a non-trading day."""
        changes = self.transitions(day)
        if not changes:
            return []
        name = day.isoformat()
        first_ns, close_ns = changes[0][0], changes[-1][0]
        last = len(self.sessions) - 1
        steps = [DayStep(first_ns - self.start_of_day_lead_minutes * 60 * NS_PER_S, name, StepKind.START_OF_DAY)]
        steps += [DayStep(at_ns, name, StepKind.PHASE, phase, number // 2) for number, (at_ns, phase) in enumerate(changes[:-1])]
        steps.append(DayStep(close_ns, name, StepKind.CLOSE, session=last))
        steps.append(DayStep(close_ns + self.settle_delay_minutes * 60 * NS_PER_S, name, StepKind.SETTLE, session=last))
        return steps

    def latest_step(self, now_ns: int) -> DayStep | None:
        """The last step at or before ``now_ns`` (on this or an earlier trading day)."""
        day = self.local_date(now_ns)
        for _ in range(LOOK_AROUND_DAYS):
            due = [step for step in self.steps(day) if step.at_ns <= now_ns]
            if due:
                return due[-1]
            day -= timedelta(days=1)
        return None

    def next_step(self, now_ns: int) -> DayStep | None:
        """The first step after ``now_ns``."""
        day = self.local_date(now_ns)
        for _ in range(LOOK_AROUND_DAYS):
            later = [step for step in self.steps(day) if step.at_ns > now_ns]
            if later:
                return later[0]
            day += timedelta(days=1)
        return None

    def trading_seconds(self) -> int:
        return sum(_seconds(end) - _seconds(start) for start, end in self.sessions)


def next_action(step: DayStep, trading_day: str, day_open: bool, phase: TradingPhase, settled: bool) -> DayAction | None:
    """What the engine still needs to reach ``step``, given its trading day (``""`` before
    the first), whether that day is open, its phase and whether it is settled; None when
    there is nothing (left) to do. The caller sends the action, reads the state again and
    asks again, until None (or the same action twice: it was refused)."""
    day = step.trading_day
    if trading_day > day:
        return None  # the operator opened a later day: it is theirs
    if trading_day < day:
        return _finish_earlier_day(step, trading_day, day_open, phase, settled)
    if step.kind == StepKind.START_OF_DAY:
        return None
    if step.kind == StepKind.PHASE:
        assert step.phase is not None
        return _phase_action(step.phase, step.session, day_open, phase)
    if day_open:
        return _close_action(phase)
    if step.kind == StepKind.SETTLE and not settled:
        return DayAction("settle", day)
    return None


def _finish_earlier_day(step: DayStep, trading_day: str, day_open: bool, phase: TradingPhase, settled: bool) -> DayAction | None:
    """The engine is on an earlier day than the step: end and settle it, then open the step's
    day if the step is before its close."""
    if day_open:
        return _close_action(phase)
    if trading_day and not settled:
        return DayAction("settle", trading_day)
    if step.kind in (StepKind.START_OF_DAY, StepKind.PHASE):
        return DayAction("start_day", step.trading_day)
    return None


def _phase_action(target: TradingPhase, session: int, day_open: bool, phase: TradingPhase) -> DayAction | None:
    if not day_open or phase in (target, TradingPhase.POST_CLOSE):
        return None
    if target == TradingPhase.BREAK and phase == TradingPhase.PRE_OPEN:
        return None  # a day opened late, in the break: it waits for the next session
    if target == TradingPhase.CONTINUOUS and phase == TradingPhase.BREAK and session == 0:
        return None  # a break before the first session's open is the operator's pause: theirs
    return DayAction("phase", phase=target)


def _close_action(phase: TradingPhase) -> DayAction:
    if phase != TradingPhase.POST_CLOSE:
        return DayAction("phase", phase=TradingPhase.POST_CLOSE)
    return DayAction("end_day")
