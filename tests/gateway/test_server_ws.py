"""The member WebSocket over a real socket: logon, orders, duplicates, cancel-on-disconnect,
the dead-man timer, limits, and a slow reader cut off without slowing anyone else."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time

import msgspec
import pytest

from exchange.gateway.member import wire
from tests.gateway.conftest import (
    SYMBOL,
    Member,
    logged_on,
    logon_frame,
    order,
    start_served,
    stop_served,
)

pytestmark = pytest.mark.asyncio


async def test_good_logon_acks_with_session_seq_1(served, http) -> None:
    key = await served.add_member("M1")
    member = await Member.connect(http, served.ws_url)
    ack = await member.logon(*key, heartbeat_s=5)
    assert ack["type"] == "logon_ack" and ack["member_id"] == "M1" and ack["session_seq"] == 1
    assert ack["heartbeat_s"] == 5


@pytest.mark.parametrize("case", ["bad_signature", "unknown_key", "skew", "revoked"])
async def test_refused_logons_close_the_connection(served, http, case: str) -> None:
    key_id, secret = await served.add_member("M1")
    frame = logon_frame(key_id, secret)
    if case == "bad_signature":
        frame["signature"] = "0" * 64
    elif case == "unknown_key":
        frame = logon_frame("ffffffffffffffff", secret)
    elif case == "skew":
        frame = logon_frame(key_id, secret, timestamp_ms=time.time_ns() // 1_000_000 - 31_000)
    else:
        served.hub.credentials.revoke(key_id)
    member = await Member.connect(http, served.ws_url)
    await member.send(frame)
    error = await member.expect("error")
    assert error["code"] == wire.ErrorCode.LOGON_REFUSED
    assert error["problem"] == ("timestamp too far from the server's clock" if case == "skew" else "invalid credentials")
    closing = await member.expect("session_closing")
    assert closing["reason"] == "logon_refused"
    assert await member.receive() is None


async def test_a_reused_nonce_is_refused(served, http) -> None:
    key_id, secret = await served.add_member("M1")
    frame = logon_frame(key_id, secret, nonce="same-nonce-000000001")
    first = await Member.connect(http, served.ws_url)
    await first.send(frame)
    assert (await first.expect("logon_ack", "error"))["type"] == "logon_ack"
    second = await Member.connect(http, served.ws_url)
    await second.send(frame)
    error = await second.expect("error")
    assert error["code"] == wire.ErrorCode.LOGON_REFUSED and error["problem"] == "nonce already used"


@pytest.mark.parametrize("frame", [
    {"type": "heartbeat"},
    order("o1", "buy", 1, "58.20"),
    {"type": "subscribe", "instruments": [SYMBOL]},
])
async def test_anything_before_logon_is_refused_and_closed(served, http, frame: dict) -> None:
    member = await Member.connect(http, served.ws_url)
    await member.send(frame)
    error = await member.expect("error")
    assert error["code"] == wire.ErrorCode.NOT_LOGGED_ON and error["session_seq"] == 1
    assert (await member.expect("session_closing"))["reason"] == "not_logged_on"
    assert await member.receive() is None


async def test_a_second_logon_is_not_allowed(served, http) -> None:
    key = await served.add_member("M1")
    member = await logged_on(http, served, key)
    await member.send(logon_frame(*key))
    error = await member.expect("error")
    assert error["code"] == wire.ErrorCode.NOT_ALLOWED


async def test_order_flow_execution_reports_and_market_data(served, http) -> None:
    buyer_key, seller_key = await served.add_member("B1"), await served.add_member("S1")
    await served.open_day()
    buyer, seller = await logged_on(http, served, buyer_key), await logged_on(http, served, seller_key)
    await buyer.send({"type": "subscribe", "instruments": [SYMBOL]})
    assert (await buyer.expect("book_snapshot"))["seq"] == 0
    await buyer.send(order("b-1", "buy", 100, "58.20"))
    new = await buyer.expect("execution_report")
    assert (new["exec_type"], new["ord_status"], new["leaves_qty"]) == ("new", "new", 100)
    update = await buyer.expect("book_update")
    assert update["bids"] == [["58.20", 100, 1]] and update["prev_seq"] == 0
    await seller.send(order("s-1", "sell", 40, "58.10"))
    seller_new = await seller.expect("execution_report")
    seller_fill = await seller.expect("execution_report")
    assert seller_new["exec_type"] == "new"
    assert (seller_fill["exec_type"], seller_fill["ord_status"], seller_fill["last_px"], seller_fill["last_qty"]) == \
        ("trade", "filled", "58.20", 40)
    fill = await buyer.expect("execution_report")
    assert (fill["ord_status"], fill["cum_qty"], fill["leaves_qty"], fill["trade_id"]) == ("partially_filled", 40, 60, seller_fill["trade_id"])
    trade = await buyer.expect("trade")
    assert trade == {"type": "trade", "instrument": SYMBOL, "trade_id": fill["trade_id"], "price": "58.20", "qty": 40, "aggressor": "sell"}
    await buyer.send({"type": "amend", "instrument": SYMBOL, "client_order_id": "b-1", "qty": 30, "price": "58.20"})
    replaced = await buyer.expect("execution_report")
    assert (replaced["exec_type"], replaced["qty"], replaced["leaves_qty"]) == ("replaced", 70, 30)
    await buyer.send({"type": "cancel", "instrument": SYMBOL, "client_order_id": "b-1"})
    canceled = await buyer.expect("execution_report")
    assert (canceled["exec_type"], canceled["cancel_reason"]) == ("canceled", "member")
    await buyer.send({"type": "cancel", "instrument": SYMBOL, "client_order_id": "b-1"})
    reject = await buyer.expect("cancel_reject")
    assert reject["reject_code"] == 109
    await buyer.send({"type": "order_status", "client_order_id": "b-1"})
    status = await buyer.expect("execution_report")
    assert (status["exec_type"], status["ord_status"], status["cum_qty"]) == ("order_status", "canceled", 40)
    assert buyer.gaps == [] and seller.gaps == []


async def test_duplicate_client_order_id_is_refused_with_the_original_status(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key)
    await member.send(order("dup-1", "buy", 10, "58.20"))
    await member.expect("execution_report")
    await member.send(order("dup-1", "buy", 99, "58.00"))
    error = await member.expect("error")
    assert error["code"] == wire.ErrorCode.DUPLICATE_CLIENT_ORDER_ID and error["field"] == "client_order_id"
    original = await member.expect("execution_report")
    assert (original["exec_type"], original["qty"], original["price"]) == ("order_status", 10, "58.20")


async def test_two_identical_ids_in_flight_cannot_both_pass(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    first, second = await logged_on(http, served, key), await logged_on(http, served, key)
    await asyncio.gather(*(m.send(order("race-1", "buy", 10, "58.20")) for m in (first, second) for _ in range(5)))
    await asyncio.sleep(0.3)
    received = await first.drain() + await second.drain()
    news = [m for m in first.received if m["type"] == "execution_report" and m["exec_type"] == "new"]
    assert len(news) == 1
    duplicates = [m for m in received if m["type"] == "error" and m["code"] == wire.ErrorCode.DUPLICATE_CLIENT_ORDER_ID]
    assert len(duplicates) == 9


async def test_a_member_cannot_touch_another_members_order(served, http) -> None:
    owner_key, other_key = await served.add_member("OWN"), await served.add_member("OTH")
    await served.open_day()
    owner, other = await logged_on(http, served, owner_key), await logged_on(http, served, other_key)
    await owner.send(order("mine", "buy", 10, "58.20"))
    order_id = (await owner.expect("execution_report"))["order_id"]
    await other.send({"type": "cancel", "instrument": SYMBOL, "order_id": order_id})
    reject = await other.expect("cancel_reject")
    assert reject["reject_code"] == 109 and reject["client_order_id"] is None
    await other.send({"type": "amend", "instrument": SYMBOL, "order_id": order_id, "qty": 1, "price": "58.20"})
    assert (await other.expect("cancel_reject"))["client_order_id"] is None
    await other.send({"type": "order_status", "order_id": order_id})
    assert (await other.expect("error"))["code"] == wire.ErrorCode.UNKNOWN_ORDER
    await other.send({"type": "cancel", "instrument": SYMBOL, "client_order_id": "mine"})
    assert (await other.expect("cancel_reject"))["reject_code"] == 109
    await other.send({"type": "mass_cancel"})
    await asyncio.sleep(0.2)
    assert [o.client_order_id for o in served.hub.tracker.open_orders("OWN")] == ["mine"]
    assert not [m for m in await owner.drain() if m["type"] == "execution_report"]


async def test_cancel_on_disconnect_when_the_last_session_drops(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    first = await logged_on(http, served, key, cancel_on_disconnect=True)
    second = await logged_on(http, served, key, cancel_on_disconnect=True)
    await first.send(order("cod-1", "buy", 10, "58.20"))
    await first.expect("execution_report")
    await first.close()
    await asyncio.sleep(0.2)
    assert len(served.hub.tracker.open_orders("M1")) == 1, "another session is still there"
    await second.close()
    for _ in range(50):
        if not served.hub.tracker.open_orders("M1"):
            break
        await asyncio.sleep(0.05)
    assert served.hub.tracker.open_orders("M1") == []
    again = await logged_on(http, served, key)
    await again.send({"type": "order_status", "client_order_id": "cod-1"})
    assert (await again.expect("execution_report"))["ord_status"] == "canceled"


async def test_orders_stay_without_cancel_on_disconnect_and_come_back_at_logon(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key, cancel_on_disconnect=False)
    await member.send(order("keep-1", "buy", 10, "58.20"))
    await member.expect("execution_report")
    await member.close()
    await asyncio.sleep(0.2)
    again = await logged_on(http, served, key)
    resync = await again.expect("execution_report")
    assert (resync["exec_type"], resync["client_order_id"], resync["session_seq"]) == ("order_status", "keep-1", 2)


async def test_dead_man_timer_cancels_unless_renewed(served, http) -> None:
    key = await served.add_member("M1")
    await served.open_day()
    member = await logged_on(http, served, key, cancel_on_disconnect=False)
    await member.send({"type": "cancel_after", "seconds": 1})
    await member.send(order("dm-1", "buy", 10, "58.20"))
    await member.expect("execution_report")
    await asyncio.sleep(0.6)
    await member.send({"type": "cancel_after", "seconds": 1})  # renewed: not yet
    await asyncio.sleep(0.6)
    assert len(served.hub.tracker.open_orders("M1")) == 1
    canceled = await member.expect("execution_report", timeout=3)
    assert (canceled["exec_type"], canceled["client_order_id"]) == ("canceled", "dm-1")
    await member.send({"type": "cancel_after", "seconds": 0})


async def test_malformed_frames_are_answered_and_the_budget_closes(served, http) -> None:
    key = await served.add_member("M1")
    member = await logged_on(http, served, key)
    await member.ws.send_bytes(b'{"type":"heartbeat"}')
    assert (await member.expect("error"))["code"] == wire.ErrorCode.BINARY_FRAME
    await member.ws.send_str("x" * (wire.MAX_FRAME_BYTES + 1))
    assert (await member.expect("error"))["code"] == wire.ErrorCode.FRAME_TOO_LARGE
    await member.send({"type": "new_order", "client_order_id": "a", "instrument": SYMBOL, "side": "buy", "qty": 1, "price": "58.2"})
    error = await member.expect("error")
    assert (error["code"], error["field"]) == (wire.ErrorCode.INVALID_FIELD, "price")
    for _ in range(17):
        await member.ws.send_str("{")
    codes = [m["code"] for m in await member.drain() if m["type"] == "error"]
    assert codes == [wire.ErrorCode.MALFORMED_JSON] * 17
    await member.ws.send_str("{")
    assert (await member.expect("error"))["code"] == wire.ErrorCode.TOO_MANY_ERRORS
    assert (await member.expect("session_closing"))["reason"] == "too_many_errors"
    assert member.gaps == []


async def test_connections_per_member_are_limited(served, http) -> None:
    key = await served.add_member("M1")
    sessions = [await logged_on(http, served, key) for _ in range(served.hub.max_connections_per_member)]
    extra = await Member.connect(http, served.ws_url)
    error = await extra.logon(*key)
    assert error["code"] == wire.ErrorCode.NOT_ALLOWED
    assert (await extra.expect("session_closing"))["reason"] == "too_many_connections"
    assert len(sessions) == 4


async def test_heartbeat_timeout_closes_a_silent_session(served, http) -> None:
    key = await served.add_member("M1")
    member = await logged_on(http, served, key, heartbeat_s=1)
    got = []
    while True:
        message = await member.receive(timeout=6)
        if message is None:
            break
        got.append(message["type"])
    assert "heartbeat" in got and got[-1] == "session_closing"
    assert member.received[-1]["reason"] == "heartbeat_timeout"


# -- a slow reader -------------------------------------------------------------------------------


async def raw_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client on a tiny receive buffer that we simply stop reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head, head
    return reader, writer


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    header = bytes([0x81]) + (bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack("!H", length))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_slow_reader_is_cut_off_without_slowing_another(tmp_path, http) -> None:
    served = await start_served(tmp_path / "data", max_outbound=500)
    try:
        slow_key, fast_key = await served.add_member("SLOW"), await served.add_member("FAST")
        await served.open_day()
        _, writer = await raw_websocket(served.server.port)
        writer.write(masked_text_frame(msgspec.json.encode(logon_frame(*slow_key))))
        flood = masked_text_frame(b'{"type":"order_status","client_order_id":"nothing-here"}')
        for _ in range(20):
            writer.write(flood * 500)  # 10,000 requests, each answered with an error it never reads
            await writer.drain()
        fast = await logged_on(http, served, fast_key)
        started = time.perf_counter()
        for i in range(50):
            await fast.send(order(f"f-{i}", "buy", 1, "58.20"))
            await fast.expect("execution_report")
        assert time.perf_counter() - started < 5
        for _ in range(100):
            if served.hub.metrics.sessions_closed["slow_reader"]:
                break
            await asyncio.sleep(0.05)
        assert served.hub.metrics.sessions_closed["slow_reader"] == 1
        assert "SLOW" not in served.hub.sessions
        writer.close()
    finally:
        await stop_served(served)
