"""One simulated member's software over a real WebSocket: logon, market data, the trading
loop of :mod:`exchange.sim.strategies`, the reports it gets back.

The member logs on with its key (a signed HMAC logon), subscribes to the public market data of
every instrument and keeps a top-of-book view from the snapshot and the updates (checking
``seq``/``prev_seq``). Its strategy sees that view, its last trade prices and its own open
orders as its reports tell them (:class:`FeedView`); each intent becomes a wire message, with
prices as two-place strings. It keeps at most ``window`` new orders unanswered (pipelining,
as a real client would). Everything it is told privately is kept (the client log) so that it
can be checked against the journal.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any
from collections.abc import Callable

import aiohttp
import msgspec

from exchange.gateway.member.auth import sign_logon
from exchange.gateway.member.wire import (
    ORDER_TYPE_NAMES,
    SIDE_NAMES,
    TIF_NAMES,
    AmendRequest,
    BookSnapshot,
    BookUpdate,
    CancelReject,
    CancelRequest,
    Error,
    ExecutionReport,
    Heartbeat,
    InboundMessage,
    InstrumentStatus,
    Logon,
    LogonAck,
    MassCancelRequest,
    NewOrder,
    OrderStatusRequest,
    PrivateMessage,
    SessionClosing,
    Subscribe,
    Trade,
    decode_outbound,
    encode,
    format_price,
    parse_price,
)
from exchange.model import Side
from exchange.progress import Progress
from exchange.sim.strategies import (
    FAIR_MARGIN_FEN,
    AmendIntent,
    CancelIntent,
    MassCancelIntent,
    Member,
    MemberIntent,
    NewOrderIntent,
    OperatorTurn,
    member_turn,
)

ANSWER_TIMEOUT_S = 30.0  # an order unanswered this long is a failed check, not a hang
HEARTBEAT_S = 10
UNKNOWN_ORDER_ID_CEILING = 10**6  # ids a member cancels "by mistake" are drawn below this
OPEN_STATUSES = ("new", "partially_filled")
FINAL_STATUSES = ("filled", "canceled", "rejected", "expired")
UNKNOWN_ORDER_ERROR = 9  # the answer to the sync probe
_PRICES: dict[str, int] = {}  # price text -> fen: the feed repeats a few hundred prices


def fen_of(text: str) -> int:
    """A price from the server, parsed (strictly, by the wire's rules) once per distinct text."""
    fen = _PRICES.get(text)
    if fen is None:
        fen = _PRICES[text] = parse_price(text)
    return fen


class SentOrder:
    """A new order the member sent, as its reports have told it so far. ``qty_t`` is the open
    (leaves) quantity, which is what the strategies amend."""

    __slots__ = ("cid", "instrument", "side", "tif", "price_fen", "qty", "sent_ns", "order_id",
                 "answers", "finals", "status", "qty_t", "cum", "filled", "trade_ids")

    def __init__(self, cid: str, instrument: str, side: str, tif: str, price_fen: int | None, qty: int) -> None:
        self.cid, self.instrument, self.side, self.tif = cid, instrument, side, tif
        self.price_fen, self.qty = price_fen, qty
        self.sent_ns = 0
        self.order_id: int | None = None
        self.answers = 0  # "new" or "rejected" reports: exactly one
        self.finals = 0  # reports that ended the order: at most one
        self.status = "sent"
        self.qty_t = self.cum = self.filled = 0
        self.trade_ids: list[int] = []

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class FeedView:
    """The strategies' :class:`~exchange.sim.strategies.MarketView` for a member on the wire:
    the public feed's books and last trades, the day's bands, the member's open orders."""

    def __init__(self, symbols: list[str]) -> None:
        self.bids: dict[str, dict[int, int]] = {s: {} for s in symbols}
        self.asks: dict[str, dict[int, int]] = {s: {} for s in symbols}
        self.book_seq: dict[str, int | None] = {s: None for s in symbols}
        self.last_px: dict[str, int] = {}
        self.bands: dict[str, tuple[int, int]] = {}
        self.open: dict[str, SentOrder] = {}  # acknowledged and open, by client order id
        self.book_gaps = 0

    def band(self, symbol: str) -> tuple[int, int]:
        return self.bands[symbol]

    def best_price(self, symbol: str, side: Side) -> int | None:
        if side is Side.BUY:
            return min(self.asks[symbol]) if self.asks[symbol] else None
        return max(self.bids[symbol]) if self.bids[symbol] else None

    def market_price(self, symbol: str) -> int | None:
        """The last trade, else the middle of the book."""
        last = self.last_px.get(symbol)
        if last is not None:
            return last
        bids, asks = self.bids[symbol], self.asks[symbol]
        return (max(bids) + min(asks)) // 2 if bids and asks else None

    def open_orders(self, member_id: str, symbol: str) -> list[SentOrder]:
        return [order for order in self.open.values() if order.instrument == symbol]

    def unknown_order_id(self, rnd: random.Random) -> int:
        return rnd.randint(1, UNKNOWN_ORDER_ID_CEILING)

    def snapshot(self, snapshot: BookSnapshot) -> None:
        symbol = snapshot.instrument
        self.bids[symbol] = {fen_of(p): q for p, q, _ in snapshot.bids}
        self.asks[symbol] = {fen_of(p): q for p, q, _ in snapshot.asks}
        self.book_seq[symbol] = snapshot.seq

    def update(self, update: BookUpdate) -> None:
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
                    side[fen_of(price)] = qty
                else:
                    side.pop(fen_of(price), None)


class SimMember:
    """One member's software: a logged-on WebSocket session, a feed view, a trading style."""

    def __init__(self, member_id: str, style: str, seed: int, symbols: list[str], window: int, progress: Progress) -> None:
        self.member_id, self.style, self.symbols = member_id, style, symbols
        self.random = random.Random(f"{seed}:{member_id}")
        self.member = Member(member_id, style, symbols, {})
        self.view = FeedView(symbols)
        self.window, self.progress = window, progress
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.trading_day = ""
        self.orders: dict[str, SentOrder] = {}
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
        self.closed_by_server = ""
        self.dead = False
        self._wake = asyncio.Event()
        self._logged_on: asyncio.Future | None = None
        self._probe: asyncio.Future | None = None
        self._probes = 0
        self._last_sent = 0.0
        self._tasks: list[asyncio.Task] = []

    @property
    def open(self) -> dict[str, SentOrder]:
        return self.view.open

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

    async def _send(self, message: InboundMessage) -> None:
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
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                self._on_frame(frame.data)
        except Exception as error:  # noqa: BLE001 - a client failure is a failed check, reported
            self.problems.append(f"reading failed: {error!r}")
        finally:
            self._connection_ended()

    def _connection_ended(self) -> None:
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
        if isinstance(message, BookUpdate):
            self.view.update(message)
        elif isinstance(message, Trade):
            self.view.last_px[message.instrument] = fen_of(message.price)
        elif isinstance(message, BookSnapshot):
            self.view.snapshot(message)
        elif not isinstance(message, InstrumentStatus):
            self._on_private(data, message)

    def _on_private(self, data: str, message: PrivateMessage) -> None:
        self.private_log.append(data)
        if message.session_seq != self.session_seq + 1:
            self.seq_gaps += 1
        self.session_seq = message.session_seq
        if isinstance(message, ExecutionReport):
            self._report(message)
        elif isinstance(message, CancelReject):
            self.cancel_rejects[(message.response_to, message.reject_code)] += 1
        elif isinstance(message, Error):
            self._error(message)
        elif isinstance(message, SessionClosing):
            self.closed_by_server = message.reason
        elif isinstance(message, LogonAck):
            if self._logged_on is not None and not self._logged_on.done():
                self._logged_on.set_result(message)
        # a ServerHeartbeat only keeps the session alive

    def _error(self, message: Error) -> None:
        probe = self._probe
        if message.code == UNKNOWN_ORDER_ERROR and probe is not None and not probe.done():
            probe.set_result(None)
        else:
            self.problems.append(f"error {message.code} on {message.field}: {message.problem}")

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
            self._answered(order, report)
        elif exec_type == "trade":
            qty = report.last_qty or 0
            order.filled += qty
            trade_id, side, price = report.trade_id, report.side, report.last_px
            if trade_id is None or side is None or price is None:
                self.problems.append(f"a trade report for {order.cid} without its trade id, side or price")
            else:
                order.trade_ids.append(trade_id)
                self.fills.append((self.trading_day, trade_id, report.order_id, side, qty, price))
        elif exec_type == "canceled":
            self.cancel_reasons[report.cancel_reason] += 1
        elif exec_type == "replaced" and report.price is not None:
            order.price_fen = parse_price(report.price)
        self._track(order, report)

    def _answered(self, order: SentOrder, report: ExecutionReport) -> None:
        """The first answer to a new order frees a place in the window."""
        order.answers += 1
        if order.answers == 1:
            self.latencies_ns.append(time.perf_counter_ns() - order.sent_ns)
            self.in_flight -= 1
            self._wake.set()
        if report.exec_type == "rejected":
            self.order_rejects[report.reject_code] += 1
        else:
            order.order_id = report.order_id

    def _track(self, order: SentOrder, report: ExecutionReport) -> None:
        order.status, order.qty_t, order.cum, order.qty = report.ord_status, report.leaves_qty, report.cum_qty, report.qty
        if order.is_open:
            self.view.open[order.cid] = order
            return
        self.view.open.pop(order.cid, None)
        if order.status in FINAL_STATUSES:
            order.finals += 1

    # -- the trading day -----------------------------------------------------------------------

    def begin_day(self, trading_day: str, bands: dict[str, tuple[int, int, int]]) -> None:
        """The day's bulletin: each instrument's previous close and price band."""
        self.trading_day = trading_day
        fair = self.member.fair_fen
        for symbol, (prev_close, lower, upper) in bands.items():
            self.view.bands[symbol] = (lower, upper)
            fair[symbol] = min(max(fair.get(symbol, prev_close), lower + FAIR_MARGIN_FEN), upper - FAIR_MARGIN_FEN)

    async def trade(self, orders: int) -> None:
        """Send ``orders`` new orders (with cancels, amends and mass cancels among them), at
        most ``window`` unanswered; return once the last one is answered."""
        sent = 0
        while sent < orders and not self.dead:
            if self.in_flight >= self.window:
                await self._until(lambda: self.in_flight < self.window, "an answer")
                continue
            message, kind = self.next_request()
            if isinstance(message, NewOrder):
                self.orders[message.client_order_id].sent_ns = time.perf_counter_ns()
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
        while not condition() and not self.dead:
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

    # -- intents on the wire -------------------------------------------------------------------

    def next_request(self) -> tuple[InboundMessage, str]:
        """The strategy's next intent as a wire message and its kind (order, cancel, amend,
        mass_cancel); a turn that would be the operator's is skipped."""
        while True:
            request = self.request_for(member_turn(self.random, self.member, self.view))
            if request is not None:
                return request

    def request_for(self, intent: MemberIntent) -> tuple[InboundMessage, str] | None:
        match intent:
            case OperatorTurn():
                return None
            case NewOrderIntent(qty_t=0):  # the wire cannot carry it: a cancel not its own instead
                return CancelRequest(intent.symbol, order_id=self.view.unknown_order_id(self.random)), "cancel"
            case NewOrderIntent():
                return self._new_order(intent), "order"
            case CancelIntent():
                if intent.order is None:
                    return CancelRequest(intent.symbol, order_id=intent.unknown_order_id), "cancel"
                return CancelRequest(intent.symbol, **self._reference(intent.order)), "cancel"
            case AmendIntent():
                ref = self._reference(intent.order)
                return AmendRequest(intent.symbol, intent.qty_t, format_price(intent.price_fen), **ref), "amend"
            case MassCancelIntent():
                return MassCancelRequest(intent.symbol), "mass_cancel"
        raise AssertionError(f"an intent the member cannot send: {intent!r}")

    def _reference(self, order: SentOrder) -> dict[str, Any]:
        """An open order by client order id or by order id, half and half."""
        return {"client_order_id": order.cid} if self.random.random() < 0.5 else {"order_id": order.order_id}

    def _new_order(self, intent: NewOrderIntent) -> NewOrder:
        self.next_id += 1
        cid = f"o{self.next_id}"
        side, tif = SIDE_NAMES[intent.side], TIF_NAMES[intent.tif]
        self.orders[cid] = SentOrder(cid, intent.symbol, side, tif, intent.price_fen, intent.qty_t)
        price = msgspec.UNSET if intent.price_fen is None else format_price(intent.price_fen)
        return NewOrder(cid, intent.symbol, side, intent.qty_t, price, ORDER_TYPE_NAMES[intent.order_type], tif)

    # -- the client log ------------------------------------------------------------------------

    def write_log(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{self.member_id}.jsonl").write_text("".join(line + "\n" for line in self.private_log))
