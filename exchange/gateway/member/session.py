"""One member WebSocket connection: logon, frames in, messages out, limits.

Decisions:

* **Frames are handled in arrival order and never awaited one by one.** A new order, cancel
  or amend is put on the hub's queue at once (``Hub.enqueue``) and the next frame is read:
  a session pipelines, and its commands reach the engine in the order they arrived. The
  execution reports come back through the hub to every session of the member.
* **Logon first.** Any other first frame, a malformed one, or a refused logon is answered
  (error 6, the decoding error, or error 12) and the connection closed. A logon beyond the
  member's connection limit is answered with error 7 and closed (``too_many_connections``).
* **Bad input is answered, within a budget.** Each malformed frame (error codes 1-7 and 11)
  is answered with an ``error`` naming the field and spends one unit of the member's
  :class:`ErrorBudget` (20 a minute over all its sessions, kept by the hub, so reconnecting
  does not reset it); past it the frame is answered with error 10, then ``session_closing``
  (``too_many_errors``). A duplicate client order id (8) or an unknown order (9) is a
  business answer and costs nothing. Nothing a frame says reaches the engine unless it
  decoded completely: there is no half-applied command.
* **Floods are answered in the gateway** (:mod:`exchange.gateway.member.budget`). After logon
  every well-formed frame spends one token of the session's frame bucket and one of its
  member's; a frame over either is answered with error 13 (``THROTTLED``: the problem names
  the message and its client order id) and nothing of it is queued, journalled or tracked
  (the client order id stays free); the session then stops reading until the budget has
  room for one frame again, so the client's socket pushes back. A command beyond the
  member's bound of commands waiting for the engine is answered with error 14
  (``TOO_MANY_PENDING``), a mass cancel excepted. A cancel or amend of an order that is not
  the member's live order on that instrument (per the tracker: unknown, another member's,
  finished, or on another instrument) is answered with a ``cancel_reject`` 109 (501 for an
  unlisted instrument), as the engine would answer it, without troubling the engine; an
  order the tracker still shows live goes on, and the engine has the last word.
* **Frame size.** Frames up to 64 KiB are parsed; a frame from 64 KiB to
  :data:`HARD_FRAME_LIMIT` is answered with error 5 and dropped unparsed; aiohttp closes the
  connection (WebSocket code 1009) on anything larger, which it cannot read without buffering.
  Compression is off. aiohttp hands text frames over as bytes (``decode_text=False``) so that
  invalid UTF-8 is answered with error 2 instead of killing the connection.
* **Outbound: one bounded queue and one writer task per connection.** The hub and the
  session only append to the queue (never await a socket), so a slow reader slows nobody
  else. A queue that reaches its bound (10,000 messages by default) means the client does not
  read: the queue is dropped, ``session_closing`` (``slow_reader``) is sent, and the
  connection is aborted if the writer cannot finish within :data:`CLOSE_GRACE_S`.
* **session_seq** is stamped when a private message is queued, so it is gap-free on every
  connection; public messages are shared bytes without it.
* **Heartbeats.** The server sends one when it has queued nothing for ``heartbeat_s`` and
  closes a session silent for three intervals (``heartbeat_timeout``); before logon the same
  rule uses the default interval.
* **A logout is a disconnect, said politely.** Cancel-on-disconnect applies to it as to any
  other end of the member's last session (the option protects the orders whenever the
  member is no longer connected, and a logout is the member leaving), with one difference:
  the session cancels first and closes after, so the cancels' execution reports and then
  ``session_closing`` (``logged_out``) reach the client before the close. The mass cancel
  goes into the member's lane behind its own commands, so an order sent just before the
  logout is cancelled too. Frames after a ``logout`` are not read. The dead-man timer is the
  member's and keeps running, as on any disconnect.
* **A mass cancel is answered** with a ``mass_cancel_report`` to the session that sent it,
  once the engine's events are back (after their execution reports); an unlisted instrument
  is answered at once (501), as a cancel of one is, without reaching the exchange.
* **Cancel-on-disconnect** (chosen at logon): when the member's last session ends other than
  by a server shutdown, the hub sends one ``MassCancel`` for the member
  (``cancel_reason`` ``cancel_on_disconnect``; the dead-man timer's is ``dead_man_timer``). A server shutdown
  (or a crash) leaves orders resting: they are in the journal and come back at restart. The
  hub journals the member's guard (cancel-on-disconnect, dead-man period) when a logon, a
  close or a ``cancel_after`` changes it, so after a restart a guarded member who does not
  log back on within its grace period has its orders cancelled (:mod:`exchange.gateway.hub`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import Literal

import msgspec
from aiohttp import WSMsgType, web

from exchange.gateway.hub import Hub, HubStopped, MemberBusy
from exchange.gateway.member import wire
from exchange.gateway.member.auth import AuthError
from exchange.gateway.member.budget import FrameBudget, TokenBucket
from exchange.gateway.member.orders import TrackedOrder, execution_report, mass_cancel_report, unlisted_mass_cancel_report
from exchange.gateway.operator.roles import ANONYMOUS, MEMBER, message_allowed
from exchange.gateway.member.wire import (
    AmendRequest,
    CancelAfter,
    CancelReject,
    CancelRequest,
    ErrorBudget,
    ErrorCode,
    Heartbeat,
    Logon,
    LogonAck,
    Logout,
    MassCancelRequest,
    NewOrder,
    OrderStatusRequest,
    ServerHeartbeat,
    SessionClosing,
    Subscribe,
    Unsubscribe,
    WireError,
)
from exchange.model.commands import MassCancel
from exchange.model.enums import CancelReason
from exchange.model.rejects import RejectReason

log = logging.getLogger("exchange.gateway.member.session")

HARD_FRAME_LIMIT = 4 * wire.MAX_FRAME_BYTES  # aiohttp's max_msg_size: beyond it, close (1009)
CLOSE_GRACE_S = 2.0  # for the last messages to leave before the connection is aborted


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), cls  # every inbound message is tagged with its "type" name
    return tag


_TAGS = {cls: _tag(cls) for cls in (  # message class -> its "type"
    Logon, NewOrder, CancelRequest, AmendRequest, MassCancelRequest, OrderStatusRequest,
    Subscribe, Unsubscribe, Heartbeat, CancelAfter, Logout)}


class Session:
    def __init__(self, hub: Hub, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.hub = hub
        self.ws = ws
        self.transport = request.transport
        self.session_id = f"s-{secrets.token_hex(4)}"
        self.member_id = ""
        self.key_id = ""
        self.role = ANONYMOUS
        self.cancel_on_disconnect = True
        self.heartbeat_s = wire.DEFAULT_HEARTBEAT_S
        self.subscriptions: set[str] = set()
        self.error_budget: ErrorBudget | None = None  # the member's, from logon
        self.frames: FrameBudget | None = None  # the session's and the member's, from logon
        self._pause_s = 0.0  # set by an over-budget frame: stop reading this long
        self.session_seq = 0
        self.closing: str | None = None
        self._cancel_orders = True
        self._logged_out = False  # a logout was read: no further frame is
        self._out: deque[bytes] = deque()
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._time = loop.time
        self.last_received = self.last_sent = loop.time()

    def __repr__(self) -> str:
        return f"Session({self.session_id}, {self.member_id or 'not logged on'})"

    # -- the connection's life -------------------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the connection ends; then clean up."""
        writer = asyncio.create_task(self._write(), name=f"{self.session_id}-writer")
        watchdog = asyncio.create_task(self._watch(), name=f"{self.session_id}-watchdog")
        try:
            async for message in self.ws:
                self.last_received = self._time()
                self._on_frame(message)
                if self.closing:
                    break
                if self._pause_s:  # over budget: let the client's socket hold what follows
                    pause, self._pause_s = self._pause_s, 0.0
                    await asyncio.sleep(pause)
        except Exception:  # noqa: BLE001 - a connection's failure must not reach aiohttp's log as ours
            log.exception("%r: reading failed", self)
        finally:
            watchdog.cancel()
            self._finish(writer)
            await self._wait_writer(writer)

    def _finish(self, writer: asyncio.Task) -> None:
        if self.closing is None:
            self.closing = "disconnected"
        self._wake.set()
        if self.role == MEMBER:
            cancel = self.cancel_on_disconnect and self._cancel_orders
            self.hub.remove_session(self, cancel_orders=cancel)

    async def _wait_writer(self, writer: asyncio.Task) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(writer), CLOSE_GRACE_S)
        except (TimeoutError, asyncio.CancelledError):
            writer.cancel()
            self._abort()
        except Exception:  # noqa: BLE001
            self._abort()

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def close(self, reason: str, cancel_orders: bool = True) -> None:
        """Say why (``session_closing``) and end the connection once that has been written."""
        if self.closing is not None:
            return
        self._cancel_orders = cancel_orders
        self.hub.metrics.sessions_closed[reason] += 1
        self.send_private(SessionClosing(reason), force=True)
        self.closing = reason
        self._wake.set()
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self.ws.closed:
            self._abort()

    # -- outbound ------------------------------------------------------------------------------

    def send_private(self, message: wire.PrivateMessage, force: bool = False) -> None:
        if self.closing is not None:
            return
        self.session_seq += 1
        self._queue(wire.encode(message, self.session_seq), force)

    def send_frame(self, frame: bytes) -> None:
        """A public message's shared bytes."""
        if self.closing is None:
            self._queue(frame, False)

    def _queue(self, frame: bytes, force: bool) -> None:
        if not force and len(self._out) >= self.hub.max_outbound:
            self._out.clear()
            self.close("slow_reader")
            return
        self._out.append(frame)
        self.last_sent = self._time()
        self._wake.set()

    @property
    def outbound_depth(self) -> int:
        return len(self._out)

    async def _write(self) -> None:
        """The connection's one writer: sends what is queued, in order; closes at the end."""
        out, ws = self._out, self.ws
        try:
            while True:
                while out:
                    await ws.send_frame(out.popleft(), WSMsgType.TEXT)
                if self.closing is not None:
                    break
                self._wake.clear()
                await self._wake.wait()
            await ws.close()
        except (ConnectionError, RuntimeError):
            pass  # the peer went away; the reader ends too

    async def _watch(self) -> None:
        """Heartbeats out, and the silence limit in."""
        while self.closing is None:
            await asyncio.sleep(min(1.0, self.heartbeat_s / 2))
            now = self._time()
            if now - self.last_received > 3 * self.heartbeat_s:
                self.close("heartbeat_timeout")
            elif self.role == MEMBER and now - self.last_sent >= self.heartbeat_s:
                self.send_private(ServerHeartbeat())

    # -- inbound -------------------------------------------------------------------------------

    def _on_frame(self, frame) -> None:
        if self._logged_out:
            return
        if frame.type == WSMsgType.TEXT:
            data = frame.data if isinstance(frame.data, bytes) else frame.data.encode("utf-8", "surrogatepass")
            self._on_text(data)
        elif frame.type == WSMsgType.BINARY:
            self._refuse(WireError(ErrorCode.BINARY_FRAME, None, "binary frame: the protocol uses text frames"))
        elif frame.type == WSMsgType.ERROR:
            self.closing = self.closing or "protocol_error"

    def _on_text(self, data: bytes) -> None:
        try:
            message = wire.decode_inbound(data)
        except WireError as error:
            self._refuse(error)
            return
        kind = _TAGS[type(message)]
        if self.role == ANONYMOUS and not isinstance(message, Logon):
            self._refuse(WireError(ErrorCode.NOT_LOGGED_ON, None, "log on first"))
        elif not message_allowed(kind, self.role):
            self._refuse(WireError(ErrorCode.NOT_ALLOWED, "type", f"{kind} is not allowed now"))
        elif self.frames is None or self._within_budget(message, kind):
            self._dispatch(message)

    def _within_budget(self, message: wire.InboundMessage, kind: str) -> bool:
        """Spend one frame; over budget, answer error 13, pause reading, and say False."""
        assert self.frames is not None
        empty = self.frames.spend(self.hub.monotonic_ns())
        if empty is None:
            return True
        self.hub.metrics.gateway_refusals[f"{empty}_budget"] += 1
        self.send_private(wire.Error(int(ErrorCode.THROTTLED), None, f"over the {empty}'s frame budget: {_named(message, kind)} was not taken"))
        self._pause_s = self.frames.wait_s()
        return False

    def _refuse(self, error: WireError) -> None:
        """Answer a refused frame; before logon, or past the error budget, close."""
        self.hub.metrics.malformed_frames += 1
        if self.role == ANONYMOUS:
            self.send_private(error.to_message())
            self.close("not_logged_on" if error.code == ErrorCode.NOT_LOGGED_ON else "logon_refused")
        elif self.error_budget is None or self.error_budget.spend(self.hub.monotonic_ns() // 1_000_000):
            self.send_private(error.to_message())
        else:
            self.send_private(wire.Error(int(ErrorCode.TOO_MANY_ERRORS), error.field, "too many refused frames in a minute"))
            self.close("too_many_errors")

    def _dispatch(self, message: wire.InboundMessage) -> None:
        match message:
            case Logon():
                self._logon(message)
            case NewOrder():
                self._new_order(message)
            case CancelRequest():
                self._cancel(message)
            case AmendRequest():
                self._amend(message)
            case MassCancelRequest():
                self._mass_cancel(message)
            case OrderStatusRequest():
                self._order_status(message)
            case Subscribe():
                self._subscribe(message)
            case Unsubscribe():
                for instrument in message.instruments:
                    self.hub.unsubscribe(self, instrument)
            case Heartbeat():
                pass
            case CancelAfter():
                self.hub.arm_dead_man(self.member_id, message.seconds)
            case Logout():
                self._logout()

    # -- logon ---------------------------------------------------------------------------------

    def _logon(self, logon: Logon) -> None:
        hub = self.hub
        try:
            member_id = hub.authenticator.verify(logon, hub.now_ms())
        except AuthError as error:
            log.info("logon refused for key %s: %s", logon.key_id, error.reason.value)
            self.send_private(wire.Error(int(ErrorCode.LOGON_REFUSED), None, error.public_problem()))
            self.close("logon_refused")
            return
        if not hub.can_connect(member_id):
            self.send_private(wire.Error(int(ErrorCode.NOT_ALLOWED), None, "too many connections for the member"))
            self.close("too_many_connections")
            return
        self.member_id, self.key_id, self.role = member_id, logon.key_id, MEMBER
        limits = hub.budget_limits
        self.frames = FrameBudget(TokenBucket(limits.session_per_second, limits.session_burst), hub.member_bucket(member_id))
        self.error_budget = hub.error_budget(member_id)
        self.cancel_on_disconnect, self.heartbeat_s = logon.cancel_on_disconnect, logon.heartbeat_s
        hub.add_session(self)
        instruments = hub.market_data.statuses(hub.symbols)
        self.send_private(LogonAck(member_id, self.session_id, self.heartbeat_s, hub.trading_day, instruments))
        for order in hub.tracker.open_orders(member_id):
            self.send_private(wire_report(order))
        log.info("%r logged on with key %s", self, logon.key_id)

    def _logout(self) -> None:
        """End the session at the member's request; as its last session, with
        cancel-on-disconnect, cancel its orders first (see the module's decisions)."""
        self._logged_out = True
        self._cancel_orders = False  # the cancel, if any, is made here, before the close
        hub, member_id = self.hub, self.member_id
        last = hub.sessions.get(member_id) == [self]
        if last and self.cancel_on_disconnect and (hub.tracker.open_orders(member_id) or hub.orders_in_flight(member_id)):
            command = MassCancel(member_id, None, CancelReason.CANCEL_ON_DISCONNECT)
            future = self._enqueue(command, "logout", bounded=False)
            if future is not None:
                future.add_done_callback(lambda _: self.close("logged_out", cancel_orders=False))
                return
        self.close("logged_out", cancel_orders=False)

    # -- orders --------------------------------------------------------------------------------

    def _new_order(self, message: NewOrder) -> None:
        hub = self.hub
        hub.metrics.orders_received += 1
        if not hub.claim_client_order_id(self.member_id, message.client_order_id):
            self.send_private(wire.Error(int(ErrorCode.DUPLICATE_CLIENT_ORDER_ID), "client_order_id", "already used today"))
            original = hub.tracker.lookup_client_order(self.member_id, message.client_order_id)
            if original is not None:
                self.send_private(wire_report(original))
            return
        started_ns = time.perf_counter_ns()
        command = wire.submit_command(message, self.member_id)
        future = self._enqueue(command, _named(message, "new_order"))
        if future is None:
            hub.release_client_order_id(self.member_id, message.client_order_id)
            return
        future.add_done_callback(lambda f: self._acknowledged(f, started_ns, command))

    def _acknowledged(self, future: asyncio.Future, started_ns: int, command) -> None:
        if future.cancelled() or future.exception() is not None:
            self.hub.release_client_order_id(command.member_id, command.client_order_id)
            return
        self.hub.metrics.order_ack_latency.observe((time.perf_counter_ns() - started_ns) / 1e9)

    def _cancel(self, message: CancelRequest) -> None:
        order = self._live_order(message)
        if order is not None:
            self._enqueue(wire.cancel_command(message, self.member_id, order.order_id), _named(message, "cancel"))  # type: ignore[arg-type]

    def _amend(self, message: AmendRequest) -> None:
        order = self._live_order(message)
        if order is not None:
            self._enqueue(wire.amend_command(message, self.member_id, order.order_id), _named(message, "amend"))  # type: ignore[arg-type]

    def _live_order(self, message: CancelRequest | AmendRequest) -> TrackedOrder | None:
        """The member's live order the message names on its instrument; else None, answered
        here with the reject the engine would give (nothing is journalled for it)."""
        tracker = self.hub.tracker
        if message.order_id is not wire.UNSET:
            order = tracker.order(self.member_id, message.order_id)
        else:
            order = tracker.lookup_client_order(self.member_id, message.client_order_id)  # type: ignore[arg-type]
        if order is not None and order.is_open and order.instrument == message.instrument:
            return order
        self.hub.metrics.gateway_refusals["order_not_live"] += 1
        self.send_private(_not_live_reject(message, order, message.instrument in self.hub.symbols))
        return None

    def _enqueue(self, command, what: str, bounded: bool = True) -> asyncio.Future | None:
        """Queue a command in the member's lane; None when it was not (answered, or closing).
        ``what`` names the frame in a refusal."""
        try:
            future = self.hub.enqueue_member(command, self.member_id, bounded)
        except MemberBusy:
            self.hub.metrics.gateway_refusals["member_pending"] += 1
            limit = self.hub.budget_limits.member_max_pending
            self.send_private(wire.Error(
                int(ErrorCode.TOO_MANY_PENDING), None,
                f"the member has {limit} commands waiting for the exchange: {what} was not taken"))
            return None
        except HubStopped:
            self.close("server_shutdown", cancel_orders=False)
            return None
        future.add_done_callback(_retrieve)
        return future

    def _mass_cancel(self, message: MassCancelRequest) -> None:
        """Queue it (never refused for the member's backlog: it takes risk off); answer it
        once its events are back, or at once for an unlisted instrument."""
        instrument = message.instrument
        if instrument is not None and instrument not in self.hub.symbols:
            self.send_private(unlisted_mass_cancel_report(instrument))
            return
        future = self._enqueue(wire.mass_cancel_command(message, self.member_id), "mass_cancel", bounded=False)
        if future is not None:
            future.add_done_callback(lambda done: self._mass_cancelled(done, instrument))

    def _mass_cancelled(self, future: asyncio.Future, instrument: str | None) -> None:
        if not future.cancelled() and future.exception() is None:
            self.send_private(mass_cancel_report(instrument, future.result().events))

    def _order_status(self, message: OrderStatusRequest) -> None:
        report = self.hub.tracker.status(self.member_id, message)
        if report is not None:
            self.send_private(report)
            return
        field = "order_id" if message.client_order_id is wire.UNSET else "client_order_id"
        self.send_private(wire.Error(int(ErrorCode.UNKNOWN_ORDER), field, "the member has no such order today"))

    # -- market data ---------------------------------------------------------------------------

    def _subscribe(self, message: Subscribe) -> None:
        hub = self.hub
        for index, instrument in enumerate(message.instruments):
            if instrument not in hub.symbols:
                self._refuse(WireError(ErrorCode.INVALID_FIELD, f"instruments[{index}]", "the exchange lists no such instrument"))
                return
        for instrument in message.instruments:
            if instrument in self.subscriptions:
                continue
            hub.subscribe(self, instrument)
            self.send_frame(wire.encode(hub.market_data.status(instrument)))
            self.send_frame(wire.encode(hub.market_data.snapshot(instrument)))


def _named(message: wire.InboundMessage, kind: str) -> str:
    """The message as a refusal names it: its type and, if it has one, its client order id."""
    client_order_id = getattr(message, "client_order_id", wire.UNSET)
    return kind if client_order_id is wire.UNSET else f"{kind} {client_order_id}"


def _not_live_reject(message: CancelRequest | AmendRequest, own: TrackedOrder | None, listed: bool) -> CancelReject:
    """What the engine answers a cancel or amend of an order that is not the member's live
    one: 109 (501 for an unlisted instrument), naming the member's own order if it has it."""
    reason = RejectReason.UNKNOWN_ORDER if listed else RejectReason.UNKNOWN_INSTRUMENT
    order_id: int | None
    client_order_id: str | None
    if own is not None:
        order_id, client_order_id = own.order_id, own.client_order_id
    else:
        order_id = None if message.order_id is wire.UNSET else message.order_id
        client_order_id = None if message.client_order_id is wire.UNSET else message.client_order_id
    response_to: Literal["cancel", "amend"] = "cancel" if isinstance(message, CancelRequest) else "amend"
    return CancelReject(response_to, order_id, client_order_id, message.instrument, int(reason), reason.text)


def wire_report(order: TrackedOrder) -> wire.ExecutionReport:
    """An ``order_status`` report of a tracked order (the resync and duplicate answers)."""
    return execution_report(order, "order_status")


def _retrieve(future: asyncio.Future) -> None:
    """Mark a command's failure as seen (the hub logged it; the session has nothing to add)."""
    if not future.cancelled():
        future.exception()
