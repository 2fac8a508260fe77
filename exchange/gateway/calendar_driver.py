"""The calendar driver: ``exchange serve`` runs the trading day by the configured calendar.

``docs/trading-day.md`` is the operator's account; this is the design.

At each step of the day (:meth:`exchange.risk.schedule.SessionSchedule.steps`: start of day
before the open, each session's open and end, the close, settlement after it) the driver asks
the engine where the day is (the port's ``day_state``, read through the hub) and sends what is
still missing (:func:`exchange.risk.schedule.next_action`), one command at a time, reading the
state again after each. It is an operator of the hub like the operator API, and like the API
it knows the calendar through the configuration (``exchange.config`` hands on the risk room's
pure schedule; the gateway imports no other room).

Decisions:

* **The same path as the operator.** Start of day is :func:`exchange.gateway.trading_day.open_day`,
  the function ``POST /clearing/start-of-day`` calls; phases are ``SetTradingPhase`` through
  ``Hub.submit`` (``POST /market/phase``), end of day ``ExchangePort.end_day`` through
  ``Hub.run`` (``POST /clearing/end-of-day``), settlement ``ExchangePort.settle`` through
  ``Hub.run_blocking`` (``POST /clearing/settlements``). Every change is a journalled command
  in order with the members' orders; replay needs no driver, it replays the journal.
* **State, not memory.** What the driver did before is never consulted: after a restart (or
  a crash between two commands) it reads the engine's state and finishes the latest step that
  is due (catching up: a restart in the lunch break leaves the break as it is, a restart after
  a missed open opens the day late, never after its close). What the operator did counts as
  done: a phase already set is not sent again, a day already opened not opened again.
* **It acts at the steps' times only**, never in between, so the operator's override stands
  until the next step: a session paused by hand stays paused until the calendar's next change,
  a break ended early is not ended again. A refused command is logged and not retried until the
  next step.
* **Time, scaled.** :class:`CalendarClock` gives calendar time: the wall clock, or with
  ``--time-scale N`` the wall clock run N times faster from an anchor (``--calendar-start``,
  else now), so a demo or a test runs a whole day in a minute through this same code. The
  engine keeps stamping commands with the wall clock (its rate limits are per real second); only
  *when* the driver sends a command is scaled. The anchor is kept in the data directory
  (:data:`CLOCK_FILE`), so a scaled day survives a restart like a real one: calendar time went
  on while the server was down. Restarting with another scale or start begins a new anchor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec

from exchange import files
from exchange.gateway.hub import Hub, HubStopped, rejected
from exchange.gateway.trading_day import DayRefused, open_day
from exchange.model.commands import SetTradingPhase
from exchange.config import DayAction, DayStep, SessionSchedule, next_action

log = logging.getLogger("exchange.calendar")

CLOCK_FILE = "calendar-clock.json"
MAX_NAP_S = 30.0  # the wall clock may jump: look again at least this often
MAX_ACTIONS_PER_STEP = 8  # close, end, settle, open, phase: a step never needs more


class CalendarClock:
    """Calendar time in UTC nanoseconds: ``anchor_calendar_ns`` at ``anchor_real_ns`` on the
    wall clock, running ``scale`` times as fast."""

    def __init__(self, scale: float = 1.0, anchor_real_ns: int | None = None, anchor_calendar_ns: int | None = None,
                 real_ns: Callable[[], int] = time.time_ns) -> None:
        assert scale > 0, scale
        self.scale = scale
        self.real_ns = real_ns
        self.anchor_real_ns = real_ns() if anchor_real_ns is None else anchor_real_ns
        self.anchor_calendar_ns = self.anchor_real_ns if anchor_calendar_ns is None else anchor_calendar_ns

    def now_ns(self) -> int:
        return self.anchor_calendar_ns + int((self.real_ns() - self.anchor_real_ns) * self.scale)

    def real_ns_at(self, calendar_ns: int) -> int:
        """The wall-clock moment calendar time reaches ``calendar_ns``."""
        return self.anchor_real_ns + int((calendar_ns - self.anchor_calendar_ns) / self.scale)

    async def sleep_until(self, calendar_ns: int) -> None:
        """Return at ``calendar_ns`` or later, never earlier."""
        while (left_ns := self.real_ns_at(calendar_ns) - self.real_ns()) > 0:
            await asyncio.sleep(min(left_ns / 1e9, MAX_NAP_S))


class ClockAnchor(msgspec.Struct, frozen=True):
    """What :data:`CLOCK_FILE` keeps: the scale and the anchor of a scaled calendar."""

    scale: float
    calendar_start_ns: int
    real_start_ns: int


def calendar_clock(data_dir: Path, scale: float = 1.0, start_ns: int | None = None) -> CalendarClock:
    """The calendar's clock for ``exchange serve``: the wall clock, unless scaled or started
    elsewhere; then the anchor kept in the data directory when it has the same scale (and start,
    if one is given), else a new anchor now."""
    if scale == 1 and start_ns is None:
        return CalendarClock()
    path = data_dir / CLOCK_FILE
    kept = _read_anchor(path)
    if kept is not None and kept.scale == scale and start_ns in (None, kept.calendar_start_ns):
        return CalendarClock(scale, kept.real_start_ns, kept.calendar_start_ns)
    now = time.time_ns()
    anchor = ClockAnchor(scale, now if start_ns is None else start_ns, now)
    files.make_private_dir(data_dir)
    files.write_atomic(path, msgspec.json.encode(anchor))
    return CalendarClock(scale, anchor.real_start_ns, anchor.calendar_start_ns)


def _read_anchor(path: Path) -> ClockAnchor | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=ClockAnchor)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        log.warning("%s is unreadable (%s): the scaled calendar starts again from now", path, error)
        return None


def parse_calendar_start(text: str) -> datetime:
    """``--calendar-start``: a local date and time, ``YYYY-MM-DDTHH:MM`` (argparse's type)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a local date and time (YYYY-MM-DDTHH:MM): {text!r}") from None
    if moment.tzinfo is not None:
        raise ValueError(f"give exchange time without a UTC offset ([calendar] utc_offset_hours says it): {text!r}")
    return moment


def calendar_ns(moment: datetime, utc_offset_hours: int) -> int:
    """A local exchange time as UTC nanoseconds."""
    aware = moment.replace(tzinfo=timezone(timedelta(hours=utc_offset_hours)))
    return int(aware.timestamp()) * 1_000_000_000


class CalendarDriver:
    """Runs the day's steps at their times through the hub (see the module's decisions)."""

    def __init__(self, hub: Hub, schedule: SessionSchedule, clock: CalendarClock) -> None:
        self.hub, self.schedule, self.clock = hub, schedule, clock
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        now = datetime.fromtimestamp(self.clock.now_ns() / 1e9, timezone(timedelta(hours=self.schedule.utc_offset_hours)))
        log.info("calendar: the day runs itself; calendar time %s%s", now.strftime("%Y-%m-%d %H:%M:%S"),
                 f", {self.clock.scale:g} times the wall clock" if self.clock.scale != 1 else "")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="calendar-driver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            step = self.schedule.latest_step(self.clock.now_ns())
            while True:
                if step is not None:
                    await self.take(step)
                upcoming = self.schedule.next_step(self.clock.now_ns())
                if upcoming is None:
                    log.warning("the calendar has no trading day in the coming year: the driver stops")
                    return
                await self.clock.sleep_until(upcoming.at_ns)
                step = self.schedule.latest_step(self.clock.now_ns())  # the latest, had the wait overslept several
        except HubStopped:
            return
        except Exception:
            log.exception("the calendar driver stopped on a bug: the day's steps are the operator's now")

    async def take(self, step: DayStep) -> None:
        """Send what the engine still needs to reach ``step``, one command at a time."""
        done: DayAction | None = None
        for _ in range(MAX_ACTIONS_PER_STEP):
            state = await self.hub.read(lambda service: service.day_state())
            action = next_action(step, state.trading_day, state.day_open, state.phase, state.settled)
            if action is None or action == done:
                return  # nothing left, or the engine refused it: the next step looks again
            await self.perform(action)
            done = action

    async def perform(self, action: DayAction) -> None:
        hub = self.hub
        if action.name == "start_day":
            try:
                await open_day(hub, action.trading_day)
                log.info("calendar: %s opened (start of day)", action.trading_day)
            except DayRefused as refused:
                log.warning("calendar: start of day %s refused: %s", action.trading_day, refused.message)
        elif action.name == "phase":
            assert action.phase is not None
            self._log_refusal((await hub.submit(SetTradingPhase(action.phase))).events, f"phase {action.phase.name.lower()}")
        elif action.name == "end_day":
            self._log_refusal((await hub.run(lambda service: service.end_day())).events, "end of day")
        else:
            assert action.name == "settle", action
            try:
                await hub.run_blocking(lambda service: service.settle(action.trading_day))
                log.info("calendar: %s settled", action.trading_day)
            except HubStopped:
                raise
            except Exception as error:  # noqa: BLE001 - a settlement stop is reported, as the API reports it
                log.warning("calendar: settlement of %s stopped: %s", action.trading_day, error)

    @staticmethod
    def _log_refusal(events: list, what: str) -> None:
        refusal = rejected(events)
        if refusal is None:
            log.info("calendar: %s", what)
        else:
            log.warning("calendar: %s refused (%d): %s", what, int(refusal.reason), refusal.reason.text)
