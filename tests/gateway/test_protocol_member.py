"""The member protocol, completed (issue 11), over real WebSockets: ``logout`` (answered, then
closed; cancel-on-disconnect applies to it as to a disconnect), a distinct ``cancel_reason``
for each who-cancelled (cancel-on-disconnect, the dead-man timer, the kill switch, the
exchange), the ``mass_cancel_report`` answer (some cancelled, nothing to cancel, an unlisted
instrument), and each instrument's reference price, band and phase in the ``logon_ack`` and
in ``instrument_status`` at the open and on every change. Every wait is on a message or a
condition with a generous timeout, never on elapsed time."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from exchange.engine.engine import decode_command, encode_command
from exchange.model import CancelReason, KillSwitch, MassCancel
from exchange.model.commands import HaltInstrument, SetInstrumentLimits
from tests.gateway.conftest import SYMBOL, logged_on, order

pytestmark = pytest.mark.asyncio
WAIT_S = 20.0
BAND = {"reference_price": "58.20", "lower_limit": "52.38", "upper_limit": "64.02"}  # the default market: +-10 %


async def until(condition, what: str) -> None:
    for _ in range(int(WAIT_S / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def resting(member, *client_order_ids: str) -> None:
    for client_order_id in client_order_ids:
        await member.send(order(client_order_id, "buy", 10, "58.00"))
        report = await member.expect("execution_report", timeout=WAIT_S)
        assert (report["client_order_id"], report["exec_type"]) == (client_order_id, "new"), report


async def cancel_reasons(member, count: int) -> list[str]:
    reports = [await member.expect("execution_report", timeout=WAIT_S) for _ in range(count)]
    assert all(r["exec_type"] == "canceled" for r in reports), reports
    return [r["cancel_reason"] for r in reports]


# -- logout ----------------------------------------------------------------------------------------


async def test_a_logout_cancels_like_a_disconnect_then_answers_logged_out_and_closes(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)  # cancel_on_disconnect: the default, true
    await resting(member, "a", "b")
    await member.send({"type": "logout"})
    assert await cancel_reasons(member, 2) == ["cancel_on_disconnect", "cancel_on_disconnect"]
    closing = await member.expect("session_closing", timeout=WAIT_S)
    assert closing["reason"] == "logged_out"
    assert await member.receive(WAIT_S) is None  # the server closed the connection
    assert served.hub.tracker.open_orders("M1") == [] and member.gaps == []


async def test_an_order_sent_just_before_the_logout_is_cancelled_too(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await member.send(order("late", "buy", 10, "58.00"))
    await member.send({"type": "logout"})
    await member.send(order("after", "buy", 10, "58.00"))  # not read: the session ended
    closing = await member.expect("session_closing", timeout=WAIT_S)
    assert closing["reason"] == "logged_out"
    reports = [m for m in member.received if m["type"] == "execution_report"]
    assert [(r["client_order_id"], r["exec_type"]) for r in reports] == [("late", "new"), ("late", "canceled")]
    assert served.hub.tracker.lookup_client_order("M1", "after") is None


async def test_a_logout_without_cancel_on_disconnect_leaves_the_orders(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key, cancel_on_disconnect=False)
    await resting(member, "a")
    await member.send({"type": "logout"})
    assert (await member.expect("session_closing", timeout=WAIT_S))["reason"] == "logged_out"
    assert await member.receive(WAIT_S) is None
    assert [o.client_order_id for o in served.hub.tracker.open_orders("M1")] == ["a"]
    assert not [m for m in member.received if m["type"] == "execution_report" and m["exec_type"] == "canceled"]


async def test_a_logout_with_another_session_still_on_cancels_nothing(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    leaving, staying = await logged_on(http, served, key), await logged_on(http, served, key)
    await resting(leaving, "a")
    await leaving.send({"type": "logout"})
    assert (await leaving.expect("session_closing", timeout=WAIT_S))["reason"] == "logged_out"
    await until(lambda: len(served.hub.sessions.get("M1", [])) == 1, "the logged-out session is gone")
    assert [o.client_order_id for o in served.hub.tracker.open_orders("M1")] == ["a"]
    await staying.send({"type": "heartbeat"})
    assert not [m for m in await staying.drain() if m["type"] == "execution_report" and m["exec_type"] == "canceled"]


# -- who cancelled ------------------------------------------------------------------------------


async def test_cancel_on_disconnect_says_so(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await resting(member, "a")
    await member.close()
    await until(lambda: not served.hub.tracker.open_orders("M1"), "cancel-on-disconnect ran")
    again = await logged_on(http, served, key)
    await again.send({"type": "order_status", "client_order_id": "a"})
    status = await again.expect("execution_report", timeout=WAIT_S)
    assert (status["ord_status"], status["cancel_reason"]) == ("canceled", "cancel_on_disconnect")


async def test_the_dead_man_timer_says_so(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await resting(member, "a")
    await member.send({"type": "cancel_after", "seconds": 1})
    assert await cancel_reasons(member, 1) == ["dead_man_timer"]


async def test_the_kill_switch_and_the_exchange_say_so(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await resting(member, "a")
    await served.hub.submit(MassCancel("M1", None, CancelReason.EXCHANGE))
    assert await cancel_reasons(member, 1) == ["exchange"]
    await resting(member, "b")
    await served.hub.submit(KillSwitch("M1"))
    assert await cancel_reasons(member, 1) == ["kill_switch"]


async def test_the_members_own_cancels_still_say_member(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await resting(member, "a")
    await member.send({"type": "mass_cancel"})
    assert await cancel_reasons(member, 1) == ["member"]


async def test_old_mass_cancel_records_decode_as_the_members_own() -> None:
    """A journal written before the reason existed holds [tag, member] or [tag, member,
    instrument]: both decode to the member's own mass cancel, as they always meant."""
    assert decode_command(msgspec.msgpack.encode(["MassCancel", "M1", None])) == MassCancel("M1")
    assert decode_command(msgspec.msgpack.encode(["MassCancel", "M1", SYMBOL])) == MassCancel("M1", SYMBOL, CancelReason.MEMBER)
    assert decode_command(msgspec.msgpack.encode(["MassCancel", "M1"])) == MassCancel("M1", None, CancelReason.MEMBER)
    again = MassCancel("M1", None, CancelReason.DEAD_MAN_TIMER)
    assert decode_command(encode_command(again)) == again


# -- the mass_cancel answer ---------------------------------------------------------------------


async def test_mass_cancel_is_answered_with_how_many_it_cancelled_after_their_reports(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await resting(member, "a", "b")
    await member.send({"type": "mass_cancel", "instrument": SYMBOL})
    report = await member.expect("mass_cancel_report", timeout=WAIT_S)
    assert report == {"type": "mass_cancel_report", "instrument": SYMBOL, "cancelled": 2, "reject_code": None,
                      "reject_reason": None, "session_seq": report["session_seq"]}
    before = [m["type"] for m in member.received[-3:]]
    assert before == ["execution_report", "execution_report", "mass_cancel_report"]
    await member.send({"type": "mass_cancel"})  # nothing left: an answer, not an error
    nothing = await member.expect("mass_cancel_report", "error", timeout=WAIT_S)
    assert (nothing["type"], nothing["instrument"], nothing["cancelled"], nothing["reject_code"]) == \
        ("mass_cancel_report", None, 0, None)
    assert member.gaps == []


async def test_mass_cancel_of_an_unlisted_instrument_is_answered_501_without_the_exchange(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await resting(member, "a")
    seq = served.hub.service.last_seq
    await member.send({"type": "mass_cancel", "instrument": "CEA-2099"})
    report = await member.expect("mass_cancel_report", "error", timeout=WAIT_S)
    assert (report["type"], report["instrument"], report["cancelled"], report["reject_code"]) == \
        ("mass_cancel_report", "CEA-2099", 0, 501)
    assert report["reject_reason"] == "The command names an instrument the exchange does not list."
    assert served.hub.service.last_seq == seq, "nothing was journalled"
    assert [o.client_order_id for o in served.hub.tracker.open_orders("M1")] == ["a"]


async def test_the_engines_reject_of_a_mass_cancel_gives_the_same_answer(served) -> None:
    from exchange.gateway.member.orders import mass_cancel_report, unlisted_mass_cancel_report

    await served.add_member("M1")
    applied = await served.hub.submit(MassCancel("M1", "CEA-2099"))
    assert mass_cancel_report("CEA-2099", applied.events) == unlisted_mass_cancel_report("CEA-2099")


# -- instrument status ---------------------------------------------------------------------------


async def test_the_logon_ack_lists_every_instrument_with_its_band_and_phase(served, http) -> None:
    key = await served.add_member("M1")
    before = await logged_on(http, served, key)
    [ack] = [m for m in before.received if m["type"] == "logon_ack"]
    assert [i["instrument"] for i in ack["instruments"]] == served.hub.symbols
    assert all(i["reference_price"] is None and i["lower_limit"] is None for i in ack["instruments"]), "no day yet"
    await served.open_day()
    after = await logged_on(http, served, key)
    [ack] = [m for m in after.received if m["type"] == "logon_ack"]
    status = {i["instrument"]: i for i in ack["instruments"]}[SYMBOL]
    assert status == {"type": "instrument_status", "instrument": SYMBOL, "halted": False, "phase": "continuous",
                      "market_closed": False, **BAND}


async def test_instrument_status_at_the_open_and_on_every_change(served, http) -> None:
    key = await served.add_member("M1")
    member = await logged_on(http, served, key)
    await member.send({"type": "subscribe", "instruments": [SYMBOL]})
    first = await member.expect("instrument_status", timeout=WAIT_S)
    assert (first["phase"], first["reference_price"]) == ("post_close", None)
    await served.open_day()  # start of day (the band), then the open (continuous)
    started = await member.expect("instrument_status", timeout=WAIT_S)
    assert {k: started[k] for k in ("phase", *BAND)} == {"phase": "pre_open", **BAND}
    opened = await member.expect("instrument_status", timeout=WAIT_S)
    assert {k: opened[k] for k in ("phase", *BAND)} == {"phase": "continuous", **BAND}
    await served.hub.submit(SetInstrumentLimits(SYMBOL, band_bps=500))  # the band narrows to +-5 %
    narrowed = await member.expect("instrument_status", timeout=WAIT_S)
    assert (narrowed["reference_price"], narrowed["lower_limit"], narrowed["upper_limit"]) == ("58.20", "55.29", "61.11")
    await served.hub.submit(SetInstrumentLimits(SYMBOL, max_order_qty_t=50_000))  # no visible change: no message
    await served.hub.submit(HaltInstrument(SYMBOL))
    halted = await member.expect("instrument_status", timeout=WAIT_S)
    assert (halted["halted"], halted["lower_limit"]) == (True, "55.29")
    statuses = [m for m in member.received if m["type"] == "instrument_status"]
    assert len(statuses) == 5, statuses
