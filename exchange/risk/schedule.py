"""The session schedule: which trading phase a moment belongs to, from a calendar.

Pure: it reads no clock. The shell asks it, for the time the engine stamps, which
``SetTradingPhase`` commands are due and sends them; the phases then live in the journal like
any other command. Times are local exchange time (China, UTC+8 by default).
"""

from __future__ import annotations

from datetime import date, timedelta

import msgspec

from exchange.model.enums import TradingPhase

NS_PER_S = 1_000_000_000


def _seconds(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class SessionSchedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Continuous sessions of a trading day and the days that are not trading days."""

    sessions: list[tuple[str, str]] = msgspec.field(default_factory=lambda: [("09:30", "11:30"), ("13:00", "15:00")])
    holidays: list[str] = msgspec.field(default_factory=list)  # ISO dates
    utc_offset_hours: int = 8

    def __post_init__(self) -> None:
        bounds = [_seconds(t) for session in self.sessions for t in session]
        if not self.sessions or bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("sessions must be ordered, non-empty and not overlap")
        for holiday in self.holidays:
            date.fromisoformat(holiday)

    def is_trading_day(self, day: date) -> bool:
        return day.weekday() < 5 and day.isoformat() not in self.holidays

    def next_trading_day(self, day: date) -> date:
        day += timedelta(days=1)
        while not self.is_trading_day(day):
            day += timedelta(days=1)
        return day

    def transitions(self, day: date) -> list[tuple[int, TradingPhase]]:
        """The day's phase changes as (UTC nanoseconds, phase); none on a non-trading day."""
        if not self.is_trading_day(day):
            return []
        midnight_ns = ((day - date(1970, 1, 1)).days * 86_400 - self.utc_offset_hours * 3600) * NS_PER_S
        changes: list[tuple[int, TradingPhase]] = []
        for number, (start, end) in enumerate(self.sessions):
            changes.append((midnight_ns + _seconds(start) * NS_PER_S, TradingPhase.CONTINUOUS))
            last = number == len(self.sessions) - 1
            changes.append((midnight_ns + _seconds(end) * NS_PER_S, TradingPhase.POST_CLOSE if last else TradingPhase.BREAK))
        return changes

    def trading_seconds(self) -> int:
        return sum(_seconds(end) - _seconds(start) for start, end in self.sessions)
