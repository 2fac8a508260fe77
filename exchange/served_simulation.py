"""``exchange simulate`` on the served exchange: seeded members over real WebSockets, a whole
trading day to the close, then settlement, with a progress bar and a checked summary.

What runs, all in this one process and on one event loop:

* **The served exchange**, as ``exchange serve`` composes it: the exchange opened from a data
  directory (``--data-dir``, else a temporary one; SQLite stores unless ``--clearing-db``),
  the hub, and the aiohttp application on ``127.0.0.1`` at a free port. Before the exchange
  opens it, the reference registry in the data directory (``registry.db``) is given every
  member's holdings with :func:`registry_adapter.demo.allocate_holdings`, as the authority
  would.
* **The operator**, over the HTTP API with the role tokens the server wrote
  (``operator-tokens.json``): the administrator admits the members and issues their API keys,
  the clearing house funds them, opens the day (start of day: the holdings load from the
  registry), closes it and settles it; the administrator moves the phases; the regulator
  reads the trades, positions and state. During continuous trading it now and then halts an
  instrument or pulls a member's kill switch (both undone a few hundred orders later, and
  before the session ends), deposits or withdraws money (some withdrawals are refused).
* **N members**, each one WebSocket session (aiohttp's client) that logs on with its key
  (a signed HMAC logon, ``exchange.gateway.auth.sign_logon``), subscribes to the public
  market data of every instrument and keeps a top-of-book view from the snapshot and the
  updates (checking ``seq``/``prev_seq``). They trade in the styles of the in-process
  simulation (:mod:`exchange.simulation`): makers quote both sides near their idea of fair
  value (which follows the last trade), takers cross the spread with IOC, FOK and market
  orders, traders place day and GTC limit orders; all of them cancel (by order id or client
  order id), amend (reduce, or move and grow), mass-cancel now and then, and send a few bad
  orders (too large, outside the band, more than they can pay for or deliver; a cancel of an
  order that is not theirs) so that rejects show. Prices are two-place strings.

The trading day. The server stamps its own wall clock; nothing here waits for 09:30. The day's
phases come, in order, from the calendar's session schedule
(:class:`exchange.risk.schedule.SessionSchedule`): start of day (pre-open), then for each
session continuous trading followed by the break (or, after the last, the post-close), then
end of day and settlement. ``--commands`` new orders per trading day are spread over the
continuous sessions in proportion to their length and over the members evenly. Each member
keeps at most ``--window`` new orders unanswered (pipelining, as a real client would); a
continuous session ends when every member's last order has been answered, so no order is
sent into a phase change. Because a session's commands are executed and answered in the
order they arrived, the answer to a member's last new order also covers its earlier cancels
and amends. Before checking, each member sends an ``order_status`` for an id it never used
and waits for the ``error`` (9) answer: the server queued it behind everything already queued
for that session, so the member has then read every report of the day.

The per-member order rate (``risk.limits.orders_per_second``, ``order_burst``) is lifted for
the run (:func:`served_config`): the limit is meant for the wall clock, and this run squeezes a
trading day of hours into seconds. Everything else is the configuration's.

Determinism: each member draws from its own generator seeded from ``--seed`` and its id, and
the set-up (members, kinds, allocations, holdings, styles) from ``--seed`` alone, so the
members' intentions are reproducible. The interleaving of the sockets is not: what a member
sees when it decides (its open orders, the book, the last trade) depends on timing, so the
journal, the trades and the figures differ from run to run. The in-process simulation
(``--in-process``) is the reproducible one; this run checks consistency instead:

* every new order was answered exactly once (``new`` or ``rejected``);
* every order reached exactly one final state (filled, cancelled, expired, rejected), except
  the GTC orders still open at the end, which the exchange counts as open too;
* the members' ``trade`` reports are exactly the regulator's trades of the day, two per trade
  (the buy order's and the sell order's), with the same quantity, price and members; each
  order's fills add up to its ``cum_qty``, and no execution is reported twice;
* ``session_seq`` without gaps on every connection, and the book feed without gaps;
* no ``error`` frame, no session closed by the server, no report the member cannot place;
* each day's close statistics (volume, trades) equal the regulator's trades, and its
  settlement reconciles with zero differences and covers the same trades and value;
* after a settled day the next start of day changes nothing, and at the end the state rebuilt
  from the journal alone has the state hash the running exchange reported.

:func:`run_served` prints the summary and returns 0 when every check passed, 1 otherwise. With
a ``--data-dir`` the members' private messages (the client logs: every execution report,
cancel reject and error) are kept as JSON lines in ``DATA_DIR/member-logs/M0001.jsonl`` next to
the journal, so they can be checked against it later.

The progress bar (``--progress``): a plain-text line on stderr, rewritten with ``\\r``
(``[##########..........]  52% 5,200/10,000 orders  2026-11-23 continuous 2/2``). By default
(``auto``) only when stderr is a terminal, so logs and pipes get the summary alone;
``always`` and ``never`` force it.

Defaults (:data:`DEFAULT_MEMBERS` members, :data:`DEFAULT_ORDERS` orders, one day) finish in
several seconds on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, TextIO

import aiohttp
import msgspec

from exchange.app import Exchange, open_engine
from exchange.config import Config, load_config
from exchange.gateway.auth import sign_logon
from exchange.gateway.hub import Hub
from exchange.gateway.server import GatewayServer, credential_store, operator_tokens
from exchange.gateway.wire import (
    PHASE_NAMES,
    AmendRequest,
    BookSnapshot,
    BookUpdate,
    CancelReject,
    CancelRequest,
    Error,
    ExecutionReport,
    Heartbeat,
    InstrumentStatus,
    Logon,
    LogonAck,
    MassCancelRequest,
    NewOrder,
    OrderStatusRequest,
    ServerHeartbeat,
    SessionClosing,
    Subscribe,
    Trade,
    decode_outbound,
    encode,
    format_price,
    parse_price,
)
from exchange.model.enums import TradingPhase
from exchange.model.rejects import RejectReason
from exchange.model.units import format_fen
from registry_adapter.demo import allocate_holdings
from registry_adapter.sql import SqlRegistry

DEFAULT_SEED = 2026
DEFAULT_MEMBERS = 20
DEFAULT_ORDERS = 10_000  # new orders per trading day, over all members
DEFAULT_WINDOW = 16  # new orders a member keeps unanswered at most
DEFAULT_START = "2026-11-23"
CASH_PER_MEMBER_FEN = 500_000_000  # 5 million CNY, as the in-process simulation
LIFTED_ORDER_RATE = 1_000_000  # orders a second and burst, per member, for the compressed day
ANSWER_TIMEOUT_S = 30.0  # an order unanswered this long is a failed check, not a hang
HEARTBEAT_S = 10
MEMBER_LOGS = "member-logs"

_OPEN = ("new", "partially_filled")
_FINAL = ("filled", "canceled", "rejected", "expired")
_UNKNOWN_ORDER_ERROR = 9  # the answer to the sync probe
_PRICES: dict[str, int] = {}  # price text -> fen: the feed repeats a few hundred prices


def _fen(text: str) -> int:
    """A price from the server, parsed (strictly, by the wire's rules) once per distinct text."""
    fen = _PRICES.get(text)
    if fen is None:
        fen = _PRICES[text] = parse_price(text)
    return fen


# -- the command line --------------------------------------------------------------------------


def add_served_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The served run's own options, for the ``simulate`` subparser (which already has
    ``--seed --members --commands --days --start --config --data-dir --clearing-db``)."""
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW,
        help=f"served run: new orders each member keeps unanswered at most (default {DEFAULT_WINDOW})",
    )
    parser.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help="served run: the progress bar on stderr (auto: only on a terminal)",
    )
    return parser


def run_served(args: argparse.Namespace) -> int:
    """``exchange simulate`` on the served exchange; 0 when every check passed, 1 when one
    failed, 2 when the data directory already holds an exchange. ``args.members`` and
    ``args.commands`` of None take this run's defaults (``--commands`` counts new orders)."""
    config = load_config(getattr(args, "config", None))
    given = getattr(args, "data_dir", None)
    progress = getattr(args, "progress", "auto")
    show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
    members, orders = _given(args, "members", DEFAULT_MEMBERS), _given(args, "commands", DEFAULT_ORDERS)
    days, window, start = _given(args, "days", 1), _given(args, "window", DEFAULT_WINDOW), _given(args, "start", DEFAULT_START)
    try:
        date.fromisoformat(start)
    except ValueError:
        print(f"error: --start {start!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    if members < 2 or orders < 0 or days < 1 or window < 1:
        print("error: the served run needs --members 2 or more, --commands 0 or more, --days and --window 1 or more",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="exchange-served-") as scratch:
        data_dir = Path(given) if given else Path(scratch)
        for name in ("commands.journal", "registry.db"):
            if (data_dir / name).exists():
                print(f"error: {data_dir} already holds {name}; simulate needs an empty data directory", file=sys.stderr)
                return 2
        run = simulate_served(
            config, data_dir,
            seed=_given(args, "seed", DEFAULT_SEED), members=members, orders=orders, days=days, start=start,
            clearing_url=getattr(args, "clearing_db", None), window=window,
            progress=show,
            member_logs=given is not None,
            out=sys.stdout,
        )
    print_served_summary(run)
    return 0 if run.ok else 1


def _given(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def served_config(config: Config) -> Config:
    """The configuration the served run uses: the same, with the per-member order rate lifted
    (a trading day runs in seconds here, and the limit is meant for the wall clock)."""
    limits = msgspec.structs.replace(config.risk.limits, orders_per_second=LIFTED_ORDER_RATE, order_burst=LIFTED_ORDER_RATE)
    return msgspec.structs.replace(config, risk=msgspec.structs.replace(config.risk, limits=limits))


# -- results -------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class DayResult:
    trading_day: str
    closes: list[dict] = field(default_factory=list)  # the DayClosed events of end of day
    trades: list[dict] = field(default_factory=list)  # the regulator's trades of the day
    settlement: dict | None = None  # the settlement report, as the endpoint answered
    settlement_error: str = ""
    holding_changes: int = 0  # start-of-day loads that changed the exchange's view (after day 1)


@dataclass
class ServedRun:
    url: str = ""
    data_dir: str = ""
    seed: int = 0
    members: int = 0
    window: int = 0
    styles: Counter = field(default_factory=Counter)
    requests: Counter = field(default_factory=Counter)  # order, cancel, amend, mass_cancel
    exec_types: Counter = field(default_factory=Counter)
    order_rejects: Counter = field(default_factory=Counter)  # reject code -> count
    cancel_rejects: Counter = field(default_factory=Counter)  # (cancel|amend, code) -> count
    cancel_reasons: Counter = field(default_factory=Counter)
    operator: Counter = field(default_factory=Counter)  # action -> count
    operator_refusals: Counter = field(default_factory=Counter)  # (action, code) -> count
    days: list[DayResult] = field(default_factory=list)
    trading_s: float = 0.0  # wall time of the continuous sessions
    elapsed_s: float = 0.0  # the whole run, set-up and shutdown included
    latencies_ns: list[int] = field(default_factory=list)  # new order -> its first answer
    state_hash: str = ""
    replay_hash: str = ""
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def orders(self) -> int:
        return self.requests["order"]

    @property
    def orders_per_s(self) -> float:
        return self.orders / self.trading_s if self.trading_s else 0.0


# -- the progress bar ----------------------------------------------------------------------------


class Progress:
    """A one-line bar on stderr, rewritten in place; silent when not enabled."""

    WIDTH = 30

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.sent = 0
        self.stage = "setting up"
        self._width = 0
        self._task: asyncio.Task | None = None

    def line(self) -> str:
        fraction = min(self.sent / self.total, 1.0) if self.total else 1.0
        done = int(fraction * self.WIDTH)
        bar = "#" * done + "." * (self.WIDTH - done)
        return f"[{bar}] {fraction:4.0%} {self.sent:,}/{self.total:,} orders  {self.stage}"

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(0.1)

    def draw(self) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    async def finish(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.draw()
        self.stream.write("\n")
        self.stream.flush()


# -- the operator over HTTP ------------------------------------------------------------------------


class OperatorError(Exception):
    """The operator API answered what the run cannot go on from."""


class Operator:
    """The administrator, the clearing house and the regulator: HTTP calls with role tokens."""

    def __init__(self, http: aiohttp.ClientSession, url: str, tokens: dict[str, str]) -> None:
        self.http, self.url, self.tokens = http, url, tokens

    async def call(self, method: str, path: str, role: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        data = None if body is None else msgspec.json.encode(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.url + path, data=data, headers=headers) as response:
            return response.status, msgspec.json.decode(await response.read())

    async def ok(self, method: str, path: str, role: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, role, body)
        if status not in (200, 201):
            raise OperatorError(f"{method} {path}: {status} {answer}")
        return answer


# -- one simulated member ------------------------------------------------------------------------


class _Order:
    __slots__ = ("cid", "instrument", "side", "tif", "price_fen", "qty", "sent_ns", "order_id",
                 "answers", "finals", "status", "leaves", "cum", "filled", "trade_ids")

    def __init__(self, cid: str, instrument: str, side: str, tif: str, price_fen: int | None, qty: int) -> None:
        self.cid, self.instrument, self.side, self.tif = cid, instrument, side, tif
        self.price_fen, self.qty = price_fen, qty
        self.sent_ns = 0
        self.order_id: int | None = None
        self.answers = 0  # "new" or "rejected" reports: exactly one
        self.finals = 0  # reports that ended the order: at most one
        self.status = "sent"
        self.leaves = self.cum = self.filled = 0
        self.trade_ids: list[int] = []


class SimMember:
    """One member's software: a logged-on WebSocket session, a book view, a trading style."""

    def __init__(self, member_id: str, style: str, seed: int, symbols: list[str], window: int, progress: Progress) -> None:
        self.member_id, self.style, self.symbols = member_id, style, symbols
        self.random = random.Random(f"{seed}:{member_id}")
        self.window, self.progress = window, progress
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.trading_day = ""
        self.orders: dict[str, _Order] = {}
        self.open: dict[str, _Order] = {}  # acknowledged and open, by client order id
        self.in_flight = 0
        self.next_id = 0
        self.requests: Counter = Counter()
        self.exec_types: Counter = Counter()
        self.order_rejects: Counter = Counter()
        self.cancel_rejects: Counter = Counter()
        self.cancel_reasons: Counter = Counter()
        self.fills: list[tuple[str, int, int | None, str, int, str]] = []  # day, trade id, order id, side, qty, price
        self.latencies_ns: list[int] = []
        self.problems: list[str] = []  # anything a check must report
        self.private_log: list[str] = []  # every private frame as received
        self.session_seq = 0
        self.seq_gaps = 0
        self.book_gaps = 0
        self.closed_by_server = ""
        self.dead = False
        self.bids: dict[str, dict[int, int]] = {s: {} for s in symbols}
        self.asks: dict[str, dict[int, int]] = {s: {} for s in symbols}
        self.book_seq: dict[str, int | None] = {s: None for s in symbols}
        self.last_px: dict[str, int] = {}
        self.fair: dict[str, int] = {}
        self.band: dict[str, tuple[int, int]] = {}
        self._wake = asyncio.Event()
        self._logged_on: asyncio.Future | None = None
        self._probe: asyncio.Future | None = None
        self._probes = 0
        self._last_sent = 0.0
        self._tasks: list[asyncio.Task] = []

    # -- the connection ------------------------------------------------------------------------

    async def connect(self, http: aiohttp.ClientSession, ws_url: str, key_id: str, secret: bytes) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            self.ws = await http.ws_connect(ws_url, autoping=True, max_msg_size=0, compress=0)
            self._logged_on = loop.create_future()
            self._tasks.append(loop.create_task(self._read(), name=f"{self.member_id}-reader"))
            timestamp_ms = time.time_ns() // 1_000_000
            nonce = secrets.token_hex(12)
            await self._send(Logon(key_id, timestamp_ms, nonce, sign_logon(secret, key_id, timestamp_ms, nonce),
                                   cancel_on_disconnect=False, heartbeat_s=HEARTBEAT_S))
            await self._logged_on
        await self._send(Subscribe(list(self.symbols)))
        self._tasks.append(loop.create_task(self._keepalive(), name=f"{self.member_id}-keepalive"))

    async def close(self) -> None:
        for task in self._tasks[1:]:
            task.cancel()
        if self.ws is not None:
            self.dead = True  # from here on a closed connection is ours
            await self.ws.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, message: Any) -> None:
        assert self.ws is not None
        await self.ws.send_str(encode(message).decode())
        self._last_sent = asyncio.get_running_loop().time()

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.dead:
            await asyncio.sleep(HEARTBEAT_S / 2)
            if loop.time() - self._last_sent >= HEARTBEAT_S / 2 and not self.dead:
                await self._send(Heartbeat())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self._on_frame(frame.data)
                else:
                    break
        except Exception as error:  # noqa: BLE001 - a client failure is a failed check, reported
            self.problems.append(f"reading failed: {error!r}")
        finally:
            if not self.dead:
                self.problems.append(f"the connection ended ({self.closed_by_server or 'no reason given'})")
            self.dead = True
            self._wake.set()
            for future in (self._logged_on, self._probe):
                if future is not None and not future.done():
                    future.set_exception(ConnectionError(f"{self.member_id}: the connection ended"))

    # -- inbound -------------------------------------------------------------------------------

    def _on_frame(self, data: str) -> None:
        try:
            message = decode_outbound(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            self.problems.append(f"a frame outside the protocol: {error}")
            return
        kind = type(message)
        if kind is BookUpdate:
            self._book_update(message)
            return
        if kind is Trade:
            self.last_px[message.instrument] = _fen(message.price)
            return
        if kind is BookSnapshot:
            self._book_snapshot(message)
            return
        if kind is InstrumentStatus:
            return
        self.private_log.append(data)
        if message.session_seq != self.session_seq + 1:
            self.seq_gaps += 1
        self.session_seq = message.session_seq
        if kind is ExecutionReport:
            self._report(message)
        elif kind is CancelReject:
            self.cancel_rejects[(message.response_to, message.reject_code)] += 1
        elif kind is Error:
            probe = self._probe
            if message.code == _UNKNOWN_ORDER_ERROR and probe is not None and not probe.done():
                probe.set_result(None)
            else:
                self.problems.append(f"error {message.code} on {message.field}: {message.problem}")
        elif kind is SessionClosing:
            self.closed_by_server = message.reason
        elif kind is LogonAck:
            if self._logged_on is not None and not self._logged_on.done():
                self._logged_on.set_result(message)
        elif kind is not ServerHeartbeat:
            self.problems.append(f"unexpected {kind.__name__}")

    def _report(self, report: ExecutionReport) -> None:
        exec_type = report.exec_type
        self.exec_types[exec_type] += 1
        order = self.orders.get(report.client_order_id)
        if order is None:
            self.problems.append(f"a report for client order id {report.client_order_id!r} never sent")
            return
        if exec_type == "order_status":
            self.problems.append(f"an order_status report for {order.cid} nobody asked for")
            return
        if exec_type == "new" or exec_type == "rejected":
            order.answers += 1
            if order.answers == 1:
                self.latencies_ns.append(time.perf_counter_ns() - order.sent_ns)
                self.in_flight -= 1
                self._wake.set()
            if exec_type == "rejected":
                self.order_rejects[report.reject_code] += 1
            else:
                order.order_id = report.order_id
        elif exec_type == "trade":
            qty = report.last_qty or 0
            order.filled += qty
            order.trade_ids.append(report.trade_id)  # type: ignore[arg-type]
            self.fills.append((self.trading_day, report.trade_id, report.order_id, report.side, qty, report.last_px))  # type: ignore[arg-type]
        elif exec_type == "canceled":
            self.cancel_reasons[report.cancel_reason] += 1
        elif exec_type == "replaced" and report.price is not None:
            order.price_fen = parse_price(report.price)
        order.status, order.leaves, order.cum, order.qty = report.ord_status, report.leaves_qty, report.cum_qty, report.qty
        if order.status in _OPEN:
            self.open[order.cid] = order
        else:
            self.open.pop(order.cid, None)
            if order.status in _FINAL:
                order.finals += 1

    def _book_snapshot(self, snapshot: BookSnapshot) -> None:
        symbol = snapshot.instrument
        self.bids[symbol] = {_fen(p): q for p, q, _ in snapshot.bids}
        self.asks[symbol] = {_fen(p): q for p, q, _ in snapshot.asks}
        self.book_seq[symbol] = snapshot.seq

    def _book_update(self, update: BookUpdate) -> None:
        symbol = update.instrument
        last = self.book_seq.get(symbol)
        if last is None or update.seq <= last:
            return  # before the snapshot (or already in it)
        if update.prev_seq != last:
            self.book_gaps += 1
        self.book_seq[symbol] = update.seq
        for levels, side in ((update.bids, self.bids[symbol]), (update.asks, self.asks[symbol])):
            for price, qty, _ in levels:
                if qty:
                    side[_fen(price)] = qty
                else:
                    side.pop(_fen(price), None)

    # -- the trading day -----------------------------------------------------------------------

    def begin_day(self, trading_day: str, bands: dict[str, tuple[int, int, int]]) -> None:
        """The day's bulletin: each instrument's previous close and price band."""
        self.trading_day = trading_day
        for symbol, (prev_close, lower, upper) in bands.items():
            self.band[symbol] = (lower, upper)
            self.fair[symbol] = self._clamp(symbol, self.fair.get(symbol, prev_close), margin=50)

    async def trade(self, orders: int) -> None:
        """Send ``orders`` new orders (with cancels, amends and mass cancels among them), at
        most ``window`` unanswered; return once the last one is answered."""
        sent = 0
        while sent < orders and not self.dead:
            if self.in_flight >= self.window:
                await self._until(lambda: self.in_flight < self.window, "an answer")
                continue
            message, kind = self._next_request()
            if kind == "order":
                order = self.orders[message.client_order_id]
                order.sent_ns = time.perf_counter_ns()
                self.in_flight += 1
                sent += 1
                self.progress.sent += 1
            self.requests[kind] += 1
            await self._send(message)
        await self._until(lambda: self.in_flight == 0, "the answers to its last orders")

    async def sync(self) -> None:
        """Wait until every message the server queued for this session so far has been read."""
        if self.dead:
            return
        self._probes += 1
        self._probe = asyncio.get_running_loop().create_future()
        await self._send(OrderStatusRequest(client_order_id=f"sync.{self._probes}"))
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await self._probe
        except (TimeoutError, ConnectionError) as error:
            self.problems.append(f"no answer to the sync probe: {error!r}")

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_TIMEOUT_S
        while not condition():
            if self.dead:
                return
            left = deadline - loop.time()
            if left <= 0:
                self.problems.append(f"waited {ANSWER_TIMEOUT_S:.0f} s for {what}")
                self.dead = True
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # -- behaviour (the styles of exchange.simulation) -------------------------------------------

    def _next_request(self) -> tuple[Any, str]:
        rnd = self.random
        symbol = rnd.choice(self.symbols)
        fair = self._fair(symbol)
        roll = rnd.random()
        if roll < 0.14:
            return self._cancel_or_amend(symbol)
        if roll < 0.145:
            return MassCancelRequest(symbol if rnd.random() < 0.5 else None), "mass_cancel"
        if roll < 0.16:
            return self._bad_request(symbol, fair)
        if self.style == "taker" or (self.style == "trader" and rnd.random() < 0.2):
            return self._aggressive_order(symbol, fair)
        return self._passive_order(symbol, fair)

    def _fair(self, symbol: str) -> int:
        """The member's idea of fair value: its last idea pulled toward the last trade (or the
        middle of the book), plus a little noise, inside the band."""
        fair = self.fair[symbol]
        market = self.last_px.get(symbol)
        if market is None:
            bids, asks = self.bids[symbol], self.asks[symbol]
            market = (max(bids) + min(asks)) // 2 if bids and asks else fair
        fair = (3 * fair + market + 2) // 4 + self.random.randint(-2, 2)
        fair = self.fair[symbol] = self._clamp(symbol, fair, margin=50)
        return fair

    def _clamp(self, symbol: str, price: int, margin: int = 0) -> int:
        lower, upper = self.band[symbol]
        return min(max(price, lower + margin), upper - margin)

    def _new_order(self, symbol: str, side: str, qty: int, price_fen: int | None, tif: str) -> tuple[NewOrder, str]:
        self.next_id += 1
        cid = f"o{self.next_id}"
        self.orders[cid] = _Order(cid, symbol, side, tif, price_fen, qty)
        if price_fen is None:
            return NewOrder(cid, symbol, side, qty, order_type="market", tif=tif), "order"  # type: ignore[arg-type]
        return NewOrder(cid, symbol, side, qty, format_price(price_fen), tif=tif), "order"  # type: ignore[arg-type]

    def _passive_order(self, symbol: str, fair: int) -> tuple[NewOrder, str]:
        rnd = self.random
        side = rnd.choice(("buy", "sell"))
        offset = rnd.randint(1, 30) if self.style == "maker" else rnd.randint(-5, 60)
        price = self._clamp(symbol, fair - offset if side == "buy" else fair + offset)
        tif = "gtc" if rnd.random() < 0.1 else "day"
        return self._new_order(symbol, side, rnd.choice((10, 50, 100, 200, 500, 1000, 5000)), price, tif)

    def _aggressive_order(self, symbol: str, fair: int) -> tuple[NewOrder, str]:
        rnd = self.random
        side = rnd.choice(("buy", "sell"))
        qty = rnd.choice((10, 100, 300, 1000, 3000))
        kind = rnd.random()
        if kind < 0.3:
            return self._new_order(symbol, side, qty, None, "fok" if rnd.random() < 0.3 else "ioc")
        opposite = self.asks[symbol] if side == "buy" else self.bids[symbol]
        best = (min(opposite) if side == "buy" else max(opposite)) if opposite else fair
        tif = "fok" if kind < 0.45 else "ioc" if kind < 0.8 else "day"
        return self._new_order(symbol, side, qty, self._clamp(symbol, best), tif)

    def _cancel_or_amend(self, symbol: str) -> tuple[Any, str]:
        rnd = self.random
        if not self.open or rnd.random() < 0.05:  # sometimes an id that is not theirs or not open
            return CancelRequest(symbol, order_id=rnd.randint(1, 10**6)), "cancel"
        order = rnd.choice(list(self.open.values()))
        ref: dict[str, Any] = {"client_order_id": order.cid} if rnd.random() < 0.5 else {"order_id": order.order_id}
        if rnd.random() < 0.75 or order.price_fen is None:
            return CancelRequest(order.instrument, **ref), "cancel"
        if rnd.random() < 0.5 and order.leaves > 1:
            return AmendRequest(order.instrument, order.leaves // 2, format_price(order.price_fen), **ref), "amend"
        price = self._clamp(order.instrument, order.price_fen + rnd.randint(-10, 10))
        return AmendRequest(order.instrument, order.leaves + 10, format_price(price), **ref), "amend"

    def _bad_request(self, symbol: str, fair: int) -> tuple[Any, str]:
        rnd = self.random
        side = rnd.choice(("buy", "sell"))
        choice = rnd.randrange(4)
        if choice == 0:  # too big for open bidding: a block trade
            return self._new_order(symbol, side, 150_000, fair, "day")
        if choice == 1:  # outside the day's band
            return self._new_order(symbol, side, 100, self.band[symbol][1] + rnd.randint(1, 100), "day")
        if choice == 2:  # more than the member can pay for or deliver
            return self._new_order(symbol, side, 99_000, fair, "day")
        return CancelRequest(symbol, order_id=rnd.randint(1, 10**6)), "cancel"  # most likely not its own

    # -- the client log ------------------------------------------------------------------------

    def write_log(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{self.member_id}.jsonl").write_text("".join(line + "\n" for line in self.private_log))


# -- the run -------------------------------------------------------------------------------------


def simulate_served(
    config: Config, data_dir: Path, *, seed: int = DEFAULT_SEED, members: int = DEFAULT_MEMBERS,
    orders: int = DEFAULT_ORDERS, days: int = 1, start: str = DEFAULT_START, clearing_url: str | None = None,
    window: int = DEFAULT_WINDOW, progress: bool = False, member_logs: bool = True, out: TextIO | None = None,
) -> ServedRun:
    """Start the served exchange over ``data_dir`` (empty), run ``days`` trading days with
    ``members`` members sending ``orders`` new orders a day, settle each, check; the result."""
    simulation = ServedSimulation(config, data_dir, seed, members, orders, days, date.fromisoformat(start),
                                  clearing_url, window, progress, member_logs, out)
    return asyncio.run(simulation.run())


class ServedSimulation:
    def __init__(
        self, config: Config, data_dir: Path, seed: int, members: int, orders: int, days: int, start: date,
        clearing_url: str | None, window: int, progress: bool, member_logs: bool, out: TextIO | None,
    ) -> None:
        if members < 2 or orders < 0 or days < 1 or window < 1:
            raise ValueError("the served simulation needs 2 or more members, 1 or more days, a window of 1 or more")
        self.config = served_config(config)
        self.schedule = config.calendar.schedule()
        self.data_dir = data_dir
        self.symbols = sorted(item.symbol for item in self.config.listed_instruments())
        self.random = random.Random(seed)
        self.operator_random = random.Random(f"{seed}:operator")
        self.member_ids = [f"M{n:04d}" for n in range(1, members + 1)]
        self.orders_per_day, self.days = orders, days
        self.day = start if self.schedule.is_trading_day(start) else self.schedule.next_trading_day(start)
        self.clearing_url, self.window = clearing_url, window
        self.member_logs, self.out = member_logs, out
        self.progress = Progress(orders * days, progress)
        self.run_result = ServedRun(data_dir=str(data_dir), seed=seed, members=members, window=window)
        self.clients: list[SimMember] = []
        self.open_orders_at_end: dict[str, int] = {}
        self.hub_fatal: BaseException | None = None

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    async def run(self) -> ServedRun:
        started = time.perf_counter()
        result = self.run_result
        plan = self._plan_members()
        self._seed_registry({member: units for member, (_, _, units) in plan.items()})
        exchange = Exchange.open(self.config, self.data_dir, time.time_ns, clearing_url=self.clearing_url)
        try:
            credentials, save = credential_store(self.data_dir)
            tokens, _ = operator_tokens(self.data_dir)
            hub = Hub(exchange, self.config, credentials, on_credentials_changed=save)
            server = GatewayServer(hub, tokens, "127.0.0.1", 0)
            result.url = await server.start()
            self.say(f"served exchange on {result.url} (members: {result.url.replace('http', 'ws', 1)}/ws), "
                     f"data in {self.data_dir}{'' if self.member_logs else ' (temporary)'}; {len(self.member_ids)} members, "
                     f"{self.orders_per_day:,} orders a day, {self.days} day(s), seed {result.seed}")
            self.progress.start()
            try:
                # No pool limit: every member holds a connection for the whole run, and the
                # operator's calls must never wait behind them (aiohttp's default is 100).
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                    try:
                        await self._operate(Operator(http, result.url, tokens), http, result.url + "/ws", plan)
                    finally:
                        await self.progress.finish()
                        for client in self.clients:  # log off (no cancel-on-disconnect: GTC orders stay)
                            await client.close()
            except (OperatorError, ConnectionError, TimeoutError, aiohttp.ClientError) as error:
                result.checks.append(Check("the run went to its end", False, f"stopped: {error!r}"))
            finally:
                await server.stop()
                self.hub_fatal = hub.fatal
        finally:
            exchange.close()
            if exchange.registry is not None and hasattr(exchange.registry, "close"):
                exchange.registry.close()
        result.replay_hash = self._replay_hash()
        if self.member_logs:
            for client in self.clients:
                client.write_log(self.data_dir / MEMBER_LOGS)
        self._gather()
        result.checks.extend(self._checks())
        result.elapsed_s = time.perf_counter() - started
        return result

    # -- set-up --------------------------------------------------------------------------------

    def _plan_members(self) -> dict[str, tuple[str, dict, dict[str, int]]]:
        """Per member, seeded: its style, how the administrator admits it, its holdings."""
        rnd = self.random
        plan = {}
        for number, member in enumerate(self.member_ids):
            style = rnd.choice(("maker", "taker", "trader", "trader"))
            covered = rnd.random() < 0.6
            admission = {
                "member_id": member, "kind": "covered" if covered else "voluntary",
                "annual_allocation_t": rnd.randrange(50_000, 500_000, 1_000) if covered else 0,
                "linked_group": f"G{number // 2}" if number < 10 else "",  # the first ten in linked pairs
            }
            holdings = {symbol: rnd.randrange(20_000, 200_000, 100) for symbol in self.symbols}
            plan[member] = (style, admission, holdings)
            self.run_result.styles[style] += 1
        return plan

    def _seed_registry(self, holdings: dict[str, dict[str, int]]) -> None:
        """The authority's part, before the exchange opens the registry."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        registry = SqlRegistry(f"sqlite:///{self.data_dir / 'registry.db'}")
        try:
            registry.create_schema()
            allocate_holdings(registry, holdings)
        finally:
            registry.close()

    async def _operate(self, operator: Operator, http: aiohttp.ClientSession, ws_url: str, plan: dict) -> None:
        self.progress.stage = "admitting members"
        keys = {}
        for member, (style, admission, _) in plan.items():
            await operator.ok("POST", "/members", "admin", admission)
            await operator.ok("POST", "/clearing/deposits", "clearing", {"member_id": member, "amount_fen": CASH_PER_MEMBER_FEN})
            issued = await operator.ok("POST", f"/members/{member}/credentials", "admin")
            keys[member] = (issued["key_id"], bytes.fromhex(issued["secret"]))
            self.clients.append(SimMember(member, style, self.run_result.seed, self.symbols, self.window, self.progress))
        self.progress.stage = "members logging on"
        await asyncio.gather(*(client.connect(http, ws_url, *keys[client.member_id]) for client in self.clients))
        for day_number in range(self.days):
            await self._trading_day(operator, first=day_number == 0)
            self.day = self.schedule.next_trading_day(self.day)
        self.progress.stage = "checking"
        accounts = await operator.ok("GET", "/regulator/positions", "regulator")
        self.open_orders_at_end = {account["member_id"]: account["open_orders"] for account in accounts}
        self.run_result.state_hash = (await operator.ok("GET", "/state", "regulator"))["state_hash"]

    async def _trading_day(self, operator: Operator, first: bool) -> None:
        trading_day = self.day.isoformat()
        day = DayResult(trading_day)
        self.run_result.days.append(day)
        self.progress.stage = f"{trading_day} start of day"
        opened = await operator.ok("POST", "/clearing/start-of-day", "clearing", {"trading_day": trading_day})
        bands = {e["instrument"]: (e["prev_close_fen"], e["lower_fen"], e["upper_fen"])
                 for e in opened["events"] if e["event"] == "DayStarted"}
        if not first:
            day.holding_changes = sum(1 for e in opened["events"] if e["event"] == "HoldingLoaded" and e["change_t"])
        for client in self.clients:
            client.begin_day(trading_day, bands)
        transitions = self.schedule.transitions(self.day)
        quotas = self._session_quotas(transitions)
        sessions = len(quotas)
        number = 0
        for _, phase in transitions:
            await operator.ok("POST", "/market/phase", "admin", {"phase": PHASE_NAMES[phase]})
            if phase == TradingPhase.CONTINUOUS:
                number += 1
                self.progress.stage = f"{trading_day} continuous {number}/{sessions}"
                await self._continuous(operator, quotas[number - 1], number)
            else:
                self.progress.stage = f"{trading_day} {PHASE_NAMES[phase].replace('_', '-')}"
        self.progress.stage = f"{trading_day} end of day"
        closed = await operator.ok("POST", "/clearing/end-of-day", "clearing")
        day.closes = [e for e in closed["events"] if e["event"] == "DayClosed"]
        await asyncio.gather(*(client.sync() for client in self.clients))
        day.trades = await operator.ok("GET", f"/regulator/trades/{trading_day}", "regulator")
        self.progress.stage = f"{trading_day} settlement"
        status, answer = await operator.call("POST", "/clearing/settlements", "clearing", {"trading_day": trading_day})
        if status == 200:
            day.settlement = answer
        else:
            day.settlement_error = f"{status}: {answer.get('error', answer)}"

    def _session_quotas(self, transitions: list[tuple[int, TradingPhase]]) -> list[int]:
        """The day's orders over its continuous sessions, in proportion to their length."""
        lengths = [end - start for (start, _), (end, _) in zip(transitions[::2], transitions[1::2])]
        total = sum(lengths) or 1
        quotas = [self.orders_per_day * length // total for length in lengths]
        if quotas:
            quotas[-1] += self.orders_per_day - sum(quotas)
        return quotas

    async def _continuous(self, operator: Operator, orders: int, number: int) -> None:
        count = len(self.clients)
        shares = [orders // count + (1 if (i - number) % count < orders % count else 0) for i in range(count)]
        stop = asyncio.Event()
        actions = asyncio.get_running_loop().create_task(self._operator_actions(operator, stop))
        started = time.perf_counter()
        try:
            await asyncio.gather(*(client.trade(share) for client, share in zip(self.clients, shares)))
        finally:
            self.run_result.trading_s += time.perf_counter() - started
            stop.set()
            await actions

    async def _operator_actions(self, operator: Operator, stop: asyncio.Event) -> None:
        """Now and then a halt or a kill switch (undone a few hundred orders later, and before
        the session ends), a deposit or a withdrawal."""
        rnd, progress, result = self.operator_random, self.progress, self.run_result
        undo: list[tuple[int, str, str, str, Any, set, str]] = []  # due at orders sent, what, path, role, body, set, key
        halted: set[str] = set()
        killed: set[str] = set()
        next_at = progress.sent + rnd.randrange(200, 800)

        async def act(what: str, method: str, path: str, role: str, body: Any = None) -> None:
            status, answer = await operator.call(method, path, role, body)
            result.operator[what] += 1
            if status not in (200, 201):
                result.operator_refusals[(what, answer.get("code"))] += 1

        while True:
            try:
                async with asyncio.timeout(0.01):
                    await stop.wait()
            except TimeoutError:
                pass
            sent = progress.sent
            due = [item for item in undo if item[0] <= sent or stop.is_set()]
            for item in due:
                undo.remove(item)
                _, what, path, role, body, undone, key = item
                await act(what, "POST", path, role, body)
                undone.discard(key)
            if stop.is_set():
                return
            if sent < next_at:
                continue
            next_at = sent + rnd.randrange(200, 800)
            later = sent + rnd.randrange(100, 500)
            choice = rnd.randrange(4)
            if choice == 0:
                symbol = rnd.choice(self.symbols)
                if symbol not in halted:
                    halted.add(symbol)
                    await act("halt", "POST", f"/instruments/{symbol}/halt", "regulator")
                    undo.append((later, "resume", f"/instruments/{symbol}/resume", "regulator", None, halted, symbol))
            elif choice == 1:
                member = rnd.choice(self.member_ids)
                if member not in killed:
                    killed.add(member)
                    await act("kill switch", "POST", f"/members/{member}/kill", "regulator")
                    undo.append((later, "restore", f"/members/{member}/status", "admin", {"status": "active"}, killed, member))
            elif choice == 2:
                body = {"member_id": rnd.choice(self.member_ids), "amount_fen": rnd.randrange(1, 1_000_000) * 100}
                await act("deposit", "POST", "/clearing/deposits", "clearing", body)
            else:
                body = {"member_id": rnd.choice(self.member_ids), "amount_fen": rnd.randrange(1, 2_000) * 10_000}
                await act("withdrawal", "POST", "/clearing/withdrawals", "clearing", body)

    def _replay_hash(self) -> str:
        """The state rebuilt from the journal alone (no snapshot is taken in a run this size)."""
        try:
            engine = open_engine(self.config, self.data_dir, time.time_ns)
        except Exception as error:  # noqa: BLE001 - reported as a failed check
            return f"replay failed: {error!r}"
        try:
            return engine.core.state_hash()
        finally:
            engine.close()

    # -- the summary and the checks --------------------------------------------------------------

    def _gather(self) -> None:
        result = self.run_result
        for client in self.clients:
            result.requests.update(client.requests)
            result.exec_types.update(client.exec_types)
            result.order_rejects.update(client.order_rejects)
            result.cancel_rejects.update(client.cancel_rejects)
            result.cancel_reasons.update(client.cancel_reasons)
            result.latencies_ns.extend(client.latencies_ns)

    def _checks(self) -> list[Check]:
        result, clients = self.run_result, self.clients
        checks = []

        orders = [order for client in clients for order in client.orders.values()]
        unanswered = sum(1 for order in orders if order.answers == 0)
        twice = sum(1 for order in orders if order.answers > 1)
        checks.append(Check("every order answered once (new or rejected)", not unanswered and not twice,
                            f"{len(orders):,} orders, {unanswered} unanswered, {twice} answered twice"))

        open_gtc = bad_final = 0
        for order in orders:
            if order.status in _OPEN and order.tif == "gtc" and order.finals == 0:
                open_gtc += 1
            elif order.finals != 1:
                bad_final += 1
        local_open = {client.member_id: len(client.open) for client in clients}
        mismatched = sorted(m for m in local_open if local_open[m] != self.open_orders_at_end.get(m, -1))
        disagree = "" if not mismatched else f" except for {len(mismatched)} members: " + ", ".join(mismatched[:5])
        checks.append(Check(
            "every order has exactly one final state", not bad_final and not mismatched,
            f"{len(orders) - open_gtc - bad_final:,} final, {open_gtc:,} GTC still open (the exchange agrees"
            f"{disagree}), {bad_final} without exactly one",
        ))

        cum_wrong = sum(1 for order in orders if order.filled != order.cum)
        reported: Counter = Counter()
        details: dict[tuple[int, int], tuple[str, str, int, str]] = {}
        for client in clients:
            for trading_day, trade_id, order_id, side, qty, price in client.fills:
                reported[(trading_day, trade_id, order_id)] += 1
                details[(trade_id, order_id)] = (client.member_id, side, qty, price)
        duplicated = sum(1 for n in reported.values() if n > 1)
        expected = set()
        wrong = 0
        trades = 0
        for day in result.days:
            for t in day.trades:
                trades += 1
                for order_id, member, side in ((t["buy_order_id"], t["buy_member_id"], "buy"),
                                               (t["sell_order_id"], t["sell_member_id"], "sell")):
                    expected.add((day.trading_day, t["trade_id"], order_id))
                    seen = details.get((t["trade_id"], order_id))
                    if seen is not None and seen != (member, side, t["qty_t"], t["price"]):
                        wrong += 1
        missing = len(expected - set(reported))
        invented = len(set(reported) - expected)
        checks.append(Check(
            "executions reported = the regulator's trades",
            not (missing or invented or duplicated or wrong or cum_wrong),
            f"{sum(reported.values()):,} trade reports for {trades:,} trades: {missing} missing, {invented} not "
            f"in the trades, {duplicated} duplicated, {wrong} different, {cum_wrong} orders whose fills miss cum_qty",
        ))

        seq_gaps = sum(client.seq_gaps for client in clients)
        book_gaps = sum(client.book_gaps for client in clients)
        checks.append(Check("sequence numbers without gaps", not seq_gaps and not book_gaps,
                            f"session_seq gaps {seq_gaps}, book feed gaps {book_gaps} on {len(clients)} connections"))

        problems = [f"{client.member_id}: {problem}" for client in clients for problem in client.problems]
        checks.append(Check("no error, no dropped session, no stray report", not problems,
                            "none" if not problems else f"{len(problems)}: " + "; ".join(problems[:5])))

        close_wrong = []
        for day in result.days:
            volume: Counter = Counter()
            count: Counter = Counter()
            for t in day.trades:
                volume[t["instrument"]] += t["qty_t"]
                count[t["instrument"]] += 1
            for close in day.closes:
                if (close["volume_t"], close["trade_count"]) != (volume[close["instrument"]], count[close["instrument"]]):
                    close_wrong.append(f"{day.trading_day} {close['instrument']}")
        checks.append(Check("close statistics = the regulator's trades", not close_wrong and all(d.closes for d in result.days),
                            "equal" if not close_wrong else "different: " + ", ".join(close_wrong)))

        settle_wrong = []
        for day in result.days:
            report = day.settlement
            value = sum(parse_price(t["price"]) * t["qty_t"] for t in day.trades)
            volume_t = sum(t["qty_t"] for t in day.trades)
            if report is None:
                settle_wrong.append(f"{day.trading_day}: {day.settlement_error}")
            elif report["differences"] or (report["trades"], report["volume_t"], report["value_fen"]) != (len(day.trades), volume_t, value):
                settle_wrong.append(f"{day.trading_day}: {len(report['differences'])} differences, "
                                    f"{report['trades']} trades settled of {len(day.trades)}")
        checks.append(Check("settlement reconciled, zero differences", not settle_wrong,
                            "every day" if not settle_wrong else "; ".join(settle_wrong)))

        changes = sum(day.holding_changes for day in result.days)
        checks.append(Check("start of day after a settlement changes nothing", not changes,
                            f"{changes} holdings changed at the open of a later day"))

        same = bool(result.state_hash) and result.state_hash == result.replay_hash
        checks.append(Check("the journal rebuilds the same state", same and self.hub_fatal is None,
                            "state hash identical" if same else f"served {result.state_hash[:16]}, replayed {result.replay_hash[:40]}"
                            + ("" if self.hub_fatal is None else f"; the hub stopped: {self.hub_fatal!r}")))
        return checks


# -- printing --------------------------------------------------------------------------------------


def _percentile(values: list[int], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def print_served_summary(run: ServedRun, out: TextIO | None = None) -> None:
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out)

    styles = ", ".join(f"{n} {style}s" for style, n in sorted(run.styles.items()))
    say(f"served simulation: {len(run.days)} trading day(s), {run.members} members over WebSockets ({styles}), "
        f"seed {run.seed}, window {run.window}")
    say(f"orders {run.orders:,}  cancels {run.requests['cancel']:,}  amends {run.requests['amend']:,}  "
        f"mass cancels {run.requests['mass_cancel']:,}  in {run.trading_s:.1f} s of continuous trading: "
        f"{run.orders_per_s:,.0f} orders/s over the sockets; order to first answer "
        f"p50 {_percentile(run.latencies_ns, 0.5):.1f} ms, p99 {_percentile(run.latencies_ns, 0.99):.1f} ms; "
        f"whole run {run.elapsed_s:.1f} s")
    order = ("new", "trade", "replaced", "canceled", "expired", "rejected", "order_status")
    say("execution reports: " + "  ".join(f"{kind} {run.exec_types[kind]:,}" for kind in order if run.exec_types[kind]))
    if run.cancel_reasons:
        say("cancelled because: " + "  ".join(f"{reason} {n:,}" for reason, n in sorted(run.cancel_reasons.items())))
    say(f"{'instrument':<10} {'open':>9} {'high':>9} {'low':>9} {'close':>9} {'volume t':>13} {'turnover CNY':>18} {'trades':>8}")
    for symbol, item in _instrument_table(run).items():
        def price(value: int | None) -> str:
            return format_fen(value) if value is not None else "-"
        say(f"{symbol:<10} {price(item['open']):>9} {price(item['high']):>9} {price(item['low']):>9} "
            f"{price(item['close']):>9} {item['volume']:>13,} {format_fen(item['turnover'], grouped=True):>18} {item['trades']:>8,}")
    say("rejects by reason:")
    rows = [(f"{code} {_reason_name(code)}", n) for code, n in sorted(run.order_rejects.items())]
    rows += [(f"{code} {_reason_name(code)} ({what})", n) for (what, code), n in sorted(run.cancel_rejects.items())]
    for name, count in rows or [("none", 0)]:
        say(f"  {name:<48} {count:>8,}")
    if run.operator:
        refused = sum(run.operator_refusals.values())
        say("operator: " + "  ".join(f"{what} {n}" for what, n in sorted(run.operator.items()))
            + (f"  ({refused} refused: " + ", ".join(f"{what} {_reason_name(code)}" for (what, code) in sorted(
                run.operator_refusals, key=str)) + ")" if refused else ""))
    for day in run.days:
        report = day.settlement
        if report is None:
            say(f"settlement of {day.trading_day} STOPPED: {day.settlement_error}")
            continue
        say(f"settled {report['trading_day']}: {report['trades']:,} trades, {report['volume_t']:,} t, "
            f"{format_fen(report['value_fen'], grouped=True)} CNY among {report['members']:,} members; "
            f"{report['allowance_legs']:,} allowance legs and {report['cash_legs']:,} cash legs; "
            f"reconciliation: {len(report['differences'])} differences")
    say("checks:")
    for check in run.checks:
        say(f"  [{'ok' if check.ok else 'FAILED'}] {check.name}: {check.detail}")
    say(f"{'all checks passed' if run.ok else 'SOME CHECKS FAILED'}; state hash {run.state_hash}")


def _reason_name(code: int | None) -> str:
    try:
        return RejectReason(code).name  # type: ignore[arg-type]
    except ValueError:
        return str(code)


def _instrument_table(run: ServedRun) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for day in run.days:
        for close in day.closes:
            item = table.setdefault(close["instrument"], {"open": None, "high": None, "low": None, "close": 0,
                                                          "volume": 0, "turnover": 0, "trades": 0})
            if close["open_fen"] is not None:
                item["open"] = item["open"] if item["open"] is not None else close["open_fen"]
                item["high"] = max(item["high"] or 0, close["high_fen"])
                item["low"] = close["low_fen"] if item["low"] is None else min(item["low"], close["low_fen"])
            item["close"] = close["close_fen"]
            item["volume"] += close["volume_t"]
            item["turnover"] += close["turnover_fen"]
            item["trades"] += close["trade_count"]
    return dict(sorted(table.items()))


def main(argv: list[str] | None = None) -> int:
    """``python -m exchange.served_simulation`` with the ``simulate`` options."""
    parser = argparse.ArgumentParser(prog="exchange-simulate-served")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS)
    parser.add_argument("--commands", type=int, default=DEFAULT_ORDERS, help="new orders per trading day")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--start", default=DEFAULT_START)
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    parser.add_argument("--clearing-db")
    add_served_arguments(parser)
    return run_served(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
