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

Requests: what a strategy of :mod:`exchange.sim.strategies` decides, on one instrument; two
mixes (``mix``):

* ``load`` (the default): :func:`~exchange.sim.strategies.load_turn`, the mix this generator
  sent before it used the shared strategies, so that its figures compare with older runs: new
  day limit orders (buys and sells, uniform over +-5 ticks around 58.20, 1-10 t, so about half
  cross and trade) and, for a fifth of the requests (when the client has a resting order), a
  cancel (by client order id) of the client's oldest resting order. Same draws, same order, as
  before: the same seed sends the same requests.
* ``members``: :func:`~exchange.sim.strategies.member_turn`, the simulated members of
  ``exchange simulate``: each client is a maker, a taker or a trader (seeded), quoting around
  its fair value (which drifts and follows its own fills), crossing with IOC, FOK and market
  orders, placing day and GTC orders (larger: 10 to 5,000 t), cancelling and amending them (by
  client order id), now and then a mass cancel and a deliberately bad order. Another load
  per request (other sizes, order types, matching and rejects): its figures do not compare
  with the ``load`` mix's. A taker's limit goes at its fair value (no book view, see below).

The clients subscribe to no market data (this is order entry). A request is answered by the first ``execution_report`` for its client order id (a new
order's ``new``, or a ``rejected``), by a cancel's or amend's ``canceled``/``replaced``, or by a
``cancel_reject``; a mass cancel has no single answer and is not counted. Order ->
acknowledgement latency is the time from just before the ``new_order`` frame is written to the
arrival of that order's first ``execution_report``. A warm-up comes first; the rate counts the
answers that arrive inside the measuring window, the latencies are those of the new orders
sent inside it (answered before or after it ends: each phase drains before the next).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import aiohttp
import msgspec
from aiohttp import WSMsgType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exchange.gateway.member.auth import sign_logon  # noqa: E402
from exchange.gateway.member.wire import (  # noqa: E402
    ORDER_TYPE_NAMES,
    SIDE_NAMES,
    TIF_NAMES,
    AmendRequest,
    CancelRequest,
    MassCancelRequest,
    NewOrder,
    encode,
    format_price,
    parse_price,
)
from exchange.model import Side  # noqa: E402
from exchange.sim.strategies import (  # noqa: E402
    AmendIntent,
    CancelIntent,
    MarketView,
    MassCancelIntent,
    Member,
    MemberIntent,
    NewOrderIntent,
    OperatorTurn,
    clamp,
    draw_style,
    load_turn,
    member_turn,
)

SYMBOL = "CEA-2025"
TRADING_DAY = "2026-01-05"  # a Monday
MID_FEN = 5_820  # the instrument's reference price, 58.20: every client's first fair value
MIXES = ("load", "members")  # the request mixes (see the module's doc); the first is the default
DEFAULT_MIX = MIXES[0]
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

[calendar]
max_days_from_today = 36600   # the benchmark opens its fixed day, whatever today is
automatic = false   # and runs the day itself (the calendar driver would open today)
"""

# -- the server process ------------------------------------------------------------------------


class ServedProcess:
    """``exchange serve`` in a child process over ``data_dir``; optionally under cProfile."""

    def __init__(self, data_dir: Path, members: list[str], profile_to: Path | None = None, *,
                 config_toml: str = CONFIG_TOML, extra_args: Sequence[str] = (),
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.data_dir = data_dir
        self.members = members
        self.profile_to = profile_to
        self.config_toml, self.extra_args, self.preexec_fn = config_toml, list(extra_args), preexec_fn  # bench.soak_bench
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.tokens: dict[str, str] = {}

    def start(self, timeout_s: float = 60.0) -> ServedProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        allocate_in_registry(self.data_dir, self.members)
        config = self.data_dir / "bench-config.toml"
        config.write_text(self.config_toml)
        command = [sys.executable]
        if self.profile_to is not None:
            command += ["-m", "cProfile", "-o", str(self.profile_to)]
        command += ["-m", "exchange.serve", "serve", "--host", "127.0.0.1", "--port", "0",
                    "--data-dir", str(self.data_dir), "--config", str(config), *self.extra_args]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self._stdout = open(self.data_dir / "serve.stdout", "wb")
        self._stderr = open(self.data_dir / "serve.stderr", "wb")
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._stdout, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, preexec_fn=self.preexec_fn)
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


@dataclass
class Market:
    """What the set-up gives the clients: each member's key, today's band of the instrument."""

    keys: dict[str, tuple[str, bytes]]
    band: tuple[int, int]


async def set_up(server: ServedProcess) -> Market:
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
            await call("clearing", "/clearing/deposits",
                       {"member_id": member_id, "amount_fen": CASH_FEN, "reference": f"bench-{member_id}"})

        await asyncio.gather(*(member(m) for m in server.members))
        opened = await call("clearing", "/clearing/start-of-day", {"trading_day": TRADING_DAY})
        await call("admin", "/market/phase", {"phase": "continuous"})
    started = [e for e in opened["events"] if e["event"] == "DayStarted" and e["instrument"] == SYMBOL]
    return Market(keys, (started[0]["lower_fen"], started[0]["upper_fen"]))


# -- the clients ----------------------------------------------------------------------------------


class _Answer(msgspec.Struct):
    """The fields of a server message the client looks at (the rest is skipped)."""

    type: str
    exec_type: str | None = None
    ord_status: str | None = None
    client_order_id: str | None = None
    order_id: int | None = None
    price: str | None = None
    leaves_qty: int = 0
    last_px: str | None = None
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
    answered: int = 0  # answers that arrived inside the window (new orders, cancels, amends)
    acked: int = 0  # of which to new orders
    trades: int = 0  # trade reports inside the window (each side counts)
    rejects: dict = field(default_factory=dict)  # reject code -> count (whole phase)
    errors: dict = field(default_factory=dict)  # error problem -> count (whole phase)
    latencies_ns: array = field(default_factory=lambda: array("q"))  # of new orders sent inside the window


@dataclass
class RestingOrder:
    """One of the client's open orders, as the strategies see it (``qty_t``: leaves)."""

    cid: str
    order_id: int | None
    price_fen: int | None
    qty_t: int


class Resting:
    """The client's open orders: a list the strategies pick from and O(1) removal by id."""

    def __init__(self) -> None:
        self.orders: list[RestingOrder] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.orders)

    def get(self, cid: str) -> RestingOrder | None:
        index = self._index.get(cid)
        return None if index is None else self.orders[index]

    def add(self, order: RestingOrder) -> None:
        if order.cid not in self._index:
            self._index[order.cid] = len(self.orders)
            self.orders.append(order)

    def remove(self, cid: str) -> None:
        index = self._index.pop(cid, None)
        if index is None:
            return
        last = self.orders.pop()
        if index < len(self.orders):
            self.orders[index] = last
            self._index[last.cid] = index


class OldestFirst(Sequence[RestingOrder]):
    """The client's open orders in the order they rested, for the ``load`` mix (which cancels
    the oldest): ``orders[0]`` is the oldest, removal by id is O(1)."""

    def __init__(self) -> None:
        self._orders: dict[str, RestingOrder] = {}

    def __len__(self) -> int:
        return len(self._orders)

    @overload
    def __getitem__(self, index: int) -> RestingOrder: ...

    @overload
    def __getitem__(self, index: slice) -> list[RestingOrder]: ...

    def __getitem__(self, index: int | slice) -> RestingOrder | list[RestingOrder]:
        if index == 0 and self._orders:
            return next(iter(self._orders.values()))
        return list(self._orders.values())[index]

    @property
    def orders(self) -> OldestFirst:
        return self

    def get(self, cid: str) -> RestingOrder | None:
        return self._orders.get(cid)

    def add(self, order: RestingOrder) -> None:
        self._orders.setdefault(order.cid, order)

    def remove(self, cid: str) -> None:
        self._orders.pop(cid, None)


class LoadView:
    """The strategies' market view for a load client: today's band, the price of its own last
    fill (it subscribes to no market data: this is order entry), its resting orders."""

    def __init__(self, band: tuple[int, int], resting: Resting | OldestFirst) -> None:
        self._band, self.resting = band, resting
        self.last_px: int | None = None

    def band(self, symbol: str) -> tuple[int, int]:
        return self._band

    def best_price(self, symbol: str, side: Side) -> int | None:
        return None  # no book view: a taker's limit goes at its fair value

    def market_price(self, symbol: str) -> int | None:
        return self.last_px

    def open_orders(self, member_id: str, symbol: str) -> Sequence[RestingOrder]:
        return self.resting.orders

    def unknown_order_id(self, rnd: random.Random) -> int:
        return rnd.randint(1, 10**6)


class LoadClient:
    """One member's WebSocket session, sending what :mod:`exchange.sim.strategies` decides
    and timing the answers. Every request but a mass cancel has exactly one answer: a new
    order's first ``execution_report``; a cancel's or amend's ``canceled`` / ``replaced`` report
    or its ``cancel_reject``. A mass cancel is sent along and not counted. ``mix``: ``load``
    (:func:`load_turn`) or ``members`` (:func:`member_turn`, a style drawn first)."""

    def __init__(self, index: int, member_id: str, key: tuple[str, bytes], seed: int, band: tuple[int, int],
                 mix: str = DEFAULT_MIX) -> None:
        self.index, self.member_id, self.key = index, member_id, key
        self.rng = random.Random(seed)
        if mix == "load":  # no style drawn: the first draws are the old generator's
            self.member = Member(member_id, "load", [SYMBOL], {SYMBOL: clamp(MID_FEN, band)})
            self.resting: Resting | OldestFirst = OldestFirst()
            self.turn: Callable[[random.Random, Member, MarketView[RestingOrder]], MemberIntent] = load_turn
        elif mix == "members":
            self.member = Member(member_id, draw_style(self.rng), [SYMBOL], {SYMBOL: clamp(MID_FEN, band)})
            self.resting = Resting()
            self.turn = member_turn
        else:
            raise ValueError(f"unknown mix {mix!r}: one of {', '.join(MIXES)}")
        self.view = LoadView(band, self.resting)
        self.ws: aiohttp.ClientWebSocketResponse[Literal[False]] | None = None  # set by connect()
        self.prefix = f"c{index}-"
        self.count = 0
        self.sent_at: dict[str, int] = {}  # client order id -> send time (ns), until first report
        self.timed: set[str] = set()  # new orders sent inside the measuring window
        self.changing: set[str] = set()  # client order ids with a cancel or amend unanswered
        self.cancelling_ids: set[int] = set()  # order ids not its own with a cancel unanswered
        self.tally = Tally()
        self.refill = False  # closed loop: send a new request per answer
        self.closed: str | None = None

    @property
    def outstanding(self) -> int:
        return len(self.sent_at) + len(self.changing) + len(self.cancelling_ids)

    async def connect(self, http: aiohttp.ClientSession, ws_url: str) -> None:
        self.ws = ws = await http.ws_connect(ws_url, autoping=True, max_msg_size=0, compress=0, decode_text=False)
        key_id, secret = self.key
        now_ms = time.time_ns() // 1_000_000
        nonce = f"bench{self.index:04d}{random.getrandbits(48):012x}"
        logon = {"type": "logon", "key_id": key_id, "timestamp_ms": now_ms, "nonce": nonce,
                 "signature": sign_logon(secret, key_id, now_ms, nonce), "cancel_on_disconnect": True,
                 "heartbeat_s": 60}
        await ws.send_frame(msgspec.json.encode(logon), WSMsgType.TEXT)
        frame = await ws.receive(timeout=10)
        answer = _decode(frame.data) if frame.type == WSMsgType.TEXT else None
        if answer is None or answer.type != "logon_ack":
            raise RuntimeError(f"{self.member_id}: logon refused: {frame.data!r}")

    def next_frames(self) -> list[bytes]:
        """The strategy's next intents up to one that will be answered (mass cancels ride along,
        operator turns are skipped)."""
        frames = []
        while True:
            intent = self.turn(self.rng, self.member, self.view)
            frame, answered = self.frame_for(intent)
            if frame is not None:
                frames.append(frame)
            if answered:
                return frames

    def frame_for(self, intent: MemberIntent) -> tuple[bytes | None, bool]:
        """The wire frame for an intent and whether it will be answered."""
        match intent:
            case OperatorTurn():
                return None, False
            case MassCancelIntent():
                return encode(MassCancelRequest(intent.symbol)), False
            case NewOrderIntent(qty_t=0) | CancelIntent(order=None):  # the wire cannot carry a zero quantity
                order_id = intent.unknown_order_id if isinstance(intent, CancelIntent) else self.view.unknown_order_id(self.rng)
                self.cancelling_ids.add(order_id)
                return encode(CancelRequest(intent.symbol, order_id=order_id)), True
            case NewOrderIntent():
                return self._new_order(intent), True
            case CancelIntent():
                assert intent.order is not None  # CancelIntent(order=None) is matched above
                return self._change(intent.order, CancelRequest(intent.symbol, client_order_id=intent.order.cid)), True
            case AmendIntent():
                request = AmendRequest(intent.symbol, intent.qty_t, format_price(intent.price_fen), client_order_id=intent.order.cid)
                return self._change(intent.order, request), True
        raise AssertionError(f"an intent the load client cannot send: {intent!r}")

    def _new_order(self, intent: NewOrderIntent) -> bytes:
        self.count += 1
        cid = self.prefix + str(self.count)
        if self.tally.measuring:
            self.timed.add(cid)
        self.sent_at[cid] = _clock()
        price = msgspec.UNSET if intent.price_fen is None else format_price(intent.price_fen)
        return encode(NewOrder(cid, intent.symbol, SIDE_NAMES[intent.side], intent.qty_t, price,
                               ORDER_TYPE_NAMES[intent.order_type], TIF_NAMES[intent.tif]))

    def _change(self, order: RestingOrder, request: CancelRequest | AmendRequest) -> bytes:
        """A cancel or amend of a resting order: no longer a candidate until it is answered."""
        self.resting.remove(order.cid)
        self.changing.add(order.cid)
        return encode(request)

    async def send_next(self) -> None:
        ws = self.ws
        assert ws is not None, "connect() first"
        for frame in self.next_frames():
            await ws.send_frame(frame, WSMsgType.TEXT)

    async def read(self) -> None:
        """Handle every message until the connection closes; in closed loop, refill the window."""
        ws = self.ws
        assert ws is not None, "connect() first"
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
        if kind == "execution_report":
            return self._report(message)
        if kind == "cancel_reject":
            return self._count(self._answers_change(message.client_order_id, message.order_id))
        if kind == "error":
            self.tally.errors[message.problem] = self.tally.errors.get(message.problem, 0) + 1
        elif kind == "session_closing":
            self.closed = f"session_closing: {message.reason}"
        return 0

    def _report(self, message: _Answer) -> int:
        cid, exec_type, tally = message.client_order_id, message.exec_type, self.tally
        assert cid is not None  # an execution_report always carries the client order id
        answered = self._answers_new_order(cid)
        if exec_type == "trade":
            tally.trades += tally.measuring
            if message.last_px is not None:
                self.view.last_px = parse_price(message.last_px)
        elif exec_type == "rejected":
            tally.rejects[message.reject_code] = tally.rejects.get(message.reject_code, 0) + 1
        if exec_type in ("canceled", "replaced"):
            answered += self._count(self._answers_change(cid, message.order_id))
        self._track(cid, message)
        return answered

    def _answers_new_order(self, cid: str) -> int:
        sent = self.sent_at.pop(cid, None)
        if sent is None:
            return 0
        if self.tally.measuring:
            self.tally.acked += 1
        if cid in self.timed:
            self.timed.discard(cid)
            self.tally.latencies_ns.append(_clock() - sent)
        return self._count(True)

    def _answers_change(self, cid: str | None, order_id: int | None) -> bool:
        if cid in self.changing:
            self.changing.discard(cid)
            return True
        if order_id in self.cancelling_ids:
            self.cancelling_ids.discard(order_id)
            return True
        return False

    def _count(self, answered: bool) -> int:
        if answered and self.tally.measuring:
            self.tally.answered += 1
        return int(answered)

    def _track(self, cid: str, message: _Answer) -> None:
        """Keep the resting orders as the reports tell them (an order being changed waits);
        ``message`` is an execution report of the client order id ``cid``."""
        if message.ord_status not in ("new", "partially_filled"):
            self.resting.remove(cid)
            return
        if cid in self.changing:
            return
        order = self.resting.get(cid)
        price = None if message.price is None else parse_price(message.price)
        if order is None:
            self.resting.add(RestingOrder(cid, message.order_id, price, message.leaves_qty))
        else:
            order.qty_t, order.price_fen = message.leaves_qty, price if price is not None else order.price_fen


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

    def __init__(self, server: ServedProcess, market: Market, seed: int, mix: str = DEFAULT_MIX) -> None:
        self.server = server
        self.clients = [LoadClient(i, member, market.keys[member], seed * 1_000 + i, market.band, mix)
                        for i, member in enumerate(server.members)]
        self.readers: list[asyncio.Task] = []

    async def connect(self, http: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(client.connect(http, self.server.ws_url) for client in self.clients))
        self.readers = [asyncio.create_task(client.read()) for client in self.clients]

    async def close(self) -> None:
        for client in self.clients:
            client.refill = False
            if client.ws is not None:
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


async def drive(server: ServedProcess, market: Market, seed: int, window: int,
                warmup_s: float, measure_s: float, paced_rate: float, light_rate: float,
                share_of_max: float = 0.9, mix: str = DEFAULT_MIX) -> tuple[PhaseResult, PhaseResult, PhaseResult]:
    """Three phases on one server: closed loop first; then open loop at ``paced_rate`` (or,
    when the server sustained less, at ``share_of_max`` of what it sustained); then open loop
    at ``light_rate`` (at most half of what it sustained), to see latency away from saturation.
    ``mix``: the requests, ``load`` or ``members`` (see the module's doc)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        load = Load(server, market, seed, mix)
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
