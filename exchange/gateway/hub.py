"""The hub: the one object that drives the running exchange for the gateway.

It holds the service port (:class:`~exchange.gateway.port.ExchangePort`, the composition
root's adapter of the exchange), the gateway's views (the order tracker, market data, alerts
and metrics: projections of the engine's stream, :mod:`exchange.gateway.views`), the
credential store and the authenticator, the connected member sessions and the dead-man
timers. Member sessions and the operator API never touch the exchange: they hand the hub
work and await the result.

Decisions:

* **One queue, one task.** The engine is single-threaded, so every command from every
  session and from the operator API goes through one queue (:class:`WorkQueue`) drained by
  one task. The task takes what is queued (up to :data:`MAX_BATCH`), executes each job, then
  commits **once** for the batch (group commit: ``ExchangePort.commit`` makes the journal
  durable and hands the records it now covers to the projections). Only then does it drain
  the tracker's and the market data's outboxes, route the private messages to the sessions
  of the member(s) concerned and the public ones to subscribers (merged in stream order:
  per record, private before public), and resolve each caller's future with its job's
  result (an :class:`~exchange.model.stream.Applied` record for a command). So no
  acknowledgement leaves before its command is durable, and under load the fsync is paid
  once per batch, not per order.
* **The views see only durable records.** The engine delivers to its projections in its
  flush, never as it applies: a message about a command the journal could still lose is
  never built, let alone sent. The SQL stores follow the same stream in a worker thread.
* **Operator jobs are queued too.** Start and end of day, deposits, store reads: anything
  that touches the exchange runs inside the drain task, in order with the orders. A job is
  a function of the port.
* **Fair between members.** A member's commands wait in the member's own lane, in arrival
  order; a batch takes one command from each lane in turn (round-robin, the lane that gave
  last going to the back), so a member with 5,000 commands queued delays another member's
  order by one command, not by 5,000. Everything else (operator jobs, the hub's own
  commands: guards, cancel-on-disconnect, dead-man cancels) is a **barrier**: it runs after
  all work queued before it and before all work queued after it, as in a single FIFO. The
  members' order among themselves was never promised (their frames race on the network),
  only each member's own order, which the lanes keep.
* **Each member's waiting work is bounded** (``member_max_pending``, 4 x ``order_burst`` by
  default: see :mod:`exchange.gateway.member.budget`). A session command beyond it is not
  queued (:class:`MemberBusy`; the session answers error 14), except a mass cancel, which
  takes risk off and is one command however many orders it cancels.
* **Budgets per member live here**, so that neither more sessions nor reconnecting buys more:
  the member's frame bucket (:meth:`Hub.member_bucket`) and its error budget
  (:meth:`Hub.error_budget`, 20 refused frames a minute over all its sessions). Both run on
  the hub's monotonic clock (``monotonic_ns``; tests freeze it).
* **Settlement runs in a worker thread while the engine is paused.** Settlement posts to the
  registry and the cash ledger for a while (seconds on a big day), and the journal is not
  thread-safe, so nothing else may touch the exchange meanwhile. The drain task commits what
  came before, then awaits the settlement thread before it takes the next job: commands wait
  in the queue, but the event loop stays free for heartbeats, market data snapshots, logons
  and HTTP reads that do not touch the exchange. Members see a pause in acknowledgements,
  never a blocked socket.
* **A command that raises is a broken invariant** (so is a commit that fails). The engine
  has already journalled it; the hub fails the batch's callers, records the exception and
  stops (``fatal``), and the server shuts down: a restart replays the journal into the same
  assertion, which is a bug to fix, never input to skip.
* **Start-up costs the journal's tail, not the journal.** The views are snapshotted
  projections: the engine restores them from its newest snapshot and replays only the
  records after it (``Exchange.open(..., views=...)`` before the hub exists), so the hub
  starts with its views current. Their outboxes are opened when the hub is built: replayed
  records build state, never messages.
* **Client order ids in flight.** Between a session's submit and its record coming back, the
  order is not in the tracker yet; the hub keeps a pending set of (member, client order id)
  so two identical ids in flight cannot both pass the duplicate check.
* **Dead-man timers are per member**, kept by the hub, and keep running when the member's
  sessions drop: losing the connection is exactly what they are for.
* **Session guards are journalled** (:mod:`exchange.gateway.guards`). What protects a
  member's orders when its sessions go away (cancel-on-disconnect: any live session asked for
  it; the dead-man period while the timer is armed) lives in the hub's memory, so the hub also
  journals it (``SetSessionGuard``) whenever it changes: at a logon, when another session of
  the member closes, and when the member arms, re-arms with another period or disarms its
  timer (or the timer fires); only when it differs from the last guard journalled for the
  member, so a heartbeat or a re-arm with the same period journals nothing. The last session
  closing journals nothing (the cancel-on-disconnect above runs; the guard stays), and
  neither does a server shutdown.
* **Guards survive a restart.** At start-up (the same path as recovery after a crash) the hub
  reads the guards projection and, for each guarded member, arms a grace timer: for
  cancel-on-disconnect, ``cancel_on_disconnect_grace_s`` (30 s by default; ``exchange serve
  --cancel-on-disconnect-grace-s``), which the member's first logon cancels (its new session
  takes over the guard); for a dead-man period, the member's dead-man timer itself, re-armed
  for a full period as though the member had renewed it at the restart (a logon does not stop
  it, as before the crash; a ``cancel_after`` renews or disarms it). A grace that runs out
  while the member has open orders (per the tracker) sends one journalled ``MassCancel``.
* **Cancels say who cancelled.** The hub's ``MassCancel`` carries its reason
  (``CANCEL_ON_DISCONNECT`` for a last session's end, a logout and a grace run out;
  ``DEAD_MAN_TIMER`` for the timer), which the engine puts in every ``OrderCancelled``, so the
  member's execution reports tell these apart from its own cancels (``member``).
* **Sessions are seen through** :class:`MemberSession` (a Protocol): the hub never imports
  the WebSocket session, which imports the hub.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol
from collections.abc import Callable, Iterable

from exchange.config import Config
from exchange.gateway.guards import UNGUARDED, SessionGuards, effective_guard
from exchange.gateway.member.auth import Authenticator, CredentialStore
from exchange.gateway.member.budget import BudgetLimits, TokenBucket
from exchange.gateway.member.wire import MAX_ERRORS_PER_MINUTE, ErrorBudget, PrivateMessage, PublicMessage, encode
from exchange.gateway.port import ExchangePort
from exchange.gateway.views import GatewayViews
from exchange.model.commands import MassCancel, SetSessionGuard, SubmitOrder
from exchange.model.enums import CancelReason
from exchange.model.events import CommandRejected, Event, OrderCancelled, OrderRejected
from exchange.model.stream import Applied

log = logging.getLogger("exchange.gateway.hub")

MAX_BATCH = 1_000  # jobs per group commit
DEFAULT_CANCEL_ON_DISCONNECT_GRACE_S = 30.0  # after a restart, for a member to log back on

Job = Callable[[ExchangePort], Any]


class MemberSession(Protocol):
    """What the hub needs of a logged-on member connection."""

    member_id: str
    key_id: str
    cancel_on_disconnect: bool  # the logon's option
    subscriptions: set[str]

    def send_private(self, message: PrivateMessage, force: bool = False) -> None: ...

    def send_frame(self, frame: bytes) -> None: ...

    def close(self, reason: str, cancel_orders: bool = True) -> None: ...

    @property
    def outbound_depth(self) -> int: ...


@dataclass
class _Work:
    job: Job
    command: object  # the command, when the job is one engine command
    future: asyncio.Future
    blocking: bool = False  # run in a worker thread with the engine paused
    read_only: bool = False  # a failure is the caller's, not a broken invariant
    started_ns: int = field(default_factory=time.perf_counter_ns)
    member_id: str | None = None  # the lane it waits in (None: a barrier)


class HubStopped(Exception):
    """The hub takes no more work (shutting down, or stopped by a broken invariant)."""


class MemberBusy(Exception):
    """The member already has its maximum of commands waiting for the engine."""


Lanes = dict[str, deque[_Work]]  # member -> its waiting work, in arrival order; dict order is the turn


class WorkQueue:
    """Work waiting for the engine: members' lanes taken round-robin, barriers in order.

    The queue is a sequence of parts, each either one barrier job or one set of lanes; a
    member's work joins the set at the end (a new one after a barrier), so a barrier keeps its
    place in arrival order against everything, and members take turns between barriers."""

    def __init__(self) -> None:
        self._parts: deque[_Work | Lanes] = deque()
        self._waiting: dict[str, int] = {}  # member -> work in its lanes
        self._ready = asyncio.Event()
        self.size = 0

    def put(self, work: _Work) -> None:
        member_id = work.member_id
        if member_id is None:
            self._parts.append(work)
        else:
            lanes = self._parts[-1] if self._parts else None
            if not isinstance(lanes, dict):
                lanes = {}
                self._parts.append(lanes)
            lanes.setdefault(member_id, deque()).append(work)
            self._waiting[member_id] = self._waiting.get(member_id, 0) + 1
        self.size += 1
        self._ready.set()

    def waiting(self, member_id: str) -> int:
        """How many of the member's commands wait (not yet taken into a batch)."""
        return self._waiting.get(member_id, 0)

    async def take(self, limit: int) -> list[_Work]:
        """The next batch, at most ``limit`` jobs; waits for the first."""
        while not self.size:
            self._ready.clear()
            await self._ready.wait()
        batch: list[_Work] = []
        parts = self._parts
        while parts and len(batch) < limit:
            head = parts[0]
            if isinstance(head, dict):
                self._take_turns(head, batch, limit)
                if not head:
                    parts.popleft()
            else:
                parts.popleft()
                batch.append(head)
        self.size -= len(batch)
        return batch

    def _take_turns(self, lanes: Lanes, batch: list[_Work], limit: int) -> None:
        """One job from each lane in turn; the lane that gave goes to the back."""
        waiting = self._waiting
        while lanes and len(batch) < limit:
            member_id = next(iter(lanes))
            lane = lanes.pop(member_id)
            batch.append(lane.popleft())
            if lane:
                lanes[member_id] = lane
            left = waiting[member_id] - 1
            if left:
                waiting[member_id] = left
            else:
                del waiting[member_id]


class Hub:
    def __init__(
        self, service: ExchangePort, config: Config, credentials: CredentialStore, views: GatewayViews,
        max_connections_per_member: int = 4, max_outbound: int = 10_000,
        on_credentials_changed: Callable[[], None] | None = None,
        max_errors_per_minute: int = MAX_ERRORS_PER_MINUTE,
        cancel_on_disconnect_grace_s: float = DEFAULT_CANCEL_ON_DISCONNECT_GRACE_S,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        assert cancel_on_disconnect_grace_s >= 0, cancel_on_disconnect_grace_s
        self.service = service
        self.config = config
        self.credentials = credentials
        self.authenticator = Authenticator(credentials)
        self.views = views
        self.tracker = views.tracker
        self.market_data = views.market_data
        self.alerts = views.alerts
        self.metrics = views.metrics
        self.guards: SessionGuards = views.guards
        self.cancel_on_disconnect_grace_s = cancel_on_disconnect_grace_s
        self.max_connections_per_member = max_connections_per_member
        self.max_outbound = max_outbound
        self.max_errors_per_minute = max_errors_per_minute  # the protocol's 20; tests raise it
        self.budget_limits = BudgetLimits.of(config)
        self.monotonic_ns = monotonic_ns  # the budgets' clock
        self._member_buckets: dict[str, TokenBucket] = {}
        self._error_budgets: dict[str, ErrorBudget] = {}
        self.on_credentials_changed = on_credentials_changed
        self.symbols = sorted(item.symbol for item in config.listed_instruments())
        self.sessions: dict[str, list[MemberSession]] = {}  # member -> live sessions, oldest first
        self.subscribers: dict[str, list[MemberSession]] = {}  # instrument -> sessions
        self.fatal: BaseException | None = None
        self._pending: set[tuple[str, str]] = set()
        self._dead_man: dict[str, asyncio.TimerHandle] = {}
        self._dead_man_ms: dict[str, int] = {}  # member -> the armed timer's period
        self._grace: dict[str, asyncio.TimerHandle] = {}  # member -> its grace after a restart
        # member -> (cancel_on_disconnect, dead_man_ms) last journalled (queued, in order)
        self._journalled: dict[str, tuple[bool, int]] = {
            g.member_id: (g.cancel_on_disconnect, g.dead_man_ms) for g in self.guards}
        self._closing_all = False  # a shutdown: sessions closing change no guard
        self._queue = WorkQueue()
        self._task: asyncio.Task | None = None
        self._accepting = False
        self.stopped = asyncio.Event()  # stop() has finished
        self.failed = asyncio.Event()  # the drain task stopped on a broken invariant
        self.tracker.open_outbox()  # live from here: what the engine delivers now is routed
        self.market_data.open_outbox()
        self.metrics.outbound_depths = lambda: [s.outbound_depth for ss in self.sessions.values() for s in ss]
        self.metrics.queue_depth_of = lambda: self._queue.size

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start taking work (the views are already current: the engine recovered them)."""
        self._accepting = True
        self._task = asyncio.create_task(self._drain(), name="hub-drain")
        self._arm_recovered_guards()

    async def stop(self) -> None:
        """Take no more work, finish what is queued, commit."""
        self._accepting = False
        for handle in [*self._dead_man.values(), *self._grace.values()]:
            handle.cancel()
        self._dead_man.clear()
        self._dead_man_ms.clear()
        self._grace.clear()
        if self._task is not None and not self._task.done():
            self._queue.put(_Work(_stop_marker, None, asyncio.get_running_loop().create_future()))
            await asyncio.gather(self._task, return_exceptions=True)
        if self.fatal is None:
            self.service.commit()
            self._route()
        self.stopped.set()

    # -- submitting work ---------------------------------------------------------------------

    async def submit(self, command: Any) -> Applied:
        """Execute one engine command; its record, once durable."""
        return await self.enqueue(command)

    def enqueue(self, command: Any) -> asyncio.Future:
        """Queue one engine command now, as a barrier (see the module's decisions); the
        future gives its :class:`Applied` record once durable."""
        return self._enqueue_command(command, None)

    def enqueue_member(self, command: Any, member_id: str, bounded: bool = True) -> asyncio.Future:
        """Queue one of a member's commands in the member's lane (so a session's commands keep
        their order without waiting for each other). :class:`MemberBusy` when ``bounded`` and
        the member already has ``member_max_pending`` commands waiting."""
        if bounded and self._queue.waiting(member_id) >= self.budget_limits.member_max_pending:
            raise MemberBusy(member_id)
        return self._enqueue_command(command, member_id)

    def _enqueue_command(self, command: Any, member_id: str | None) -> asyncio.Future:
        if not self._accepting:
            raise HubStopped("the exchange is not taking commands")
        future = asyncio.get_running_loop().create_future()
        self._queue.put(_Work(lambda service: service.execute(command), command, future, member_id=member_id))
        return future

    async def run(self, job: Job) -> Any:
        """Run a job on the port inside the drain task, in order with every command; its
        result once everything it executed is durable."""
        return await self._enqueue(job, None)

    async def read(self, job: Job) -> Any:
        """Run a read of the exchange in order with the commands; its exceptions are the
        caller's (a store read failing is no broken invariant)."""
        return await self._enqueue(job, None, read_only=True)

    async def run_blocking(self, job: Job) -> Any:
        """Run a long job (settlement) in a worker thread while the engine is paused; its
        exceptions are the caller's (settlement stops are expected failures)."""
        return await self._enqueue(job, None, blocking=True)

    async def _enqueue(self, job: Job, command: object, blocking: bool = False, read_only: bool = False) -> Any:
        if not self._accepting:
            raise HubStopped("the exchange is not taking commands")
        future = asyncio.get_running_loop().create_future()
        self._queue.put(_Work(job, command, future, blocking, read_only))
        return await future

    # -- the drain task ----------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            batch = await self._queue.take(MAX_BATCH)
            if not await self._run_batch(batch):
                return

    async def _run_batch(self, batch: list[_Work]) -> bool:
        """Execute, commit once, route, answer. False when the hub must stop."""
        done: list[tuple[_Work, Any]] = []
        for work in batch:
            if work.job is _stop_marker:
                self._commit(done, batch)
                work.future.set_result(None)
                return False
            if work.blocking:  # acknowledge what came before: the engine pauses durable
                if not self._commit(done, batch, always=True):
                    return False
                done = []
            try:
                if work.blocking:
                    result = await asyncio.to_thread(work.job, self.service)
                else:
                    result = work.job(self.service)
            except Exception as error:  # noqa: BLE001 - sorted below
                if work.blocking or work.read_only:
                    done.append((work, error))
                    continue
                return self._die(error, batch)
            done.append((work, result))
        return self._commit(done, batch)

    def _commit(self, done: list[tuple[_Work, Any]], batch: list[_Work], always: bool = False) -> bool:
        """Group commit, then route the views' messages, then answer the callers."""
        if not done and not always:
            return True
        try:
            self.service.commit()  # durable before any acknowledgement
        except Exception as error:  # noqa: BLE001 - a journal or store that cannot write
            return self._die(error, batch)
        self._route()
        for work, result in done:
            if isinstance(work.command, SubmitOrder):
                self._pending.discard((work.command.member_id, work.command.client_order_id))
            if isinstance(result, BaseException):
                _settle_future(work.future, error=result)
            else:
                _settle_future(work.future, result=result)
        return True

    def _die(self, error: BaseException, batch: list[_Work]) -> bool:
        log.critical("a command broke an invariant; the exchange stops", exc_info=error)
        self.fatal = error
        self._accepting = False
        self.failed.set()
        for work in batch:
            _settle_future(work.future, error=HubStopped("the exchange stopped on an internal error"))
        return False

    # -- routing -------------------------------------------------------------------------------

    def _route(self) -> None:
        """Send what the views queued, in stream order (per record: private, then public)."""
        private = self.tracker.drain()
        public = self.market_data.drain()
        i, n = 0, len(private)
        for seq, instrument, message in public:
            while i < n and private[i][0] <= seq:
                _, member_id, private_message = private[i]
                self.send_private(member_id, private_message)
                i += 1
            self.send_public(instrument, message)
        while i < n:
            _, member_id, private_message = private[i]
            self.send_private(member_id, private_message)
            i += 1

    def send_private(self, member_id: str, message: PrivateMessage) -> None:
        for session in list(self.sessions.get(member_id, ())):
            session.send_private(message)

    def send_public(self, instrument: str, message: PublicMessage) -> None:
        subscribers = self.subscribers.get(instrument)
        if subscribers:
            frame = encode(message)
            for session in list(subscribers):
                session.send_frame(frame)

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

    # -- budgets per member --------------------------------------------------------------------

    def member_bucket(self, member_id: str) -> TokenBucket:
        """The member's frame bucket, shared by all its sessions and kept across reconnects."""
        bucket = self._member_buckets.get(member_id)
        if bucket is None:
            limits = self.budget_limits
            bucket = self._member_buckets[member_id] = TokenBucket(limits.member_per_second, limits.member_burst)
        return bucket

    def error_budget(self, member_id: str) -> ErrorBudget:
        """The member's budget of refused frames, over all its sessions and reconnects."""
        budget = self._error_budgets.get(member_id)
        if budget is None:
            budget = self._error_budgets[member_id] = ErrorBudget(self.max_errors_per_minute)
        return budget

    def waiting(self, member_id: str) -> int:
        """How many of the member's commands wait for the engine."""
        return self._queue.waiting(member_id)

    def orders_in_flight(self, member_id: str) -> bool:
        """The member may have orders the tracker does not show yet: commands waiting, or a
        new order taken but not yet durable (its client order id still pending)."""
        return self._queue.waiting(member_id) > 0 or any(member == member_id for member, _ in self._pending)

    # -- sessions ------------------------------------------------------------------------------

    def can_connect(self, member_id: str) -> bool:
        return len(self.sessions.get(member_id, ())) < self.max_connections_per_member

    def add_session(self, session: MemberSession) -> None:
        """A logged-on session; it ends the member's grace after a restart and takes over
        its guard (journalled if that changed)."""
        self.sessions.setdefault(session.member_id, []).append(session)
        self.metrics.connections += 1
        grace = self._grace.pop(session.member_id, None)
        if grace is not None:
            grace.cancel()
            log.info("%s logged back on within its grace period: its orders stay", session.member_id)
        self._journal_guard(session.member_id)

    def remove_session(self, session: MemberSession, cancel_orders: bool) -> None:
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
            if not self._closing_all:
                self._journal_guard(session.member_id)
            return
        del self.sessions[session.member_id]
        if cancel_orders and self._accepting and self.tracker.open_orders(session.member_id):
            self._cancel_all(session.member_id, CancelReason.CANCEL_ON_DISCONNECT, "cancel-on-disconnect")

    def subscribe(self, session: MemberSession, instrument: str) -> None:
        subscribers = self.subscribers.setdefault(instrument, [])
        if session not in subscribers:
            subscribers.append(session)
        session.subscriptions.add(instrument)

    def unsubscribe(self, session: MemberSession, instrument: str) -> None:
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
        """End every session (a shutdown: orders and guards stay as they are)."""
        self._closing_all = True
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                session.close(reason, cancel_orders=False)

    # -- dead-man timer ------------------------------------------------------------------------

    def arm_dead_man(self, member_id: str, seconds: int) -> None:
        """(Re)start the member's timer; 0 switches it off. A new period is journalled."""
        self._arm_dead_man_ms(member_id, seconds * 1_000)
        self._journal_guard(member_id)

    def _arm_dead_man_ms(self, member_id: str, period_ms: int) -> None:
        handle = self._dead_man.pop(member_id, None)
        if handle is not None:
            handle.cancel()
        self._dead_man_ms.pop(member_id, None)
        if period_ms > 0 and self._accepting:
            loop = asyncio.get_running_loop()
            self._dead_man[member_id] = loop.call_later(period_ms / 1_000, self._dead_man_fired, member_id)
            self._dead_man_ms[member_id] = period_ms

    def _dead_man_fired(self, member_id: str) -> None:
        self._dead_man.pop(member_id, None)
        self._dead_man_ms.pop(member_id, None)
        if not self._accepting:
            return
        # With a live session an order may be in flight, so cancel whatever the tracker says.
        if self.sessions.get(member_id) or self.tracker.open_orders(member_id):
            self._cancel_all(member_id, CancelReason.DEAD_MAN_TIMER, "dead-man timer")
        self._journal_guard(member_id)  # the timer is off now

    # -- session guards ------------------------------------------------------------------------

    def guard_of(self, member_id: str) -> tuple[bool, int]:
        """The member's effective guard now: (cancel-on-disconnect, dead-man period in ms)."""
        return effective_guard(
            (s.cancel_on_disconnect for s in self.sessions.get(member_id, ())),
            self._dead_man_ms.get(member_id, 0), self._journalled.get(member_id, UNGUARDED))

    def _journal_guard(self, member_id: str) -> None:
        """Queue a ``SetSessionGuard`` if the member's guard differs from the last journalled."""
        guard = self.guard_of(member_id)
        if guard == self._journalled.get(member_id, UNGUARDED) or not self._accepting:
            return
        self._journalled[member_id] = guard
        future = self.enqueue(SetSessionGuard(member_id, *guard))
        future.add_done_callback(lambda done: self._guard_journalled(done, member_id, guard))

    def _guard_journalled(self, future: asyncio.Future, member_id: str, guard: tuple[bool, int]) -> None:
        """A guard the engine refused (or never took) is not journalled after all."""
        failed = future.cancelled() or future.exception() is not None
        if not failed and rejected(future.result().events) is None:
            return
        if self._journalled.get(member_id) == guard:
            kept = self.guards.get(member_id)
            if kept is None:
                self._journalled.pop(member_id, None)
            else:
                self._journalled[member_id] = (kept.cancel_on_disconnect, kept.dead_man_ms)

    def _arm_recovered_guards(self) -> None:
        """After recovery: a grace timer per guarded member (see the module's decisions)."""
        loop = asyncio.get_running_loop()
        for guard in self.guards.guarded():
            member_id = guard.member_id
            if guard.cancel_on_disconnect and member_id not in self._grace:
                self._grace[member_id] = loop.call_later(
                    self.cancel_on_disconnect_grace_s, self._grace_expired, member_id)
            if guard.dead_man_ms > 0 and member_id not in self._dead_man:
                self._arm_dead_man_ms(member_id, guard.dead_man_ms)
        if self._grace or self._dead_man:
            log.info("guards recovered: %d member(s) with cancel-on-disconnect (grace %.1f s), %d with a dead-man timer",
                     len(self._grace), self.cancel_on_disconnect_grace_s, len(self._dead_man))

    def _grace_expired(self, member_id: str) -> None:
        self._grace.pop(member_id, None)
        if self._accepting and not self.sessions.get(member_id) and self.tracker.open_orders(member_id):
            self._cancel_all(member_id, CancelReason.CANCEL_ON_DISCONNECT, "cancel-on-disconnect: not back within the grace period after a restart")

    def grace_pending(self, member_id: str) -> bool:
        """The member's grace after a restart is still running."""
        return member_id in self._grace

    def dead_man_ms(self, member_id: str) -> int:
        """The member's armed dead-man period (0: none)."""
        return self._dead_man_ms.get(member_id, 0)

    def _cancel_all(self, member_id: str, reason: CancelReason, why: str) -> None:
        """Queue one ``MassCancel`` for the member now (in order with what is queued); its
        ``reason`` is what the member's execution reports give as ``cancel_reason``."""
        try:
            future = self.enqueue(MassCancel(member_id, None, reason))
        except HubStopped:
            return

        def done(future: asyncio.Future) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            cancelled = sum(1 for event in future.result().events if isinstance(event, OrderCancelled))
            log.info("%s: cancelled %d of %s's orders", why, cancelled, member_id)

        future.add_done_callback(done)

    # -- queries -------------------------------------------------------------------------------

    @property
    def trading_day(self) -> str:
        """The trading day as the gateway knows it (the tracker's, else the engine's)."""
        return self.tracker.trading_day or self.service.trading_day

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


def _stop_marker(service: ExchangePort) -> None:  # pragma: no cover - never called
    return None


def _settle_future(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def events_of(records: Iterable[Applied]) -> list[Event]:
    """The events of several records, in order."""
    return [event for applied in records for event in applied.events]


def rejected(events: Iterable[Event]) -> CommandRejected | OrderRejected | None:
    """The first reject among a command's events, if any."""
    for event in events:
        if isinstance(event, (CommandRejected, OrderRejected)):
            return event
    return None
