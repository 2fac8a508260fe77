"""Fuzz over the socket: 10,000 seeded random and mutated frames (bad JSON, wrong types,
unknown fields, huge numbers, invalid UTF-8, binary and oversize frames). Zero server
exceptions, the server stays up, and every refused frame is answered with the error the
wire layer names for it, in order."""

from __future__ import annotations

import logging
import random

import msgspec
import pytest

from exchange.gateway.member import wire
from tests.gateway.conftest import SYMBOL, logged_on, start_served, stop_served

pytestmark = pytest.mark.asyncio

FRAMES = 10_000
CHUNK = 200
SEED = 20260105
VALID: list[dict[str, object]] = [
    {"type": "new_order", "client_order_id": "f-1", "instrument": SYMBOL, "side": "buy", "qty": 10, "price": "58.20"},
    {"type": "new_order", "client_order_id": "f-2", "instrument": SYMBOL, "side": "sell", "qty": 3, "order_type": "market"},
    {"type": "cancel", "instrument": SYMBOL, "order_id": 7},
    {"type": "amend", "instrument": SYMBOL, "client_order_id": "f-1", "qty": 5, "price": "58.10"},
    {"type": "mass_cancel", "instrument": SYMBOL},
    {"type": "order_status", "client_order_id": "f-1"},
    {"type": "subscribe", "instruments": [SYMBOL, "CCER"]},
    {"type": "unsubscribe", "instruments": ["CCER"]},
    {"type": "heartbeat"},
    {"type": "cancel_after", "seconds": 0},
]
ODD_VALUES: list[object] = [None, True, -1, 0, 2**64, -(2**63), 1.5, "", "x" * 300, [], {}, "58.2", "1e3", "\u0000", "💥", [1, [2, [3]]]]


def mutate(rnd: random.Random) -> tuple[bytes, bool]:
    """(frame, binary?)"""
    kind = rnd.randrange(10)
    if kind == 0:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 60))), False
    if kind == 1:
        return msgspec.json.encode(rnd.choice(VALID)), True
    if kind == 2 and rnd.random() < 0.05:
        return b'{"type":"heartbeat","pad":"' + b"x" * (wire.MAX_FRAME_BYTES + 10) + b'"}', False
    message = dict(rnd.choice(VALID))
    if kind in (3, 4):
        field = rnd.choice(list(message))
        message[field] = rnd.choice(ODD_VALUES)
    elif kind == 5:
        message.pop(rnd.choice(list(message)))
    elif kind == 6:
        message[rnd.choice(["qyt", "member_id", "extra", "Type"])] = rnd.choice(ODD_VALUES)
    elif kind == 7:
        text = msgspec.json.encode(message)
        cut = rnd.randrange(len(text))
        return text[:cut] + bytes([rnd.randrange(256)]) + text[cut + 1:], False
    elif kind == 8:
        return b"[" * rnd.randrange(1, 5000), False
    return msgspec.json.encode(message), False


def expected_error(frame: bytes, binary: bool) -> int | None:
    if binary:
        return wire.ErrorCode.BINARY_FRAME
    try:
        wire.decode_inbound(frame)
    except wire.WireError as error:
        return error.code
    return None


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_ten_thousand_fuzzed_frames(tmp_path, http) -> None:
    served = await start_served(tmp_path / "data", max_errors_per_minute=10**9)
    errors = Collect()
    logging.getLogger().addHandler(errors)
    try:
        key = await served.add_member("FUZZ")
        await served.open_day()
        member = await logged_on(http, served, key)
        rnd = random.Random(SEED)
        sent = refused = 0
        while sent < FRAMES:
            expected = []
            for _ in range(CHUNK):
                frame, binary = mutate(rnd)
                code = expected_error(frame, binary)
                if code is not None:
                    expected.append(int(code))
                if binary:
                    await member.ws.send_bytes(frame)
                else:
                    await member.ws._writer.send_frame(frame, 1)  # raw bytes as a text frame, even invalid UTF-8
                sent += 1
            await member.send({"type": "order_status", "order_id": 10**15 + sent})  # the sentinel: error 9 on order_id
            seen = []
            while True:
                message = await member.expect("error")
                if message["code"] == wire.ErrorCode.UNKNOWN_ORDER and message["field"] == "order_id":
                    break
                seen.append(message["code"])
            assert_subsequence(expected, seen)
            refused += len(expected)
        assert member.gaps == []
        assert refused > FRAMES // 2
        assert served.hub.fatal is None
        async with http.get(served.url + "/health") as response:
            assert (await response.json())["status"] == "ok"
        assert [r.getMessage() for r in errors.records] == []
    finally:
        logging.getLogger().removeHandler(errors)
        await stop_served(served)


def assert_subsequence(expected: list[int], seen: list[int]) -> None:
    """Every refused frame's error arrives, in order (valid frames may add answers of their own)."""
    position = 0
    for code in seen:
        if position < len(expected) and code == expected[position]:
            position += 1
    assert position == len(expected), (expected, seen)
