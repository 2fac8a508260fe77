"""The session schedule: phases at their times in exchange time, none on a holiday."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from exchange.model import TradingPhase
from exchange.risk.schedule import SessionSchedule

CHINA = timezone(timedelta(hours=8))


def local(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, CHINA).strftime("%H:%M")


def test_a_trading_day_has_the_two_sessions() -> None:
    changes = SessionSchedule().transitions(date(2026, 11, 23))
    assert [(local(ts), phase) for ts, phase in changes] == [
        ("09:30", TradingPhase.CONTINUOUS), ("11:30", TradingPhase.BREAK),
        ("13:00", TradingPhase.CONTINUOUS), ("15:00", TradingPhase.POST_CLOSE),
    ]
    assert SessionSchedule().trading_seconds() == 4 * 3600


def test_weekends_and_holidays_have_no_sessions() -> None:
    schedule = SessionSchedule(holidays=["2026-12-31"])
    assert schedule.transitions(date(2026, 11, 21)) == []  # a Saturday
    assert schedule.transitions(date(2026, 12, 31)) == []
    assert schedule.next_trading_day(date(2026, 12, 30)) == date(2027, 1, 1)
    assert schedule.next_trading_day(date(2026, 11, 20)) == date(2026, 11, 23)


@pytest.mark.parametrize(
    "sessions",
    [[], [("11:30", "09:30")], [("09:30", "11:30"), ("11:00", "15:00")]],
)
def test_bad_sessions_are_refused(sessions) -> None:
    with pytest.raises(ValueError):
        SessionSchedule(sessions=sessions)
