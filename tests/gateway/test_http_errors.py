"""Malformed HTTP requests get a clear 4xx and one log line (issue 10, finding 7).

Before: invalid UTF-8 in a JSON body answered 500 (msgspec raises ``UnicodeDecodeError``
after the JSON syntax checks), so did a token of bytes that are not UTF-8, and every request
aiohttp could not parse was logged as a full traceback. Raw bytes over a real socket: a
client library would refuse to send most of these.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.gateway.conftest import Served

pytestmark = pytest.mark.asyncio


async def exchange_bytes(served: Served, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` on a fresh connection; the status and the body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), body


def request(method: str, path: str, token: str | bytes | None = None, body: bytes = b"", headers: bytes = b"") -> bytes:
    auth = b"" if token is None else b"Authorization: Bearer " + (token.encode() if isinstance(token, str) else token) + b"\r\n"
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + auth + headers + b"\r\n" + body


async def test_invalid_utf8_in_a_json_body_is_400(served) -> None:
    raw = request("POST", "/clearing/start-of-day", served.tokens["clearing"], b'{"trading_day": "2026-01-0\xff"}')
    status, body = await exchange_bytes(served, raw)
    assert status == 400, body
    assert b'"the body is not UTF-8: byte' in body


async def test_a_token_that_is_not_utf8_is_401_not_500(served) -> None:
    status, body = await exchange_bytes(served, request("GET", "/regulator/alerts", b"\xff\xfe" * 20))
    assert (status, body) == (401, b'{"error":"invalid token","field":null,"code":null}')


async def test_a_body_over_the_limit_is_413_as_json(served) -> None:
    raw = request("POST", "/members", served.tokens["admin"], b"{" * (65 * 1024))
    status, body = await exchange_bytes(served, raw)
    assert status == 413 and body.startswith(b'{"error":"Maximum request body size'), body


async def test_a_handlers_bug_is_500_as_json_with_its_traceback_logged(served, monkeypatch, caplog) -> None:
    async def broken(job):
        raise RuntimeError("a bug")

    monkeypatch.setattr(served.hub, "read", broken)
    with caplog.at_level(logging.ERROR, logger="exchange.gateway.operator.api"):
        status, body = await exchange_bytes(served, request("GET", "/members", served.tokens["admin"]))
    assert (status, body) == (500, b'{"error":"internal error (logged by the exchange)","field":null,"code":null}')
    [record] = [r for r in caplog.records if r.name == "exchange.gateway.operator.api"]
    assert record.exc_info is not None and "GET /members failed" in record.getMessage()


@pytest.mark.parametrize("raw", [
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /members HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GARBAGE\r\n\r\n",
], ids=["header-without-colon", "bad-chunk-size", "not-http"])
async def test_http_that_does_not_parse_is_400_and_one_log_line(served, caplog, raw: bytes) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        status, _ = await exchange_bytes(served, raw)
        await asyncio.sleep(0)  # the handler logs as it answers
    assert status == 400
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records, "the malformed request was not logged at all"
    for record in records:
        assert record.exc_info is None and record.levelno <= logging.INFO, record
        message = record.getMessage()
        assert message.startswith("malformed HTTP request: Error handling request from 127.0.0.1 (400): ") and "\n" not in message
