"""The hub: the one object that owns the running exchange for the gateway.

It holds the :class:`~exchange.app.Exchange`, the :class:`OrderTracker` and the
:class:`MarketData` built from its events, the credential store and the authenticator, the
connected member sessions, the dead-man timers, the regulator's alerts and the metrics.
Member sessions and the operator API never touch the engine: they hand the hub work and await
the result.

Decisions:

* **One queue, one task.** The engine is single-threaded, so every command from every
  session and from the operator API goes through one ``asyncio.Queue`` drained by one task.
  The task takes everything queued (up to :data:`MAX_BATCH`), executes each job, then
  flushes the journal **once** for the batch (group commit), and only then feeds each job's
  events to the tracker and market data, routes private messages to the sessions of the
  member(s) concerned and public ones to subscribers, and resolves the callers' futures. So
  no acknowledgement leaves before its command is durable, and under load the fsync is paid
  once per batch, not per order.
* **Group commit flushes the journal, not the SQL stores.** ``Engine.flush`` makes the
  journal durable; the trade store batches its own writes (and is flushed at snapshots, end
  of day, settlement, shutdown and before the regulator reads trades). The stores are
  rebuilt from the journal on recovery anyway, so an acknowledgement needs only the journal.
* **Operator jobs are queued too.** Start and end of day, deposits, store reads: anything
  that touches the engine or the stores runs inside the drain task, in order with the orders.
  A job is a function of the :class:`Exchange` returning the events it caused.
* **Settlement runs in a worker thread while the engine is paused.** Settlement posts to the
  registry and the cash ledger for a while (seconds on a big day). The engine's event sink
  writes to the same stores from the loop thread, and the journal is not thread-safe, so the
  two must not overlap. The drain task therefore awaits the settlement thread before it takes
  the next job: the engine (and so every store) is paused, commands wait in the queue, but the
  event loop stays free for heartbeats, market data snapshots, logons and HTTP reads that do
  not touch the stores. Members see a pause in acknowledgements, never a blocked socket.
* **A command that raises is a broken invariant.** The engine has already journalled it;
  the hub fails the batch's callers, records the exception and stops (``fatal``), and the
  server shuts down: a restart replays the journal into the same assertion, which is a bug to
  fix, never input to skip.
* **Start-up rebuilds the tracker and market data from the whole journal.** Snapshots hold
  the core's state, not client order ids or the gateway's view of each order, so after
  ``Exchange.open`` recovered the engine the hub replays every journal record from sequence 1
  through a scratch core (built as ``exchange.app.build_core``) and feeds the events to a
  fresh tracker and market data. Cost: one more pass over the whole journal at start-up
  (roughly the engine's apply time plus ~1 us per event for the tracker: a few seconds per
  million commands) and a second core in memory while it runs. The scratch core's state hash
  must equal the recovered engine's, which checks snapshot and journal against each other.
  A journal compacted at a snapshot would need the tracker's own persisted state (not done).
* **Client order ids in flight.** Between a session's submit and its events coming back, the
  order is not in the tracker yet; the hub keeps a pending set of (member, client order id)
  so two identical ids in flight cannot both pass the duplicate check.
* **Dead-man timers are per member**, kept by the hub, and keep running when the member's
  sessions drop: losing the connection is exactly what they are for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from exchange.app import Exchange, build_core
from exchange.config import Config
from exchange.engine import decode_command
from exchange.gateway.auth import Authenticator, CredentialStore
from exchange.gateway.market_data import MarketData
from exchange.gateway.metrics import Metrics
from exchange.gateway.orders import OrderTracker
from exchange.gateway.wire import MAX_ERRORS_PER_MINUTE, PrivateMessage, PublicMessage, encode
from exchange.model.commands import MassCancel, SubmitOrder
from exchange.model.events import CommandRejected, LargeHolderThresholdCrossed, OrderRejected

if TYPE_CHECKING:
    from exchange.gateway.session import Session

log = logging.getLogger("exchange.gateway.hub")

MAX_BATCH = 1_000  # jobs per group commit
MAX_ALERTS = 10_000  # regulator alerts kept in memory (oldest dropped)

Job = Callable[[Exchange], list]


@dataclass
class _Work:
    job: Job
    command: object  # the command, when the job is one engine command (for the tracker)
    future: asyncio.Future
    blocking: bool = False  # run in a worker thread with the engine paused
    read_only: bool = False  # a failure is the caller's, not a broken invariant
    started_ns: int = field(default_factory=time.perf_counter_ns)


class HubStopped(Exception):
    """The hub takes no more work (shutting down, or stopped by a broken invariant)."""


class Hub:
    def __init__(
        self, exchange: Exchange, config: Config, credentials: CredentialStore,
        metrics: Metrics | None = None, max_connections_per_member: int = 4,
        max_outbound: int = 10_000, on_credentials_changed: Callable[[], None] | None = None,
        max_errors_per_minute: int = MAX_ERRORS_PER_MINUTE,
    ) -> None:
        self.exchange = exchange
        self.config = config
        self.credentials = credentials
        self.authenticator = Authenticator(credentials)
        self.metrics = metrics or Metrics()
        self.max_connections_per_member = max_connections_per_member
        self.max_outbound = max_outbound
        self.max_errors_per_minute = max_errors_per_minute  # the protocol's 20; tests raise it
        self.on_credentials_changed = on_credentials_changed
        self.symbols = sorted(item.symbol for item in config.listed_instruments())
        self.tracker = OrderTracker()
        self.market_data = MarketData(self.symbols)
        self.alerts: list[LargeHolderThresholdCrossed] = []
        self.sessions: dict[str, list[Session]] = {}  # member -> live sessions, oldest first
        self.subscribers: dict[str, list[Session]] = {}  # instrument -> sessions
        self.fatal: BaseException | None = None
        self._pending: set[tuple[str, str]] = set()
        self._dead_man: dict[str, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._accepting = False
        self.stopped = asyncio.Event()  # stop() has finished
        self.failed = asyncio.Event()  # the drain task stopped on a broken invariant

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the gateway's view from the journal, then start taking work."""
        self.rebuild_from_journal()
        self._accepting = True
        self._task = asyncio.create_task(self._drain(), name="hub-drain")

    def rebuild_from_journal(self) -> None:
        """Replay every journal record through a scratch core into the tracker and market data."""
        core = build_core(self.config)
        for record in self.exchange.engine.journal.records():
            command = decode_command(record.payload)
            events = core.apply(record.seq, record.ts_ns, command)
            self.tracker.apply(events, command)
            self.market_data.apply(events)
            self._keep_alerts(events)
        assert core.last_seq == self.exchange.core.last_seq, "the journal and the engine disagree"
        assert core.state_hash() == self.exchange.core.state_hash(), "replay differs from the recovered engine"

    async def stop(self) -> None:
        """Take no more work, finish what is queued, flush the journal."""
        self._accepting = False
        for handle in self._dead_man.values():
            handle.cancel()
        self._dead_man.clear()
        if self._task is not None and not self._task.done():
            await self._queue.put(_Work(_stop_marker, None, asyncio.get_running_loop().create_future()))
            await asyncio.gather(self._task, return_exceptions=True)
        if self.fatal is None:
            self.exchange.flush()
        self.stopped.set()

    # -- submitting work ---------------------------------------------------------------------

    async def submit(self, command: Any) -> list:
        """Execute one engine command (journalled, applied, flushed); its events."""
        return await self.enqueue(command)

    def enqueue(self, command: Any) -> asyncio.Future:
        """Queue one engine command now (so a session's commands keep their order without
        waiting for each other); the future gives its events once they are durable."""
        if not self._accepting:
            raise HubStopped("the exchange is not taking commands")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Work(lambda exchange: exchange.execute(command), command, future))
        return future

    async def run(self, job: Job) -> list:
        """Run a job on the exchange inside the drain task, in order with every command."""
        return await self._enqueue(job, None)

    async def read(self, job: Callable[[Exchange], Any]) -> Any:
        """Run a read of the engine or the stores in order with the commands; its exceptions
        are the caller's (a store read failing is no broken invariant)."""
        return await self._enqueue(job, None, read_only=True)

    async def run_blocking(self, job: Callable[[Exchange], Any]) -> Any:
        """Run a long job (settlement) in a worker thread while the engine is paused; its
        exceptions are the caller's (settlement stops are expected failures)."""
        return await self._enqueue(job, None, blocking=True)

    async def _enqueue(self, job: Callable, command: object, blocking: bool = False, read_only: bool = False) -> Any:
        if not self._accepting:
            raise HubStopped("the exchange is not taking commands")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Work(job, command, future, blocking, read_only))
        self.metrics.queue_depth = self._queue.qsize()
        return await future

    # -- the drain task ----------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self.metrics.queue_depth = self._queue.qsize()
            if not await self._run_batch(batch):
                return

    async def _run_batch(self, batch: list[_Work]) -> bool:
        """Execute, flush once, publish, answer. False when the hub must stop."""
        done: list[tuple[_Work, Any]] = []
        for work in batch:
            if work.job is _stop_marker:
                self._commit_and_publish(done)
                work.future.set_result([])
                return False
            if work.blocking:  # acknowledge what came before, then pause the engine
                self._commit_and_publish(done)
                done = []
                self.exchange.flush()
            try:
                if work.blocking:
                    result = await asyncio.to_thread(work.job, self.exchange)
                else:
                    result = work.job(self.exchange)
            except Exception as error:  # noqa: BLE001 - sorted below
                if work.blocking or work.read_only:
                    done.append((work, error))
                    continue
                return self._die(error, batch, done)
            done.append((work, result))
        self._commit_and_publish(done)
        return True

    def _commit_and_publish(self, done: list[tuple[_Work, Any]]) -> None:
        if not done:
            return
        self.exchange.engine.flush()  # group commit: durable before any acknowledgement
        for work, result in done:
            if isinstance(result, BaseException):
                _settle_future(work.future, error=result)
                continue
            if not (work.blocking or work.read_only):
                self._publish(result, work.command)
            _settle_future(work.future, result=result)

    def _die(self, error: BaseException, batch: list[_Work], done: list) -> bool:
        log.critical("a command broke an invariant; the exchange stops", exc_info=error)
        self.fatal = error
        self._accepting = False
        self.failed.set()
        for work in batch:
            _settle_future(work.future, error=HubStopped("the exchange stopped on an internal error"))
        return False

    # -- publishing ----------------------------------------------------------------------------

    def _publish(self, events: list, command: object) -> None:
        if isinstance(command, SubmitOrder):
            self._pending.discard((command.member_id, command.client_order_id))
        self.metrics.count_events(events)
        self._keep_alerts(events)
        for member_id, message in self.tracker.apply(events, command):
            self.send_private(member_id, message)
        for instrument, message in self.market_data.apply(events):
            self.send_public(instrument, message)

    def send_private(self, member_id: str, message: PrivateMessage) -> None:
        for session in list(self.sessions.get(member_id, ())):
            session.send_private(message)

    def send_public(self, instrument: str, message: PublicMessage) -> None:
        subscribers = self.subscribers.get(instrument)
        if subscribers:
            frame = encode(message)
            for session in list(subscribers):
                session.send_frame(frame)

    def _keep_alerts(self, events: Iterable[object]) -> None:
        for event in events:
            if type(event) is LargeHolderThresholdCrossed:
                self.alerts.append(event)
        if len(self.alerts) > MAX_ALERTS:
            del self.alerts[: len(self.alerts) - MAX_ALERTS]

    # -- client order ids ----------------------------------------------------------------------

    def claim_client_order_id(self, member_id: str, client_order_id: str) -> bool:
        """True when the id is free (not used today, not in flight); it is then in flight."""
        key = (member_id, client_order_id)
        if key in self._pending or self.tracker.lookup_client_order(member_id, client_order_id) is not None:
            return False
        self._pending.add(key)
        return True

    def release_client_order_id(self, member_id: str, client_order_id: str) -> None:
        """The submit never reached the engine (the hub stopped): the id is free again."""
        self._pending.discard((member_id, client_order_id))

    # -- sessions ------------------------------------------------------------------------------

    def can_connect(self, member_id: str) -> bool:
        return len(self.sessions.get(member_id, ())) < self.max_connections_per_member

    def add_session(self, session: Session) -> None:
        self.sessions.setdefault(session.member_id, []).append(session)
        self.metrics.connections += 1

    def remove_session(self, session: Session, cancel_orders: bool) -> None:
        """Forget a closed session; cancel the member's orders if it was the last one and
        asked for cancel-on-disconnect."""
        for instrument in list(session.subscriptions):
            self.unsubscribe(session, instrument)
        sessions = self.sessions.get(session.member_id)
        if not sessions or session not in sessions:
            return
        sessions.remove(session)
        self.metrics.connections -= 1
        if sessions:
            return
        del self.sessions[session.member_id]
        if cancel_orders and self._accepting and self.tracker.open_orders(session.member_id):
            asyncio.get_running_loop().create_task(self._cancel_all(session.member_id, "cancel-on-disconnect"))

    def subscribe(self, session: Session, instrument: str) -> None:
        subscribers = self.subscribers.setdefault(instrument, [])
        if session not in subscribers:
            subscribers.append(session)
        session.subscriptions.add(instrument)

    def unsubscribe(self, session: Session, instrument: str) -> None:
        subscribers = self.subscribers.get(instrument, [])
        if session in subscribers:
            subscribers.remove(session)
        session.subscriptions.discard(instrument)

    def close_sessions_of_key(self, key_id: str) -> None:
        """A revoked key logs on no more, and its sessions end now."""
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                if session.key_id == key_id:
                    session.close("credentials_revoked")

    def credentials_changed(self) -> None:
        """Persist the credential records (the composition root says where)."""
        if self.on_credentials_changed is not None:
            self.on_credentials_changed()

    def close_all_sessions(self, reason: str) -> None:
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                session.close(reason, cancel_orders=False)

    # -- dead-man timer ------------------------------------------------------------------------

    def arm_dead_man(self, member_id: str, seconds: int) -> None:
        """(Re)start the member's timer; 0 switches it off."""
        handle = self._dead_man.pop(member_id, None)
        if handle is not None:
            handle.cancel()
        if seconds > 0 and self._accepting:
            loop = asyncio.get_running_loop()
            self._dead_man[member_id] = loop.call_later(seconds, self._dead_man_fired, member_id)

    def _dead_man_fired(self, member_id: str) -> None:
        self._dead_man.pop(member_id, None)
        if self._accepting:
            asyncio.get_running_loop().create_task(self._cancel_all(member_id, "dead-man timer"))

    async def _cancel_all(self, member_id: str, why: str) -> None:
        try:
            events = await self.submit(MassCancel(member_id))
        except HubStopped:
            return
        log.info("%s: cancelled %d of %s's orders", why, sum(1 for e in events if type(e).__name__ == "OrderCancelled"), member_id)

    # -- queries (for the operator API) -----------------------------------------------------------

    def member_accounts(self) -> list:
        """Every member's account as the risk room keeps it (public state structs)."""
        return list(self.exchange.core.risk.state().accounts)

    def state_hash(self) -> str:
        return self.exchange.core.state_hash()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


def _stop_marker(exchange: Exchange) -> list:  # pragma: no cover - never called
    return []


def _settle_future(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def rejected(events: list) -> CommandRejected | OrderRejected | None:
    """The first reject among a command's events, if any."""
    for event in events:
        if type(event) in (CommandRejected, OrderRejected):
            return event
    return None
