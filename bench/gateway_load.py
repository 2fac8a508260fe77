"""The gateway load generator: a served exchange in a child process, member clients over loopback.

:class:`ServedProcess` starts ``python -m exchange.serve`` (hub and aiohttp app, exactly as
``exchange serve`` runs them) on 127.0.0.1, port 0, over a fresh data directory: SQLite stores,
the journal with the default fsync policy of the configuration (``batched``: fsync at every
flush, which the hub does once per group commit, and every 1,000 records). Its configuration
file only opens the per-member risk limits (order rate, burst, open orders, position) that
would otherwise refuse a load-test member after 50 orders a second. Before the server starts,
the data directory's ``registry.db`` gets every member's allowances
(:func:`registry_adapter.demo.allocate_holdings`), which the start of day then loads. The
server's CPU time and peak RSS are read from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``
(``VmHWM``).

:func:`set_up` does the rest through the operator HTTP API, as an operator would: create the
members, issue each a key, deposit cash, start of day, continuous phase.

:func:`drive` connects one aiohttp WebSocket client per member (one asyncio loop, this
process), logs each on with its own key, and runs the phases:

* **closed loop** (the sustained rate): each client keeps ``window`` requests outstanding and
  sends the next one when an earlier one is answered;
* **open loop** (the latency): one pacer sends at a fixed total rate, round-robin over the
  clients, whatever the answers do; once at the rate of the target, once at a light rate.

Requests: new limit day orders (buys and sells, uniform over +-5 ticks around 58.20, 1-10 t,
so about half cross and trade) and, for a fifth of the requests, a cancel (by client order
id) of the client's oldest resting order. A request is answered by the first
``execution_report`` for its client order id (a new order's ``new``, or a ``rejected``; a
cancel's ``canceled``) or a ``cancel_reject``. Order -> acknowledgement latency is the time
from just before the ``new_order`` frame is written to the arrival of that order's first
``execution_report``. A warm-up comes first; the rate counts the answers that arrive inside
the measuring window, the latencies are those of the new orders sent inside it (answered
before or after it ends: each phase drains before the next).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import WSMsgType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exchange.gateway.auth import sign_logon  # noqa: E402

SYMBOL = "CEA-2025"
TRADING_DAY = "2026-01-05"  # a Monday
MID_FEN = 5_820  # the instrument's reference price, 58.20
SPREAD_TICKS = 5  # new orders are priced uniformly within +-5 ticks of the mid
CANCEL_SHARE = 0.2  # of requests, when the client has a resting order to cancel
CASH_FEN = 10**13  # 100 billion CNY a member: no buy is ever short of cash
HOLDING_T = 10_000_000  # allowances a member holds at the start of day: no sell is short
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Everything the market rules default to, except the per-member limits a load test must lift.
CONFIG_TOML = """\
# gateway benchmark: the default market, with per-member limits opened for the load
[risk]
position_limit_t = 1000000000000

[risk.limits]
orders_per_second = 1000000000
order_burst = 1000000000
max_open_orders = 1000000000
"""

_PRICES = [f"{(MID_FEN + k) // 100}.{(MID_FEN + k) % 100:02d}".encode() for k in range(-SPREAD_TICKS, SPREAD_TICKS + 1)]


# -- the server process ------------------------------------------------------------------------


class ServedProcess:
    """``exchange serve`` in a child process over ``data_dir``; optionally under cProfile."""

    def __init__(self, data_dir: Path, members: list[str], profile_to: Path | None = None) -> None:
        self.data_dir = data_dir
        self.members = members
        self.profile_to = profile_to
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.tokens: dict[str, str] = {}

    def start(self, timeout_s: float = 60.0) -> "ServedProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        allocate_in_registry(self.data_dir, self.members)
        config = self.data_dir / "bench-config.toml"
        config.write_text(CONFIG_TOML)
        command = [sys.executable]
        if self.profile_to is not None:
            command += ["-m", "cProfile", "-o", str(self.profile_to)]
        command += ["-m", "exchange.serve", "serve", "--host", "127.0.0.1", "--port", "0",
                    "--data-dir", str(self.data_dir), "--config", str(config)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self._stdout = open(self.data_dir / "serve.stdout", "wb")
        self._stderr = open(self.data_dir / "serve.stderr", "wb")
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._stdout, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        out = self.data_dir / "serve.stdout"
        while time.monotonic() < deadline:
            text = out.read_text(errors="replace")
            if "exchange serving on " in text:
                self.url = text.split("exchange serving on ", 1)[1].split()[0].rstrip(";")
                self.tokens = json.loads((self.data_dir / "operator-tokens.json").read_text())
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start: {self.stderr_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process so far (every thread)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.data_dir / "serve.stderr").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGINT (a graceful shutdown: the profile, if any, is written at exit)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stdout.close()
        self._stderr.close()
        return self.proc.returncode


def allocate_in_registry(data_dir: Path, members: list[str]) -> None:
    """The registry the server will open (``registry.db``) holds each member's allowances."""
    from registry_adapter.demo import allocate_holdings
    from registry_adapter.sql import SqlRegistry

    registry = SqlRegistry(f"sqlite:///{data_dir / 'registry.db'}")
    registry.create_schema()
    allocate_holdings(registry, {member: {SYMBOL: HOLDING_T} for member in members})
    registry.close()


async def set_up(server: ServedProcess) -> dict[str, tuple[str, bytes]]:
    """Members, keys, cash, start of day and the continuous phase, through the operator API."""
    keys: dict[str, tuple[str, bytes]] = {}

    async with aiohttp.ClientSession(base_url=server.url) as http:
        async def call(role: str, path: str, body: dict | None = None) -> dict:
            headers = {"Authorization": f"Bearer {server.tokens[role]}"}
            async with http.post(path, json=body, headers=headers) as response:
                answer = await response.json()
                if response.status >= 300:
                    raise RuntimeError(f"POST {path}: {response.status} {answer}")
                return answer

        async def member(member_id: str) -> None:
            await call("admin", "/members", {"member_id": member_id, "kind": "voluntary"})
            issued = await call("admin", f"/members/{member_id}/credentials")
            keys[member_id] = (issued["key_id"], bytes.fromhex(issued["secret"]))
            await call("clearing", "/clearing/deposits", {"member_id": member_id, "amount_fen": CASH_FEN})

        await asyncio.gather(*(member(m) for m in server.members))
        await call("clearing", "/clearing/start-of-day", {"trading_day": TRADING_DAY})
        await call("admin", "/market/phase", {"phase": "continuous"})
    return keys


# -- the clients ----------------------------------------------------------------------------------


class _Answer(msgspec.Struct):
    """The fields of a server message the client looks at (the rest is skipped)."""

    type: str
    exec_type: str | None = None
    ord_status: str | None = None
    client_order_id: str | None = None
    reject_code: int | None = None
    code: int | None = None
    problem: str | None = None
    reason: str | None = None


_decode = msgspec.json.Decoder(_Answer).decode
_clock = time.perf_counter_ns


@dataclass
class Tally:
    """What the clients saw in one phase (shared by all clients)."""

    measuring: bool = False  # inside the measuring window
    answered: int = 0  # answers that arrived inside the window (new orders and cancels)
    acked: int = 0  # of which to new orders
    trades: int = 0  # trade reports inside the window (each side counts)
    rejects: dict = field(default_factory=dict)  # reject code -> count (whole phase)
    errors: dict = field(default_factory=dict)  # error problem -> count (whole phase)
    latencies_ns: array = field(default_factory=lambda: array("q"))  # of new orders sent inside the window


class LoadClient:
    """One member's WebSocket session, sending orders and cancels and timing the answers."""

    def __init__(self, index: int, member_id: str, key: tuple[str, bytes], seed: int) -> None:
        self.index, self.member_id, self.key = index, member_id, key
        self.rng = random.Random(seed)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.prefix = f"c{index}-".encode()
        self.count = 0
        self.sent_at: dict[str, int] = {}  # client order id -> send time (ns), until first report
        self.timed: set[str] = set()  # new orders sent inside the measuring window
        self.resting: dict[str, None] = {}  # open orders, oldest first (cancel candidates)
        self.cancelling: set[str] = set()
        self.tally = Tally()
        self.window = 0  # closed loop: requests to keep outstanding (0: open loop)
        self.refill = False  # closed loop: send a new request per answer
        self.closed: str | None = None

    @property
    def outstanding(self) -> int:
        return len(self.sent_at) + len(self.cancelling)

    async def connect(self, http: aiohttp.ClientSession, ws_url: str) -> None:
        self.ws = await http.ws_connect(ws_url, autoping=True, max_msg_size=0, compress=0, decode_text=False)
        key_id, secret = self.key
        now_ms = time.time_ns() // 1_000_000
        nonce = f"bench{self.index:04d}{random.getrandbits(48):012x}"
        logon = {"type": "logon", "key_id": key_id, "timestamp_ms": now_ms, "nonce": nonce,
                 "signature": sign_logon(secret, key_id, now_ms, nonce), "cancel_on_disconnect": True,
                 "heartbeat_s": 60}
        await self.ws.send_frame(msgspec.json.encode(logon), WSMsgType.TEXT)
        frame = await self.ws.receive(timeout=10)
        answer = _decode(frame.data) if frame.type == WSMsgType.TEXT else None
        if answer is None or answer.type != "logon_ack":
            raise RuntimeError(f"{self.member_id}: logon refused: {frame.data!r}")

    def next_frame(self) -> bytes:
        """The next request: a cancel of the oldest resting order (a fifth), else a new order."""
        rng = self.rng.random()
        if self.resting and rng < CANCEL_SHARE:
            client_order_id = next(iter(self.resting))
            del self.resting[client_order_id]
            self.cancelling.add(client_order_id)
            return b'{"type":"cancel","instrument":"CEA-2025","client_order_id":"' + client_order_id.encode() + b'"}'
        self.count += 1
        cid = self.prefix + str(self.count).encode()
        key = cid.decode()
        side = b"buy" if self.rng.random() < 0.5 else b"sell"
        price = _PRICES[self.rng.randrange(len(_PRICES))]
        qty = str(self.rng.randint(1, 10)).encode()
        if self.tally.measuring:
            self.timed.add(key)
        self.sent_at[key] = _clock()
        return (b'{"type":"new_order","client_order_id":"' + cid + b'","instrument":"CEA-2025","side":"' + side
                + b'","qty":' + qty + b',"price":"' + price + b'"}')

    async def send_next(self) -> None:
        await self.ws.send_frame(self.next_frame(), WSMsgType.TEXT)

    async def read(self) -> None:
        """Handle every message until the connection closes; in closed loop, refill the window."""
        ws = self.ws
        try:
            while True:
                frame = await ws.receive()
                if frame.type != WSMsgType.TEXT:
                    if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                        self.closed = self.closed or f"connection ended ({frame.type.name})"
                        return
                    continue
                answered = self.handle(_decode(frame.data))
                if self.refill:
                    for _ in range(answered):
                        await self.send_next()
        except (ConnectionError, RuntimeError) as error:
            self.closed = self.closed or repr(error)

    def handle(self, message: _Answer) -> int:
        """Book-keeping for one message; the number of requests it answered."""
        kind = message.type
        tally = self.tally
        if kind == "execution_report":
            cid = message.client_order_id
            exec_type = message.exec_type
            answered = 0
            sent = self.sent_at.pop(cid, None)
            if sent is not None:
                answered = 1
                if tally.measuring:
                    tally.answered += 1
                    tally.acked += 1
                if cid in self.timed:
                    self.timed.discard(cid)
                    tally.latencies_ns.append(_clock() - sent)
            if exec_type == "new":
                if message.ord_status == "new":
                    self.resting[cid] = None
            elif exec_type == "trade":
                if tally.measuring:
                    tally.trades += 1
                if message.ord_status == "filled":
                    self.resting.pop(cid, None)
            elif exec_type == "canceled":
                self.resting.pop(cid, None)
                if cid in self.cancelling:
                    self.cancelling.discard(cid)
                    answered += 1
                    if tally.measuring:
                        tally.answered += 1
            elif exec_type == "rejected":
                tally.rejects[message.reject_code] = tally.rejects.get(message.reject_code, 0) + 1
            return answered
        if kind == "cancel_reject":
            cid = message.client_order_id
            if cid in self.cancelling:
                self.cancelling.discard(cid)
                if tally.measuring:
                    tally.answered += 1
                return 1
            return 0
        if kind == "error":
            tally.errors[message.problem] = tally.errors.get(message.problem, 0) + 1
        elif kind == "session_closing":
            self.closed = f"session_closing: {message.reason}"
        return 0


# -- the phases -----------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    offered_per_s: float | None  # open loop: the pacer's rate; closed loop: None
    seconds: float  # the measuring window
    answered: int
    acked: int
    trades: int
    latencies_ns: array
    server_cpu_s: float
    client_cpu_s: float
    rejects: dict
    errors: dict
    behind_ms: float = 0.0  # open loop: how far the pacer fell behind its schedule at worst
    unanswered: int = 0  # requests still outstanding when the drain gave up
    resting: int = 0  # the clients' resting orders at the end

    @property
    def ops_per_s(self) -> float:
        return self.answered / self.seconds

    @property
    def server_cpu_percent(self) -> float:
        return 100 * self.server_cpu_s / self.seconds

    @property
    def client_cpu_percent(self) -> float:
        return 100 * self.client_cpu_s / self.seconds


class Load:
    """The connected clients of one run and the server they drive."""

    def __init__(self, server: ServedProcess, keys: dict[str, tuple[str, bytes]], seed: int) -> None:
        self.server = server
        self.clients = [LoadClient(i, member, keys[member], seed * 1_000 + i) for i, member in enumerate(server.members)]
        self.readers: list[asyncio.Task] = []

    async def connect(self, http: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(client.connect(http, self.server.ws_url) for client in self.clients))
        self.readers = [asyncio.create_task(client.read()) for client in self.clients]

    async def close(self) -> None:
        for client in self.clients:
            client.refill = False
            await client.ws.close()
        await asyncio.wait(self.readers, timeout=5)

    def _new_tally(self) -> Tally:
        tally = Tally()
        for client in self.clients:
            client.tally = tally
            client.timed.clear()
        return tally

    def _check(self) -> None:
        closed = [f"{c.member_id}: {c.closed}" for c in self.clients if c.closed]
        if closed:
            raise RuntimeError(f"sessions ended during the run: {closed[:3]}; server: {self.server.stderr_tail(5)}")

    async def _measure(self, tally: Tally, warmup_s: float, measure_s: float) -> tuple[float, float, float]:
        """Warm up, then open the measuring window; (seconds, server CPU s, client CPU s)."""
        await asyncio.sleep(warmup_s)
        self._check()
        cpu0, own0, t0 = self.server.cpu_seconds(), time.process_time(), time.perf_counter()
        tally.measuring = True
        await asyncio.sleep(measure_s)
        tally.measuring = False
        t1, cpu1, own1 = time.perf_counter(), self.server.cpu_seconds(), time.process_time()
        self._check()
        return t1 - t0, cpu1 - cpu0, own1 - own0

    async def _drain(self, timeout_s: float = 15.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            left = sum(c.outstanding for c in self.clients)
            if not left:
                return 0
            await asyncio.sleep(0.02)
        return sum(c.outstanding for c in self.clients)

    def _result(self, tally: Tally, offered: float | None, window: tuple[float, float, float], behind_ms: float,
                unanswered: int) -> PhaseResult:
        seconds, server_cpu, client_cpu = window
        return PhaseResult(offered, seconds, tally.answered, tally.acked, tally.trades, tally.latencies_ns,
                           server_cpu, client_cpu, dict(tally.rejects), dict(tally.errors), behind_ms, unanswered,
                           sum(len(c.resting) for c in self.clients))

    async def closed_loop(self, window: int, warmup_s: float, measure_s: float) -> PhaseResult:
        """Each client keeps ``window`` requests outstanding: the rate the server sustains."""
        tally = self._new_tally()
        for client in self.clients:
            client.refill = True
        for client in self.clients:
            for _ in range(window):
                await client.send_next()
        measured = await self._measure(tally, warmup_s, measure_s)
        for client in self.clients:
            client.refill = False
        unanswered = await self._drain()
        return self._result(tally, None, measured, 0.0, unanswered)

    async def open_loop(self, rate_per_s: float, warmup_s: float, measure_s: float) -> PhaseResult:
        """One pacer sends ``rate_per_s`` requests a second in total, round-robin over the clients."""
        tally = self._new_tally()
        stop = asyncio.Event()
        behind = [0.0]

        async def pace() -> None:
            clients, n = self.clients, len(self.clients)
            start = time.perf_counter()
            sent = 0
            turn = 0
            while not stop.is_set():
                due = int((time.perf_counter() - start) * rate_per_s)
                if due - sent > 1:
                    behind[0] = max(behind[0], (due - sent) / rate_per_s * 1e3)
                while sent < due:
                    await clients[turn].send_next()
                    turn = turn + 1 if turn + 1 < n else 0
                    sent += 1
                await asyncio.sleep(0.0005)

        pacer = asyncio.create_task(pace())
        try:
            measured = await self._measure(tally, warmup_s, measure_s)
        finally:
            stop.set()
            await pacer
        unanswered = await self._drain()
        return self._result(tally, rate_per_s, measured, behind[0], unanswered)


async def drive(server: ServedProcess, keys: dict[str, tuple[str, bytes]], seed: int, window: int,
                warmup_s: float, measure_s: float, paced_rate: float, light_rate: float,
                share_of_max: float = 0.9) -> tuple[PhaseResult, PhaseResult, PhaseResult]:
    """Three phases on one server: closed loop first; then open loop at ``paced_rate`` (or,
    when the server sustained less, at ``share_of_max`` of what it sustained); then open loop
    at ``light_rate`` (at most half of what it sustained), to see latency away from saturation."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        load = Load(server, keys, seed)
        await load.connect(http)
        try:
            sustained = await load.closed_loop(window, warmup_s, measure_s)
            rate = paced_rate if sustained.ops_per_s >= paced_rate else share_of_max * sustained.ops_per_s
            paced = await load.open_loop(rate, warmup_s, measure_s)
            light = await load.open_loop(min(light_rate, sustained.ops_per_s / 2), warmup_s, measure_s)
        finally:
            await load.close()
    return sustained, paced, light


def percentile(sorted_values, q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]
