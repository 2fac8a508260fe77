"""Connections that never log on cannot exhaust the server (issue 10, finding 1).

The caps and the header timeout sit in :mod:`exchange.gateway.connections`, in front of
aiohttp; the body, idle and logon timeouts in :mod:`exchange.gateway.server`. Loopback
clients bind to their own source addresses (``127.0.0.2`` and up: Linux routes all of
127/8 on ``lo``) so per-address caps can be shown from one machine.

Why the verdicts do not depend on the machine's load: a cap is checked by counts (the gate's,
and which client connections ended), never by elapsed time; a timeout is set small (300 ms)
and the test asserts that the connection ends within a generous deadline (10 s) and not
before the timeout (a lower bound that load can only lengthen), and, where a connection must
survive a timeout, it survives because its timer was cancelled, however long the test waits.
The descriptor test runs ``exchange serve`` in its own process under a small
``RLIMIT_NOFILE`` and checks the process, the answers and the size of its log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest

from exchange.config import ConfigError, GatewayConfig
from exchange.gateway.connections import ConnectionGate, ConnectionLimits, RepeatedLog, quiet_loop_errors
from tests.gateway.conftest import ROOT, Member, Served, fast_config, fixed_day_config_file, logged_on, start_served, stop_served

SHORT_MS = 300
DEADLINE_S = 10.0
LONG_MS = 600_000  # a timeout no test reaches
NOT_BEFORE_S = 0.9 * SHORT_MS / 1000  # the loop may fire a timer up to its clock resolution early
NOT_BEFORE_HEAD_S = 0.9 * 0.75 * SHORT_MS / 1000  # the header timer is drawn from 3/4 to all of it


def config(**gateway: int):
    settings = {"header_timeout_ms": LONG_MS, "body_timeout_ms": LONG_MS, "idle_timeout_ms": LONG_MS,
                "logon_timeout_ms": LONG_MS, **gateway}
    return msgspec.structs.replace(fast_config(), gateway=GatewayConfig(**settings))


async def serving(tmp_path: Path, **gateway: int) -> Served:
    return await start_served(tmp_path / "data", config=config(**gateway))


class Raw:
    """A plain TCP client from a chosen loopback source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.opened = time.monotonic()

    @classmethod
    async def connect(cls, served: Served, source: str = "127.0.0.1") -> Raw:
        host, port = served.server.host, served.server.port
        return cls(*await asyncio.open_connection(host, port, local_addr=(source, 0)))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def until_closed(self, deadline_s: float = DEADLINE_S) -> bytes:
        """Everything the server sent until it closed; fails if it is still open at the deadline."""
        got = b""
        try:
            async with asyncio.timeout(deadline_s):
                while chunk := await self.reader.read(65536):
                    got += chunk
        except ConnectionResetError:
            pass
        return got

    def close(self) -> None:
        self.writer.transport.abort()


def gate_of(served: Served) -> ConnectionGate:
    gate = served.server.gate
    assert gate is not None, "the server is started"
    return gate


async def until(condition, deadline_s: float = DEADLINE_S) -> None:
    async with asyncio.timeout(deadline_s):
        while not condition():
            await asyncio.sleep(0.01)


# -- caps -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_connections_over_the_per_address_cap_are_closed_at_once(tmp_path: Path) -> None:
    served = await serving(tmp_path, max_connections_per_address=3)
    gate = gate_of(served)
    try:
        held = [await Raw.connect(served, "127.0.0.2") for _ in range(3)]
        await until(lambda: gate.per_address.get("127.0.0.2") == 3)
        extra = await Raw.connect(served, "127.0.0.2")
        assert await extra.until_closed() == b"", "refused without an answer"
        other = await Raw.connect(served, "127.0.0.3")  # another address has its own count
        await until(lambda: gate.per_address.get("127.0.0.3") == 1)
        assert (gate.counts.refused_address, gate.per_address["127.0.0.2"]) == (1, 3)
        for client in [*held, other]:
            client.close()
        await until(lambda: gate.open == 0)
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_the_total_cap_holds_and_an_honest_logon_gets_past_idle_attackers(tmp_path: Path) -> None:
    served = await serving(tmp_path, max_connections=10, max_connections_per_address=5)
    gate = gate_of(served)
    key = await served.add_member("M1")
    try:
        attackers = [await Raw.connect(served, source) for source in ("127.0.0.2", "127.0.0.3") for _ in range(5)]
        await until(lambda: gate.open == 10)
        attackers += [await Raw.connect(served, "127.0.0.4") for _ in range(5)]
        await until(lambda: gate.counts.evicted == 5)
        for client in attackers[:5]:
            await client.until_closed()
        assert gate.open == 10 and gate.counts.refused_total == 0
        assert not any(client.reader.at_eof() for client in attackers[5:]), "the oldest silent ones went first"

        async with aiohttp.ClientSession() as http:
            member = await logged_on(http, served, key)  # from 127.0.0.1, into a full table
            assert gate.open == 10 and gate.counts.evicted == 6
            await member.close()
        for client in attackers:
            client.close()
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_a_table_full_of_connections_past_their_heads_refuses_the_next(tmp_path: Path) -> None:
    served = await serving(tmp_path, max_connections=4)
    gate = gate_of(served)
    try:
        clients = [await Raw.connect(served) for _ in range(4)]
        for client in clients:  # a request each, kept alive: nothing left to evict
            client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        late = await Raw.connect(served)
        assert await late.until_closed() == b""
        assert (gate.counts.refused_total, gate.counts.evicted, gate.open) == (1, 0, 4)
        for client in clients:
            client.close()
    finally:
        await stop_served(served)


# -- timeouts ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_half_sent_headers_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    served = await serving(tmp_path, header_timeout_ms=SHORT_MS)
    key = await served.add_member("M1")
    try:
        async with aiohttp.ClientSession() as http:
            member = await logged_on(http, served, key)  # its head came in time: its timer is off
            silent = await Raw.connect(served, "127.0.0.2")
            slow = await Raw.connect(served, "127.0.0.3")
            slow.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            for client in (silent, slow):
                assert await client.until_closed() == b""
                assert time.monotonic() - client.opened >= NOT_BEFORE_HEAD_S
            assert gate_of(served).counts.header_timeouts == 2
            await member.send({"type": "order_status", "client_order_id": "none"})
            assert (await member.expect("error"))["code"] == 9, "the member's session outlived the header timeout"
            await member.close()
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_a_stalled_post_body_is_answered_408_and_closed_after_the_body_timeout(tmp_path: Path) -> None:
    served = await serving(tmp_path, body_timeout_ms=SHORT_MS)
    try:
        client = await Raw.connect(served)
        client.send(f"POST /clearing/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.tokens['clearing']}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"member".encode())
        answer = await client.until_closed()
        assert time.monotonic() - client.opened >= NOT_BEFORE_S
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("the request body did not arrive")
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    served = await serving(tmp_path, idle_timeout_ms=SHORT_MS)
    try:
        client = await Raw.connect(served)
        client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await client.until_closed()
        assert answer.startswith(b"HTTP/1.1 200"), answer  # answered, kept alive, then closed idle
        assert time.monotonic() - client.opened >= NOT_BEFORE_S
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_a_websocket_that_never_logs_on_is_closed_after_the_logon_timeout(tmp_path: Path) -> None:
    served = await serving(tmp_path, logon_timeout_ms=SHORT_MS)
    try:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            member = await Member.connect(http, served.ws_url)
            closing = await member.expect("session_closing", timeout=DEADLINE_S)
            assert closing["reason"] == "logon_timeout"
            assert time.monotonic() - started >= NOT_BEFORE_S
            assert await member.receive(DEADLINE_S) is None
    finally:
        await stop_served(served)


# -- descriptors and the log ------------------------------------------------------------------------


def test_the_cap_leaves_the_reserve_and_a_limit_without_room_is_refused() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = ConnectionLimits.of(GatewayConfig(max_connections=10**9, descriptor_reserve=100))
    assert limits.total_cap(descriptors_in_use=20) == soft - 120
    assert ConnectionLimits.of(GatewayConfig(max_connections=5)).total_cap(20) == 5
    with pytest.raises(ConfigError, match="descriptor_reserve"):
        limits.total_cap(descriptors_in_use=soft)


def test_repeated_errors_are_one_line_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    repeated = RepeatedLog(logging.getLogger("test.repeated"), interval_s=10.0, clock=lambda: now[0])
    handler = quiet_loop_errors(repeated)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, "test.repeated"):
            for second in range(25):
                now[0] = float(second)
                for _ in range(1_000):  # asyncio's accept loop can report many a second
                    handler(loop, {"message": "socket.accept() out of system resource",
                                   "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3, lines
    assert all(record.exc_info is None for record in caplog.records), "no traceback"
    assert lines[1].endswith("(and 9999 more since the last such line)"), lines[1]


LOW_LIMIT = 200


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT, LOW_LIMIT))


@pytest.mark.asyncio
async def test_out_of_descriptors_the_server_stays_up_and_serves_a_deposit_and_a_logon(tmp_path: Path) -> None:
    """Twice as many silent connections as the descriptor limit allows, then a deposit and a logon."""
    data_dir = tmp_path / "data"
    config_file = Path(fixed_day_config_file(tmp_path))
    config_file.write_text(config_file.read_text() + "[gateway]\ndescriptor_reserve = 64\nmax_connections_per_address = 100000\n")
    stderr = tmp_path / "serve.stderr"
    with open(stderr, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "exchange.serve", "serve", "--port", "0", "--data-dir", str(data_dir),
             "--config", str(config_file)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True, preexec_fn=_low_descriptor_limit,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    attackers: list[asyncio.StreamWriter] = []
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        assert "serving on http://" in line, (line, stderr.read_text())
        url = line.split("serving on ", 1)[1].split()[0]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for _ in range(2 * LOW_LIMIT):
            try:
                _, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
                attackers.append(writer)
            except OSError:
                pass
        tokens = json.loads((data_dir / "operator-tokens.json").read_text())
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE_S)) as http:
            admin, clearing = ({"Authorization": f"Bearer {tokens[role]}"} for role in ("admin", "clearing"))
            async with http.post(url + "/members", json={"member_id": "M1", "kind": "voluntary"}, headers=admin) as r:
                assert r.status == 200, await r.text()
            async with http.post(url + "/clearing/deposits", headers=clearing,
                                 json={"member_id": "M1", "amount_fen": 1_000, "reference": "bank:1"}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["events"][0]["event"] == "FundsDeposited"
            async with http.post(url + "/members/M1/credentials", headers=admin) as r:
                issued = await r.json()
            member = await Member.connect(http, url.replace("http", "ws", 1) + "/ws")
            ack = await member.logon(issued["key_id"], bytes.fromhex(issued["secret"]))
            assert ack["type"] == "logon_ack", ack
            await member.close()
        assert process.poll() is None, "the server is still up"
        assert stderr.stat().st_size < 20_000, stderr.read_text()[-2_000:]
    finally:
        for writer in attackers:
            writer.transport.abort()
        process.send_signal(2)
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 0, stderr.read_text()[-2_000:]
