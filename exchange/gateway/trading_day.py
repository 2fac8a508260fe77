"""The trading day's steps as the hub runs them, for the operator API and the calendar driver.

The clearing house's ``POST /clearing/start-of-day`` and the calendar driver
(:mod:`exchange.gateway.calendar_driver`) open a day the same way, through :func:`open_day`, so a day
the driver opens is opened exactly as one the operator opens: every member's registry
account checked first, then ``StartDay`` and the holdings load in one job of the hub.

Decisions:

* **Refusals are one exception** (:class:`DayRefused`), carrying the sentence for the
  operator, the field it is about and the exchange's reject code when the engine refused;
  the API turns it into a 409, the driver into a log line.
* **A day the calendar does not trade names the calendar**: the engine's reject (510 weekend,
  511 holiday) with the date and its weekday, e.g. "2026-12-05 is a Saturday: ...".
* **The registry is asked before the day opens**: the holdings load runs after ``StartDay``
  is journalled, so a registry refusal there would leave the day half-opened; asked first,
  it is a refusal and nothing changes.
"""

from __future__ import annotations

from datetime import date

from exchange.gateway.hub import Hub, rejected
from exchange.model.rejects import RejectReason
from exchange.model.stream import Applied


class DayRefused(Exception):
    """The day's step was refused; ``message`` says why, for the operator."""

    def __init__(self, message: str, field: str | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.code = message, field, code


CALENDAR_REFUSALS = (RejectReason.DAY_IS_WEEKEND, RejectReason.DAY_IS_HOLIDAY)


async def open_day(hub: Hub, trading_day: str) -> list[Applied]:
    """Open ``trading_day`` (a valid ISO date) and load every member's holdings from the
    registry; the records. :class:`DayRefused` if the registry or the engine refuses."""
    refusal = await hub.read(lambda service: service.registry_refusal())
    if refusal is not None:
        raise DayRefused(f"the registry cannot give {refusal.member_id}'s holdings: {refusal.problem}", "member_id")
    records = await hub.run(lambda service: service.start_day(trading_day))
    reject = rejected(records[0].events)
    if reject is not None:
        raise DayRefused(refusal_text(reject.reason, trading_day), "trading_day", int(reject.reason))
    return records


def refusal_text(reason: RejectReason, trading_day: str) -> str:
    """The reject's text; for a day the calendar does not trade, led by the date and its weekday."""
    if reason in CALENDAR_REFUSALS:
        return f"{trading_day} is a {date.fromisoformat(trading_day).strftime('%A')}: {reason.text}"
    return reason.text
