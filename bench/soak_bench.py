"""gateway.soak: hostile clients against ``exchange serve`` while eight honest members trade.

Issue 10 ("Must show"): a soak with 1,000 idle connections, 100 slowloris clients and one
flooding member while eight honest members trade; the honest members' p99 latency and order
count compared with a run without the attackers, and the server's RSS. Measured here, twice,
each time on a fresh server (so the attack run does not inherit the baseline's book):

gateway.soak.baseline   the eight honest members alone
gateway.soak.attack     the same members, the same orders, with the attackers running
gateway.soak            the two compared: ``p99_ratio`` (attack / baseline), ``orders_ratio``

The server is ``python -m exchange.serve`` in its own process (:class:`bench.gateway_load.
ServedProcess`: a fresh data directory, SQLite stores, the journal's default ``batched`` fsync),
set up through the operator API (:func:`bench.gateway_load.set_up`: members, keys, cash, start of
day, continuous phase). Its descriptor limit is raised to the hard limit (or to what the attack
needs, if less) before it starts (``preexec_fn``), so the attack meets the server's own caps,
not the shell's ``ulimit -n``. Its configuration keeps the market's per-member order rate (100
orders/s, bursts of 200; the gateway's frame budgets follow from it: see
:mod:`exchange.gateway.member.budget`) and lifts only the position and open-order limits.

The honest members (this process, one asyncio loop, one aiohttp WebSocket session each) log on
first, then each sends ``RATE_PER_S`` (50) new day limit orders a second on a fixed schedule for
the window (an order late because this process stalled goes as soon as it can: every run sends
exactly ``8 x 50 x seconds`` orders): buys and sells, 1-10 t, uniform within +-5 ticks of 58.20
(about half trade), seeded. Latency: from just before the ``new_order`` frame is written to
the first ``execution_report`` of its client order id. 50 orders/s is half the member's order
rate and a small share of what the server sustains (``gateway.8clients``): the honest load is
far below capacity, so any latency the attack adds is the attack's.

The attackers run in a second child process (this file, ``__soak_attackers__``), so their
work does not share the honest members' event loop and skew their clock:

* ``IDLE`` (1,000) TCP connections that send nothing, spread over ``IDLE_SOURCES`` loopback
  source addresses (``127.1.0.1`` to ``127.1.3.250``: Linux routes all of 127/8 to the
  loopback interface), as many clients would; when the server ends one, its client connects
  again after ``RECONNECT_AFTER_S``, so the pressure stays on for the whole window;
* ``SLOWLORIS`` (100) clients, from their own source addresses (``127.10.0.x``), that send the start of an HTTP
  request (``GET /ws HTTP/1.1``, ``Host``, half a header) and then one more header byte every
  ``SLOWLORIS_BYTE_EVERY_S`` seconds, reconnecting likewise when cut;
* one flooding member, logged on with its own key (from 127.0.0.1, as the honest members),
  sending new orders and cancels of unknown order ids as fast as its socket takes them, and
  reading what comes back (a flooder that does not read is a slow reader and is cut: another
  test). When the server ends its session it logs on again.

The flooder logs on first (a member, connected before the connections pile up, as the honest
members are), then the idle and slowloris clients start. The honest members trade only once
the attackers report ready: the flooder is sending and every idle and slowloris client has made
its first connection attempt. RSS is the
server's ``VmRSS`` (``/proc/<pid>/status``): at the start (set up, members logged on, before any
order or attacker), its peak (sampled every 0.25 s, and the kernel's ``VmHWM``) and at the end
(attackers gone, orders answered).

``python -m bench --only gateway.soak`` (60 s a run; ``--size small``: 10 s), or
``python -m bench.soak_bench [--seconds N]``. ``tests/gateway/test_soak.py`` runs the same
:func:`soak` with a shorter window and asserts what does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import WSMsgType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gateway_load import Market, ServedProcess, percentile, set_up  # noqa: E402
from bench.registry import Context, register  # noqa: E402
from exchange.gateway.member.auth import sign_logon  # noqa: E402

HERE = Path(__file__).resolve()
HONEST = [f"H{i}" for i in range(1, 9)]
FLOODER = "F1"
RATE_PER_S = 50  # orders a second per honest member
IDLE = 1_000
IDLE_SOURCES = 1_000  # one address per idle connection: many clients, each under any per-address cap
SLOWLORIS = 100
SLOWLORIS_BYTE_EVERY_S = 2.0
RECONNECT_AFTER_S = 1.0
DESCRIPTORS_NEEDED = IDLE + SLOWLORIS + 1_024  # the attack, plus the stores, the members and slack
SECONDS = {"full": 60.0, "small": 10.0}
SYMBOL = "CEA-2025"
MID_FEN = 5_820

# The market's defaults, with the order rate a little above them (the honest members send half
# of it), the position and open-order limits lifted for a long run, and the fixed trading day of
# bench.gateway_load allowed whatever today is. The gateway's frame budgets follow from the order rate.
CONFIG_TOML = """\
# gateway.soak: the default market; per-member order rate 100/s (bursts of 200)
[risk]
position_limit_t = 1000000000

[risk.limits]
orders_per_second = 100
order_burst = 200
max_open_orders = 1000000

[calendar]
max_days_from_today = 36600   # the benchmark opens its fixed day, whatever today is
automatic = false   # and runs the day itself (the calendar driver would open today)

[gateway]
# The idle and slowloris clients are held, not churned: with the default 10 s header timeout
# they are cut and reconnect every ~11 s, and that churn (1,100 closes and reconnects on the
# same two cores as the attackers' process) put the honest p99 at 170-660 ms against a
# 35-45 ms baseline. The timeouts have their own tests (tests/gateway/test_connection_limits.py).
header_timeout_ms = 120000
"""


def raise_descriptor_limit() -> None:
    """Let this process hold the attack's connections (``preexec_fn`` of the children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = DESCRIPTORS_NEEDED if hard == resource.RLIM_INFINITY else min(hard, DESCRIPTORS_NEEDED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """A memory figure of a process from ``/proc/<pid>/status``, in MB (NaN once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def logon_frame(key: tuple[str, bytes], tag: str) -> str:
    key_id, secret = key
    now_ms = time.time_ns() // 1_000_000
    nonce = f"soak-{tag}-{random.getrandbits(64):016x}"
    return json.dumps({"type": "logon", "key_id": key_id, "timestamp_ms": now_ms, "nonce": nonce,
                       "signature": sign_logon(secret, key_id, now_ms, nonce), "heartbeat_s": 30})


class _Reply(msgspec.Struct):
    """The fields of a server message the soak's clients look at (the rest is skipped)."""

    type: str
    exec_type: str | None = None
    client_order_id: str | None = None
    reject_code: int | None = None
    code: int | None = None
    reason: str | None = None


_decode = msgspec.json.Decoder(_Reply).decode


def _count(tally: dict[str, int], key: object) -> None:
    tally[str(key)] = tally.get(str(key), 0) + 1


# ---------------------------------------------------------------------------- honest members


class Honest:
    """One honest member's session: paced orders, and the latency of each acknowledgement."""

    def __init__(self, index: int, member_id: str, key: tuple[str, bytes], seed: int) -> None:
        self.index, self.member_id, self.key = index, member_id, key
        self.rng = random.Random(seed)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sent_at: dict[str, int] = {}  # client order id -> perf_counter_ns when sent, until answered
        self.latencies_ns: list[int] = []
        self.sent = 0
        self.acked = 0  # answered ``new`` (accepted)
        self.rejects: dict[str, int] = {}  # answered ``rejected``, by reject code
        self.errors: dict[str, int] = {}  # ``error`` messages, by code (13: throttled)
        self.closed: str | None = None  # why the session ended, unless this client ended it
        self.leaving = False

    async def connect(self, http: aiohttp.ClientSession, ws_url: str) -> None:
        self.ws = await http.ws_connect(ws_url, autoping=True, max_msg_size=0)
        await self.ws.send_str(logon_frame(self.key, self.member_id))
        frame = await self.ws.receive(timeout=10)
        if frame.type != WSMsgType.TEXT or _decode(frame.data).type != "logon_ack":
            raise RuntimeError(f"{self.member_id}: logon refused: {frame.data!r}")

    @property
    def outstanding(self) -> int:
        return len(self.sent_at)

    async def read(self) -> None:
        assert self.ws is not None, "connect() first"
        try:
            async for frame in self.ws:
                if frame.type == WSMsgType.TEXT:
                    self._handle(_decode(frame.data))
        except (aiohttp.ClientError, ConnectionError) as error:
            self.closed = self.closed or f"reading failed: {error!r}"
        if not self.leaving:
            self.closed = self.closed or "connection ended"

    async def leave(self) -> None:
        self.leaving = True
        if self.ws is not None:
            await self.ws.close()

    def _handle(self, reply: _Reply) -> None:
        if reply.type == "execution_report":
            sent = self.sent_at.pop(reply.client_order_id or "", None)
            if sent is None:
                return  # a later report of an order already answered (a trade)
            self.latencies_ns.append(time.perf_counter_ns() - sent)
            if reply.exec_type == "rejected":
                _count(self.rejects, reply.reject_code)
            else:
                self.acked += 1
        elif reply.type == "error":
            _count(self.errors, reply.code)
        elif reply.type == "session_closing":
            self.closed = f"session_closing: {reply.reason}"

    async def trade(self, seconds: float, rate: float) -> None:
        """``rate`` orders a second on a fixed schedule for ``seconds``; a late order goes at once."""
        assert self.ws is not None, "connect() first"
        loop = asyncio.get_running_loop()
        start = loop.time() + self.index / (rate * len(HONEST))  # members interleaved, not in step
        for k in range(round(seconds * rate)):
            delay = start + k / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._send_order(k)

    async def _send_order(self, k: int) -> None:
        assert self.ws is not None
        rng = self.rng
        cid = f"{self.member_id}-{k}"
        price = MID_FEN + rng.randint(-5, 5)
        frame = json.dumps({"type": "new_order", "client_order_id": cid, "instrument": SYMBOL,
                            "side": rng.choice(("buy", "sell")), "qty": rng.randint(1, 10),
                            "price": f"{price // 100}.{price % 100:02d}"})
        self.sent_at[cid] = time.perf_counter_ns()
        self.sent += 1
        await self.ws.send_str(frame)


# ---------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    label: str
    seconds: float
    sent: int
    acked: int
    unanswered: int
    rejects: dict[str, int]
    errors: dict[str, int]
    closed: list[str]
    latencies_ns: list[int] = field(repr=False)
    rss_start_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    hwm_mb: float
    alive: bool  # /health answered and a fresh logon was acknowledged, after the run
    server_log_bytes: int
    attack: dict = field(default_factory=dict)  # the attackers' counts (empty for the baseline)
    stop_code: int | None = None  # the server's exit code after a SIGINT (0: a clean shutdown)

    def p(self, q: float) -> float:
        """The q-quantile of the acknowledgement latency, in ms."""
        return percentile(sorted(self.latencies_ns), q) / 1e6

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ns, default=0) / 1e6

    def summary(self) -> str:
        return (f"{self.label}: {self.sent:,} honest orders sent, {self.acked:,} acknowledged, "
                f"{self.unanswered} unanswered, rejects {self.rejects or 'none'}, errors {self.errors or 'none'}, "
                f"sessions closed {self.closed or 'none'}; ack latency p50 {self.p(0.5):.1f} ms, "
                f"p99 {self.p(0.99):.1f} ms, max {self.max_ms:.1f} ms; server RSS start {self.rss_start_mb:.0f} MB, "
                f"peak {self.rss_peak_mb:.0f} MB (VmHWM {self.hwm_mb:.0f} MB), end {self.rss_end_mb:.0f} MB; "
                f"server log {self.server_log_bytes:,} bytes; alive after: {self.alive}")


class Attackers:
    """The attackers' child process: started, ready, stopped with their counts."""

    def __init__(self, process: asyncio.subprocess.Process, ready: dict) -> None:
        self.process, self.ready = process, ready

    @classmethod
    async def start(cls, server: ServedProcess, flooder_key: tuple[str, bytes], timeout_s: float = 60.0) -> Attackers:
        key_id, secret = flooder_key
        spec = json.dumps({"url": server.url, "key_id": key_id, "secret": secret.hex()})
        code = f"import runpy; runpy.run_path({str(HERE)!r}, run_name='__soak_attackers__')"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, spec, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, preexec_fn=raise_descriptor_limit)
        assert process.stdout is not None  # stdout=PIPE
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError("the attackers did not get ready") from None
        if not line:
            raise RuntimeError(f"the attackers' process ended ({await process.wait()})")
        return cls(process, json.loads(line))

    async def stop(self, timeout_s: float = 30.0) -> dict:
        """Tell them to stop (end of stdin); their final counts."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise RuntimeError("the attackers did not stop") from None
        return {"ready": self.ready, **json.loads(line)}


async def _sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass


async def _drain(members: list[Honest], timeout_s: float = 15.0) -> int:
    """Wait for every honest order's answer; how many are still unanswered at the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(m.outstanding for m in members):
        await asyncio.sleep(0.05)
    return sum(m.outstanding for m in members)


async def _alive(http: aiohttp.ClientSession, server: ServedProcess, key: tuple[str, bytes]) -> bool:
    """The server answers ``/health`` and acknowledges a fresh logon (a second session)."""
    if server.proc is None or server.proc.poll() is not None:
        return False
    try:
        async with http.get(server.url + "/health", timeout=aiohttp.ClientTimeout(total=10)) as response:
            if response.status != 200:
                return False
        probe = Honest(99, HONEST[0], key, 0)
        await probe.connect(http, server.ws_url)
        await probe.leave()
        return True
    except (aiohttp.ClientError, RuntimeError, TimeoutError):
        return False


async def run_once(label: str, data_dir: Path, seconds: float, attack: bool, seed: int,
                   rate: float = RATE_PER_S) -> RunResult:
    """One fresh server, the honest members trading for ``seconds``, with or without the attackers."""
    server = ServedProcess(data_dir, [*HONEST, FLOODER], config_toml=CONFIG_TOML,
                           preexec_fn=raise_descriptor_limit).start()
    try:
        market = await set_up(server)
        result = await _trade(label, server, market, seconds, attack, seed, rate)
    finally:
        code = server.stop()
    result.stop_code = code
    return result


async def _trade(label: str, server: ServedProcess, market: Market, seconds: float, attack: bool,
                 seed: int, rate: float) -> RunResult:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        members = [Honest(i, m, market.keys[m], seed * 100 + i) for i, m in enumerate(HONEST)]
        await asyncio.gather(*(m.connect(http, server.ws_url) for m in members))
        readers = [asyncio.create_task(m.read()) for m in members]
        rss_start = rss_mb(server.pid)
        peak, sampling = [rss_start], asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(server.pid, peak, sampling))
        attackers = await Attackers.start(server, market.keys[FLOODER]) if attack else None
        try:
            await asyncio.gather(*(m.trade(seconds, rate) for m in members))
            unanswered = await _drain(members)
        finally:
            counts = await attackers.stop() if attackers is not None else {}
        await asyncio.sleep(1.0)  # the server closes what the attackers left
        sampling.set()
        await sampler
        alive = await _alive(http, server, market.keys[HONEST[0]])
        rss_end, hwm = rss_mb(server.pid), rss_mb(server.pid, "VmHWM")
        for m in members:
            await m.leave()
        await asyncio.wait(readers, timeout=5)
    return RunResult(
        label, seconds, sum(m.sent for m in members), sum(m.acked for m in members), unanswered,
        _merged(m.rejects for m in members), _merged(m.errors for m in members),
        [f"{m.member_id}: {m.closed}" for m in members if m.closed],
        [ns for m in members for ns in m.latencies_ns], rss_start, max(peak[0], rss_end), rss_end, hwm, alive,
        _log_bytes(server), counts,
    )


def _merged(tallies) -> dict[str, int]:
    merged: dict[str, int] = {}
    for tally in tallies:
        for key, n in tally.items():
            merged[key] = merged.get(key, 0) + n
    return merged


def _log_bytes(server: ServedProcess) -> int:
    return sum((server.data_dir / name).stat().st_size for name in ("serve.stdout", "serve.stderr")
               if (server.data_dir / name).exists())


async def soak_async(seconds: float, seed: int = 20250602) -> tuple[RunResult, RunResult]:
    """The baseline run, then the attack run; each on a fresh server in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        baseline = await run_once("baseline", Path(scratch) / "baseline", seconds, False, seed)
        attacked = await run_once("attack", Path(scratch) / "attack", seconds, True, seed)
    return baseline, attacked


def soak(seconds: float, seed: int = 20250602) -> tuple[RunResult, RunResult]:
    return asyncio.run(soak_async(seconds, seed))


# ---------------------------------------------------------------------------- the bench


@register("gateway.soak", "1,000 idle + 100 slowloris + a flooding member vs 8 honest members at 50 orders/s")
def gateway_soak(ctx: Context) -> None:
    seconds = SECONDS[ctx.size]
    ctx.note(f"gateway.soak: two fresh servers, {seconds:g} s of honest trading each ({len(HONEST)} members x "
             f"{RATE_PER_S} orders/s); the second with {IDLE:,} idle connections, {SLOWLORIS} slowloris clients "
             f"and one flooding member in another process")
    baseline, attacked = soak(seconds, ctx.seed)
    report(ctx, baseline, attacked)


def report(ctx: Context, baseline: RunResult, attacked: RunResult) -> None:
    for run in (baseline, attacked):
        ctx.note(run.summary())
        bench = f"gateway.soak.{run.label}"
        ctx.report(bench, "orders_sent", run.sent, "orders")
        ctx.report(bench, "orders_acked", run.acked, "orders")
        for q, name in ((0.5, "latency_p50_ms"), (0.99, "latency_p99_ms")):
            ctx.report(bench, name, round(run.p(q), 2), "ms")
        ctx.report(bench, "latency_max_ms", round(run.max_ms, 2), "ms")
        ctx.report(bench, "server_rss_start_mb", round(run.rss_start_mb, 1), "MB")
        ctx.report(bench, "server_rss_peak_mb", round(run.rss_peak_mb, 1), "MB")
        ctx.report(bench, "server_rss_end_mb", round(run.rss_end_mb, 1), "MB")
        ctx.report(bench, "server_log_bytes", run.server_log_bytes, "bytes")
    counts = attacked.attack
    ctx.note(f"attackers when ready: {counts.get('ready')}")
    ctx.note(f"attackers at the end: { {k: v for k, v in counts.items() if k != 'ready'} }")
    for name in ("idle_opened", "idle_open_max", "idle_cut", "idle_refused", "slow_opened", "slow_cut",
                 "slow_refused", "flood_sent", "flood_answered", "flood_throttled", "flood_sessions"):
        if name in counts:
            ctx.report("gateway.soak.attack", name, counts[name], "count")
    ctx.report("gateway.soak", "p99_ratio", round(attacked.p(0.99) / baseline.p(0.99), 2), "ratio")
    ctx.report("gateway.soak", "orders_ratio", round(attacked.acked / max(1, baseline.acked), 3), "ratio")


# ---------------------------------------------------------------------------- the attackers (child)


@dataclass
class AttackCounts:
    idle_opened: int = 0  # connections made (the first ones and every reconnect)
    idle_refused: int = 0  # connection attempts that failed
    idle_cut: int = 0  # connections the server ended
    idle_open: int = 0  # open now
    idle_open_max: int = 0
    idle_held_s: list[float] = field(default_factory=list)  # how long each cut connection lived
    slow_opened: int = 0
    slow_refused: int = 0
    slow_cut: int = 0
    slow_open: int = 0
    slow_open_max: int = 0
    slow_held_s: list[float] = field(default_factory=list)
    slow_bytes: int = 0  # header bytes dripped
    flood_sessions: int = 0  # logons acknowledged
    flood_logon_failed: int = 0
    flood_sent: int = 0  # frames written
    flood_answered: int = 0  # messages received
    flood_throttled: int = 0  # error 13
    flood_replies: dict[str, int] = field(default_factory=dict)  # by type / exec_type / error code
    flood_closed: dict[str, int] = field(default_factory=dict)  # session_closing reasons

    def figures(self) -> dict:
        figures = asdict(self)
        for kind in ("idle", "slow"):
            held = sorted(figures.pop(f"{kind}_held_s"))
            figures[f"{kind}_held_median_s"] = round(held[len(held) // 2], 2) if held else None
        return figures


def _source(block: int, i: int) -> str:
    """The ``i``-th loopback source address of a block: ``127.<block>.<i // 250>.<1 + i % 250>``."""
    return f"127.{block}.{i // 250}.{1 + i % 250}"


class AttackerProcess:
    def __init__(self, url: str, key: tuple[str, bytes]) -> None:
        self.url, self.key = url, key
        host_port = url.split("//", 1)[1]
        self.host, self.port = host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1])
        self.counts = AttackCounts()
        self.first_attempts = 0  # idle and slowloris clients that made their first attempt
        self.stop = asyncio.Event()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _connect(self, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, local_addr=(source, 0)), 10)
        except (OSError, TimeoutError):
            return None

    async def idle(self, i: int) -> None:
        """Connect, send nothing; when the server ends it, connect again."""
        c, first = self.counts, True
        source = _source(1, i % IDLE_SOURCES)
        while not self.stop.is_set():
            connection = await self._connect(source)
            if first:
                self.first_attempts, first = self.first_attempts + 1, False
            if connection is None:
                c.idle_refused += 1
            else:
                c.idle_opened += 1
                c.idle_open += 1
                c.idle_open_max = max(c.idle_open_max, c.idle_open)
                held = await self._hold(*connection, None)
                c.idle_open -= 1
                if held is not None:
                    c.idle_cut += 1
                    c.idle_held_s.append(held)
            await self._pause(RECONNECT_AFTER_S)

    async def slowloris(self, i: int) -> None:
        """Half an HTTP request, then a header byte every few seconds; again when cut."""
        c, first = self.counts, True
        await self._pause(i * SLOWLORIS_BYTE_EVERY_S / SLOWLORIS)  # spread the drips over the period
        source = _source(10, i)
        while not self.stop.is_set():
            connection = await self._connect(source)
            if first:
                self.first_attempts, first = self.first_attempts + 1, False
            if connection is None:
                c.slow_refused += 1
            else:
                c.slow_opened += 1
                c.slow_open += 1
                c.slow_open_max = max(c.slow_open_max, c.slow_open)
                connection[1].write(f"GET /ws HTTP/1.1\r\nHost: {self.host}\r\nX-Slow: ".encode())
                held = await self._hold(*connection, self._drip(connection[1]))
                c.slow_open -= 1
                if held is not None:
                    c.slow_cut += 1
                    c.slow_held_s.append(held)
            await self._pause(RECONNECT_AFTER_S)

    async def _drip(self, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await asyncio.sleep(SLOWLORIS_BYTE_EVERY_S)
                writer.write(b"a")
                await writer.drain()
                self.counts.slow_bytes += 1
        except (ConnectionError, OSError):
            pass

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip) -> float | None:
        """Keep the connection until the server ends it (its seconds) or the attack stops (None)."""
        started = time.monotonic()
        dripping = asyncio.ensure_future(drip) if drip is not None else None
        ended = asyncio.ensure_future(self._until_eof(reader))
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in (dripping, ended, stopping):
            if task is not None:
                task.cancel()
        writer.transport.abort()
        return None if self.stop.is_set() else time.monotonic() - started

    @staticmethod
    async def _until_eof(reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(65536):
                pass  # an answer (408, 503): read on until the server closes
        except (ConnectionError, OSError):
            pass

    async def flood(self) -> None:
        """One member's sessions, writing orders and unknown-id cancels as fast as the socket takes them."""
        c = self.counts
        async with aiohttp.ClientSession() as http:
            while not self.stop.is_set():
                try:
                    ws = await http.ws_connect(self.url + "/ws", autoping=True, max_msg_size=0)
                    await ws.send_str(logon_frame(self.key, "flood"))
                    frame = await ws.receive(timeout=10)
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    c.flood_logon_failed += 1
                    await self._pause(RECONNECT_AFTER_S)
                    continue
                if frame.type != WSMsgType.TEXT or _decode(frame.data).type != "logon_ack":
                    c.flood_logon_failed += 1
                    await ws.close()
                    await self._pause(RECONNECT_AFTER_S)
                    continue
                c.flood_sessions += 1
                reader = asyncio.create_task(self._flood_read(ws))
                await self._flood_write(ws, c.flood_sessions)
                await ws.close()
                reader.cancel()
                await self._pause(0.2)

    async def _flood_write(self, ws: aiohttp.ClientWebSocketResponse, session: int) -> None:
        c, n = self.counts, 0
        try:
            while not ws.closed and not self.stop.is_set():
                n += 1
                if n % 2:
                    frame = {"type": "new_order", "client_order_id": f"flood-{session}-{n}", "instrument": SYMBOL,
                             "side": "buy", "qty": 1, "price": "53.00"}
                else:
                    frame = {"type": "cancel", "instrument": SYMBOL, "order_id": 10**12 + n}
                await ws.send_str(json.dumps(frame))
                c.flood_sent += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)  # let the idle and slowloris clients run too
        except (ConnectionError, RuntimeError):
            pass

    async def _flood_read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        c = self.counts
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            reply = _decode(frame.data)
            c.flood_answered += 1
            if reply.type == "error":
                c.flood_throttled += reply.code == 13
                _count(c.flood_replies, f"error {reply.code}")
            elif reply.type == "execution_report":
                _count(c.flood_replies, f"{reply.exec_type} {reply.reject_code or ''}".strip())
            elif reply.type == "session_closing":
                _count(c.flood_closed, reply.reason)
            else:
                _count(c.flood_replies, reply.type)

    async def run(self) -> None:
        """The flooder first (a member already logged on when the connections pile up, as an
        honest member is), then the idle and slowloris clients; ready once all are under way."""
        tasks = [asyncio.create_task(self.flood())]
        await self._until(lambda: self.counts.flood_sent > 0, 15)
        tasks += [asyncio.create_task(self.idle(i)) for i in range(IDLE)]
        tasks += [asyncio.create_task(self.slowloris(i)) for i in range(SLOWLORIS)]
        await self._until(lambda: self.first_attempts == IDLE + SLOWLORIS, 45)
        await asyncio.sleep(1.0)  # the first drips sent
        print(json.dumps(self.counts.figures()), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # until the parent closes our stdin
        self.stop.set()
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
        print(json.dumps(self.counts.figures()), flush=True)

    @staticmethod
    async def _until(condition, timeout_s: float) -> None:
        """Wait for ``condition()``, at most ``timeout_s`` (the parent checks the counts)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not condition():
            await asyncio.sleep(0.05)


def _attackers_main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    raise_descriptor_limit()
    asyncio.run(AttackerProcess(spec["url"], (spec["key_id"], bytes.fromhex(spec["secret"]))).run())


if __name__ == "__soak_attackers__":
    _attackers_main(sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS["full"], help="honest trading per run (default 60)")
    parser.add_argument("--seed", type=int, default=20250602)
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 3600:
        parser.error(f"--seconds must be from 1 to 3600, not {args.seconds:g}")
    ctx = Context(seed=args.seed)
    baseline, attacked = soak(args.seconds, args.seed)
    report(ctx, baseline, attacked)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
