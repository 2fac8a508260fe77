"""The one event stream: a record per command, and the projections that follow it.

The engine hands out one :class:`Applied` record per command: its sequence number, its time,
the trading day it was applied in, the command itself and the events it caused. Everything
that reacts to events is a **projection** of that stream with its own position
(``last_seq``): the gateway's order tracker and market data, the trade store, the funds
mirror, and later rooms' stores (surveillance, reports).

Two rules make the stores honest:

* **A projection sees only durable records.** The engine delivers records to its
  projections when the journal is flushed (:meth:`Engine.flush`), never as they are applied;
  so no store can ever hold what the journal does not, whatever moment a crash picks.
* **Each projection catches up from its own position.** A *durable* projection (one that
  writes to SQL) keeps ``last_seq`` in its store, committed with its rows. A *snapshotted*
  projection (one that lives in memory, such as the order tracker) puts its state in the
  engine's snapshots beside the core's. Recovery restores the core and the snapshotted
  projections from one snapshot and replays the journal from the lowest position any
  projection needs, handing each record only to the projections that have not seen it.

SQL projections run off the engine's path in a :class:`ProjectionWorker` thread, so a flush
of 10,000 trades never stalls the event loop; ``flush()`` on the worker waits until it has
caught up (settlement and reads of the stores call it first).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from exchange.model.stream import Applied, Projection, SnapshottedProjection

__all__ = ["Applied", "Projection", "ProjectionFailed", "ProjectionGroup", "ProjectionWorker", "SnapshottedProjection"]

log = logging.getLogger(__name__)


class ProjectionFailed(Exception):
    """A projection's worker stopped on an error; the stream stops until a restart."""


_STOP = object()  # the worker's last queue item


class ProjectionWorker:
    """Runs a durable projection in its own thread, so its SQL never blocks the caller.

    ``apply`` queues the record and returns at once; the thread applies records in order. It
    commits (the projection's ``flush``) at most every ``commit_interval_s`` while records
    keep coming, and whenever someone asks: ``flush`` queues a marker and waits until the
    thread has applied everything before it and committed. Committing each time the queue ran
    dry cost a SQLite transaction per group commit of the gateway, about a third more server
    CPU per order; once every quarter of a second costs nothing measurable, and a crash loses
    nothing the journal has (the store catches up from its ``last_seq``).

    An error in the thread stops the worker: the next ``apply`` or ``flush`` raises
    :class:`ProjectionFailed` naming it, and a restart catches the store up from its own
    ``last_seq``.
    """

    def __init__(
        self, projection: Projection, monotonic_ns: Callable[[], int], commit_interval_ms: int = 250,
        max_queued: int = 100_000,
    ) -> None:
        """``monotonic_ns`` is the shell's clock (the engine's room reads none of its own)."""
        self.projection = projection
        self.name = projection.name
        self.monotonic_ns = monotonic_ns
        self.commit_interval_ns = commit_interval_ms * 1_000_000
        self._queue: queue.Queue[object] = queue.Queue(max_queued)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"projection-{self.name}", daemon=True)
        self._thread.start()

    @property
    def last_seq(self) -> int:
        return self.projection.last_seq

    def parts(self) -> list[Projection]:
        """The projection it runs, or that projection's own parts."""
        return parts_of(self.projection)

    def apply(self, applied: Applied) -> None:
        self._raise_failure()
        self._queue.put(applied)

    def flush(self) -> None:
        """Wait until everything queued so far is applied and committed."""
        self._raise_failure()
        done = threading.Event()
        self._queue.put(done)
        done.wait()  # set by the thread once committed, or when it stops on an error
        self._raise_failure()

    def close(self) -> None:
        """Finish what is queued, commit, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise ProjectionFailed(f"projection {self.name!r} stopped: {self._failure!r}") from self._failure

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # noqa: BLE001 - reported to every caller
            log.critical("projection %s stopped", self.name, exc_info=error)
            self._failure = error
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        """After a failure: release every flush() waiting on a marker, now and later."""
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
            elif item is _STOP:
                return

    def _loop(self) -> None:
        dirty = False
        due_ns = 0
        while True:
            try:
                wait_ns = max(0, due_ns - self.monotonic_ns()) if dirty else None
                item = self._queue.get(timeout=None if wait_ns is None else wait_ns / 1_000_000_000)
            except queue.Empty:
                item = None  # the interval passed with records uncommitted
            if type(item) is Applied:
                self.projection.apply(item)
                if not dirty:
                    dirty, due_ns = True, self.monotonic_ns() + self.commit_interval_ns
                if self.monotonic_ns() < due_ns:
                    continue
            if dirty:
                self.projection.flush()
                dirty = False
            if isinstance(item, threading.Event):
                item.set()
            elif item is _STOP:
                return


class ProjectionGroup:
    """Several durable projections that share a store, applied in one worker one after the
    other (two SQLite writers on one file would only wait for each other). Each keeps its own
    position; the group's is the lowest, and a record goes to each member still behind it."""

    def __init__(self, name: str, projections: list[Projection]) -> None:
        self.name = name
        self.projections = projections

    @property
    def last_seq(self) -> int:
        return min(p.last_seq for p in self.projections)

    def parts(self) -> list[Projection]:
        """The member projections, each with its own position (recovery checks each)."""
        return list(self.projections)

    def apply(self, applied: Applied) -> None:
        for projection in self.projections:
            if projection.last_seq < applied.seq:
                projection.apply(applied)

    def flush(self) -> None:
        for projection in self.projections:
            projection.flush()


def parts_of(projection: Projection) -> list[Projection]:
    """The projections with their own positions inside ``projection`` (itself, when it is no
    worker or group): a group's position is its lowest member's, so only its members can show
    one that is ahead of the journal."""
    parts = getattr(projection, "parts", None)
    return parts() if parts is not None else [projection]
