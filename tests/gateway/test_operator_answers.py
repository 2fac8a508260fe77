"""Clean answers from the operator API: 404 for a member that does not exist and for a day
in a path that is no date (a body or query naming one stays 400), enums by name in command
answers as in the views (the journal keeps its integers), and a price sent as a number
answered with the two-place hint."""

from __future__ import annotations

import msgspec
import pytest

from exchange.gateway.member import wire
from exchange.gateway.operator.api import events_body
from exchange.model.enums import CancelReason, CommandName, MemberKind, MemberStatus, TradingPhase
from exchange.model.events import CommandRejected, MemberRegistered, MemberStatusChanged, OrderCancelled, TradingPhaseChanged
from exchange.model.rejects import RejectReason
from tests.gateway.conftest import call_as as call
from tests.gateway.conftest import logged_on, order


@pytest.mark.asyncio
async def test_an_unknown_member_is_404_everywhere(served, http) -> None:
    for method, path in (("GET", "/members/NOBODY/credentials"), ("POST", "/members/NOBODY/credentials"),
                         ("DELETE", "/members/NOBODY/credentials/0000000000000000"),
                         ("POST", "/members/NOBODY/kill")):
        answer = await call(http, served, "admin", method, path, status=404)
        assert answer["error"], (path, answer)
    answer = await call(http, served, "admin", "POST", "/members/NOBODY/status", {"status": "frozen"}, status=404)
    assert answer["code"] == RejectReason.UNKNOWN_MEMBER


@pytest.mark.asyncio
async def test_an_impossible_day_in_a_path_is_404_and_in_a_query_400(served, http) -> None:
    for role, path in (("regulator", "/regulator/trades/2026-13-45"), ("clearing", "/clearing/statements/2026-13-45"),
                       ("clearing", "/clearing/statements/2026-02-30/settlement-report.json")):
        answer = await call(http, served, role, "GET", path, status=404)
        assert answer["field"] == "trading_day" and answer["error"].startswith("no such day: "), answer
        assert "not a date on the calendar" in answer["error"]
    answer = await call(http, served, "regulator", "GET", "/regulator/positions?trading_day=2026-02-30", status=400)
    assert answer["field"] == "trading_day"


@pytest.mark.asyncio
async def test_command_answers_name_their_enums_as_the_views_do(served, http) -> None:
    registered = await call(http, served, "admin", "POST", "/members", {"member_id": "EN1", "kind": "covered"})
    assert registered["events"][0]["kind"] == "covered"
    changed = await call(http, served, "admin", "POST", "/members/EN1/status", {"status": "suspended"})
    assert changed["events"][0]["status"] == "suspended"
    [view] = await call(http, served, "admin", "GET", "/members")
    assert (view["kind"], view["status"]) == ("covered", "suspended")
    await call(http, served, "clearing", "POST", "/clearing/start-of-day", {"trading_day": "2026-01-05"})
    phase = await call(http, served, "admin", "POST", "/market/phase", {"phase": "continuous"})
    assert [e["phase"] for e in phase["events"] if e["event"] == "TradingPhaseChanged"] == ["continuous"]


def test_every_enum_in_an_event_is_named() -> None:
    events = [
        MemberRegistered("M1", MemberKind.VOLUNTARY, 0, "", 5),
        MemberStatusChanged("M1", MemberStatus.FROZEN, True),
        TradingPhaseChanged(TradingPhase.BREAK),
        CommandRejected(CommandName.REGISTER_MEMBER, RejectReason.MEMBER_ALREADY_REGISTERED, "M1"),
        OrderCancelled(7, "M1", "CEA-2025", 10, CancelReason.DAY_VOIDED),
    ]
    bodies = events_body(events).events
    assert (bodies[0]["kind"], bodies[1]["status"], bodies[2]["phase"]) == ("voluntary", "frozen", "break")
    assert (bodies[3]["command"], bodies[3]["reason"]) == (str(CommandName.REGISTER_MEMBER), "member_already_registered")
    assert bodies[4]["reason"] == "day_voided"
    for event, body in zip(events, bodies, strict=True):  # the same shape as to_builtins, but names
        assert set(body) == {"event", *msgspec.to_builtins(event)}


@pytest.mark.parametrize("price", ["58.2", "5820", "null", "[58]"])
def test_a_price_that_is_no_string_gets_the_hint(price: str) -> None:
    frame = '{"type":"new_order","client_order_id":"x","instrument":"CEA-2025","side":"buy","qty":1,"price":' + price + "}"
    with pytest.raises(wire.WireError) as raised:
        wire.decode_inbound(frame.encode())
    assert (raised.value.field, raised.value.problem) == ("price", 'prices are strings with two decimal places, e.g. "58.20"')


@pytest.mark.asyncio
async def test_a_float_price_over_the_websocket_gets_the_hint(served, http) -> None:
    member = await logged_on(http, served, await served.add_member("M1"))
    frame = order("c1", "buy", 1, "58.20")
    frame["price"] = 58.2
    await member.send(frame)
    error = await member.expect("error")
    assert (error["field"], error["problem"]) == ("price", 'prices are strings with two decimal places, e.g. "58.20"'), error
