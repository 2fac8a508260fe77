"""A real served exchange on loopback for the gateway tests, and a member client.

``served`` starts the hub and aiohttp on 127.0.0.1, port 0, over a fresh data directory
(journal and SQLite stores as ``exchange serve`` makes them; an in-memory registry that gives
every member allowances at the start of day). ``Member`` is a real aiohttp WebSocket client
that signs its logon, keeps every message, and checks ``session_seq`` is gap-free.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import pytest_asyncio

from exchange.app import build_core
from exchange.config import CalendarConfig, Config, EngineConfig, LimitsConfig, RiskConfig
from exchange.engine import FileJournal, decode_command
from exchange.gateway.hub import Hub
from exchange.gateway.member.auth import sign_logon
from exchange.gateway.server import GatewayServer
from exchange.model.stream import Applied
from exchange.model import Deposit, MemberKind, RegisterMember, SetTradingPhase, TradingPhase
from exchange.serve import ServedExchange, compose
from registry_adapter.memory import InMemoryRegistry

DAY = "2026-01-05"
SYMBOL = "CEA-2025"
CASH_FEN = 10**13
HOLDING_T = 10_000_000


def fast_config(snapshot_every: int | None = None) -> Config:
    """The default market, with order rates high enough for the load tests (and, if given,
    an engine snapshot every so many commands). The tests open the fixed ``DAY``, so the
    start of day's window around today is lifted (tests/test_trading_days.py tests it)."""
    limits = LimitsConfig(orders_per_second=10**6, order_burst=10**6, max_open_orders=10**6)
    engine = EngineConfig() if snapshot_every is None else EngineConfig(snapshot_every_commands=snapshot_every)
    return Config(risk=RiskConfig(position_limit_t=10**9, limits=limits), engine=engine,
                  calendar=CalendarConfig(max_days_from_today=FIXED_DAY_WINDOW))


FIXED_DAY_WINDOW = 36_600  # days: any fixed test date is "near" today


def fixed_day_config_file(directory: Path) -> str:
    """A configuration file for an ``exchange serve`` process that opens the fixed ``DAY``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fixed-day.toml"
    # The test runs the fixed day by hand: the calendar driver would open today's date.
    path.write_text(f"[calendar]\nmax_days_from_today = {FIXED_DAY_WINDOW}\nautomatic = false\n")
    return str(path)


@dataclass
class Served:
    parts: ServedExchange
    data_dir: Path
    registry: InMemoryRegistry

    @property
    def server(self) -> GatewayServer:
        return self.parts.server

    @property
    def hub(self) -> Hub:
        return self.parts.hub

    @property
    def tokens(self) -> dict[str, str]:
        return self.parts.tokens

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.url + "/ws"

    async def add_member(self, member_id: str) -> tuple[str, bytes]:
        """Register, fund and key a member; (key id, secret)."""
        self.registry.open_account(member_id)
        for symbol in self.hub.symbols:
            self.registry.issue(member_id, symbol, HOLDING_T)
        await self.hub.submit(RegisterMember(member_id, MemberKind.VOLUNTARY))
        await self.hub.submit(Deposit(member_id, CASH_FEN))
        issued = self.hub.credentials.issue(member_id, self.hub.now_ms())
        return issued.key_id, bytes.fromhex(issued.secret_hex)

    async def open_day(self) -> None:
        await self.hub.run(lambda service: service.start_day(DAY))
        await self.hub.submit(SetTradingPhase(TradingPhase.CONTINUOUS))


async def start_served(data_dir: Path, registry: InMemoryRegistry | None = None, config: Config | None = None,
                       **hub_options) -> Served:
    """The served exchange as ``exchange serve`` composes it, on a free loopback port."""
    registry = registry if registry is not None else InMemoryRegistry()
    parts = compose(config or fast_config(), data_dir, time.time_ns, registry=registry, **hub_options)
    try:
        await parts.start()
    except BaseException:
        parts.close()
        raise
    return Served(parts, data_dir, registry)


async def stop_served(served: Served) -> None:
    await served.parts.stop()
    served.parts.close()


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    running = await start_served(tmp_path / "data")
    yield running
    await stop_served(running)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- a member client ---------------------------------------------------------------------------


def logon_frame(key_id: str, secret: bytes, timestamp_ms: int | None = None, nonce: str | None = None, **options) -> dict:
    timestamp_ms = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
    nonce = nonce or secrets.token_hex(12)
    return {"type": "logon", "key_id": key_id, "timestamp_ms": timestamp_ms, "nonce": nonce,
            "signature": sign_logon(secret, key_id, timestamp_ms, nonce), **options}


@dataclass
class Member:
    """One WebSocket session of a member, with everything it received."""

    ws: aiohttp.ClientWebSocketResponse
    received: list[dict] = field(default_factory=list)
    last_seq: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> Member:
        return cls(await http.ws_connect(url, autoping=True, max_msg_size=0))

    async def logon(self, key_id: str, secret: bytes, **options) -> dict:
        await self.send(logon_frame(key_id, secret, **options))
        return await self.expect("logon_ack", "error")

    async def send(self, message: dict) -> None:
        await self.ws.send_str(msgspec.json.encode(message).decode())

    async def receive(self, timeout: float = 5.0) -> dict | None:
        """The next message, or None when the connection closed."""
        frame = await self.ws.receive(timeout=timeout)
        if frame.type != aiohttp.WSMsgType.TEXT:
            return None
        message = msgspec.json.decode(frame.data)
        if "session_seq" in message:
            if message["session_seq"] != self.last_seq + 1:
                self.gaps.append((self.last_seq, message["session_seq"]))
            self.last_seq = message["session_seq"]
        self.received.append(message)
        return message

    async def expect(self, *types: str, timeout: float = 5.0) -> dict:
        """The next message of one of these types (others are kept but skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            message = await self.receive(max(left, 0.01))
            if message is None:
                raise AssertionError(f"connection closed while waiting for {types}; got {self.received[-3:]}")
            if message["type"] in types:
                return message

    async def drain(self, quiet_s: float = 0.2) -> list[dict]:
        """Everything that arrives until nothing has for ``quiet_s``."""
        got: list[dict] = []
        while True:
            try:
                message = await self.receive(quiet_s)
            except TimeoutError:
                return got
            if message is None:
                return got
            got.append(message)

    async def close(self) -> None:
        await self.ws.close()

    def reports(self, exec_type: str | None = None) -> list[dict]:
        return [m for m in self.received if m["type"] == "execution_report" and (exec_type is None or m["exec_type"] == exec_type)]


async def logged_on(http: aiohttp.ClientSession, served: Served, key: tuple[str, bytes], **options) -> Member:
    member = await Member.connect(http, served.ws_url)
    ack = await member.logon(*key, **options)
    assert ack["type"] == "logon_ack", ack
    return member


def order(client_order_id: str, side: str, qty: int, price: str, **extra) -> dict:
    return {"type": "new_order", "client_order_id": client_order_id, "instrument": SYMBOL,
            "side": side, "qty": qty, "price": price, **extra}


# -- helpers for tests that drive a real `exchange serve` over HTTP ---------------------------------


async def call(http: aiohttp.ClientSession, url: str, token: str, method: str, path: str, body: dict | None = None):
    async with http.request(method, url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        payload = await response.json()
        assert response.status in (200, 201), (path, response.status, payload)
        return payload


def open_registry_account(data_dir: Path, member_id: str) -> None:
    from registry_adapter.sql import SqlRegistry

    registry = SqlRegistry(f"sqlite:///{data_dir / 'registry.db'}")
    registry.open_account(member_id, "member_holding", actor="test", reason="a new member")
    registry.close()


ROOT = Path(__file__).resolve().parents[2]


async def start_serve_process(data_dir: Path, *arguments: str) -> tuple[subprocess.Popen, str]:
    """``exchange serve`` in a process of its own on a free port (its stdout piped, its log
    dropped), and its URL once it serves."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from exchange.serve import main; sys.exit(main(sys.argv[1:]))",
         "--port", "0", "--data-dir", str(data_dir), *arguments],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None  # stdout=PIPE
    line = await asyncio.to_thread(process.stdout.readline)
    match = re.search(r"serving on (http://\S+) ", line)
    assert match, f"no URL in {line!r}"
    return process, match[1]


async def call_as(http: aiohttp.ClientSession, served: Served, role: str | None, method: str, path: str,
                  body=None, status: int = 200):
    """The operator API as ``role`` (None: no token), expecting ``status``; the answer's JSON
    (its text when it is not JSON)."""
    headers = {"Authorization": f"Bearer {served.tokens[role]}"} if role else {}
    async with http.request(method, served.url + path, json=body, headers=headers) as response:
        payload = await response.json() if response.content_type == "application/json" else await response.text()
        assert response.status == status, (path, response.status, payload)
        return payload


def replay_journal(data_dir: Path, config: Config) -> list[Applied]:
    """The data directory's journal replayed into a fresh core built from ``config``: every
    record with the events it caused."""
    journal = FileJournal(data_dir / "commands.journal")
    core = build_core(config)
    records = []
    for record in journal.records():
        command = decode_command(record.payload)
        records.append(Applied(record.seq, record.ts_ns, "", command, core.apply(record.seq, record.ts_ns, command)))
    journal.close()
    return records
