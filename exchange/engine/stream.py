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

from exchange.model.stream import Applied, Projection, SnapshottedProjection

__all__ = ["Applied", "Projection", "ProjectionFailed", "ProjectionGroup", "ProjectionWorker", "SnapshottedProjection"]

log = logging.getLogger(__name__)


class ProjectionFailed(Exception):
    """A projection's worker stopped on an error; the stream stops until a restart."""


class ProjectionWorker:
    """Runs a durable projection in its own thread, so its SQL never blocks the caller.

    ``apply`` queues the record and returns at once; the thread applies records in order and
    flushes the projection whenever the queue runs dry (so its writes batch themselves under
    load). ``flush`` waits until everything queued is applied and flushed. An error in the
    thread stops the worker: the next ``apply`` or ``flush`` raises :class:`ProjectionFailed`
    naming it, and a restart catches the store up from its own ``last_seq``.
    """

    def __init__(self, projection: Projection, max_queued: int = 100_000) -> None:
        self.projection = projection
        self.name = projection.name
        self._queue: queue.Queue[Applied | None] = queue.Queue(max_queued)
        self._failure: BaseException | None = None
        self._idle = threading.Condition()
        self._unfinished = 0
        self._thread = threading.Thread(target=self._run, name=f"projection-{self.name}", daemon=True)
        self._thread.start()

    @property
    def last_seq(self) -> int:
        return self.projection.last_seq

    def apply(self, applied: Applied) -> None:
        self._raise_failure()
        with self._idle:
            self._unfinished += 1
        self._queue.put(applied)

    def flush(self) -> None:
        with self._idle:
            while self._unfinished and self._failure is None:
                self._idle.wait()
        self._raise_failure()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise ProjectionFailed(f"projection {self.name!r} stopped: {self._failure!r}") from self._failure

    def _run(self) -> None:
        while True:
            applied = self._queue.get()
            if applied is None:
                return
            try:
                self.projection.apply(applied)
                done = 1
                while True:  # take whatever else is queued before paying for a commit
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)
                        break
                    self.projection.apply(more)
                    done += 1
                self.projection.flush()
            except BaseException as error:  # noqa: BLE001 - reported to every caller
                log.critical("projection %s stopped", self.name, exc_info=error)
                with self._idle:
                    self._failure = error
                    self._idle.notify_all()
                return
            with self._idle:
                self._unfinished -= done
                self._idle.notify_all()


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

    def apply(self, applied: Applied) -> None:
        for projection in self.projections:
            if projection.last_seq < applied.seq:
                projection.apply(applied)

    def flush(self) -> None:
        for projection in self.projections:
            projection.flush()
