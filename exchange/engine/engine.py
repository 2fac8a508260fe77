"""The engine: the only door into the core.

For each command it stamps a gap-free sequence number and the time from an injected clock,
appends the command to the journal *before* applying it (there is no rollback: the core
validates before it mutates), applies it and returns the events.

Start-up and crash recovery are one path, :meth:`Engine.recover`: load the newest valid
snapshot, then replay the journal's tail through the same ``apply``. Replaying gives the same
state and the same events, byte for byte, because the core is deterministic and the journal
holds the stamped commands.

Durability. ``append`` only buffers; with batched fsync up to ``fsync_batch_records``
applied commands live only in memory until ``flush()``. Whoever tells the outside world
(the gateway's acknowledgements) must do so only after a flush: group commit per batch of
input. And a command that breaks an invariant inside ``apply`` is already journalled, so a
restart replays it into the same assertion: that is a bug to fix before restarting, never
input to skip. Expected failures never raise; they are reject events.

The garbage collector. With a million resting orders a full collection walks every order in
every level's queue (30-40 ms here), which no trading latency can afford. The core creates no
reference cycles (a test proves it), so the engine moves what has lived through
``gc_freeze_every`` commands out of the collector's sight with ``gc.freeze()``, which is
O(1); young-generation collections stay small. At the end of the trading day, outside
trading hours, it unfreezes and collects once, so cycles made by the shell (asyncio, say) are
reclaimed daily. ``gc_freeze_every=None`` leaves the collector alone.

The event stream. ``execute`` returns one :class:`~exchange.engine.stream.Applied` record
per command. The engine keeps the records it has applied but not yet flushed, and hands them
to its projections (:mod:`exchange.engine.stream`) only once ``flush`` has made the journal
durable up to them: a projection never sees, and so no store ever holds, a command the journal
could still lose. When the journal commits a batch by itself (its ``batch_records``), the
records it covers are delivered at once, so an engine nobody flushes holds at most one batch of
records (holding a whole day of them would make every collection of the garbage collector
walk them).

Snapshots hold the core's state and the state of every snapshotted (in-memory) projection,
all as of one sequence number; the engine flushes before it writes one, so every durable
projection has stored what the snapshot covers, too. Recovery (:meth:`Engine.recover`) picks
the newest snapshot that is not ahead of the journal, not ahead of any durable projection, and
holds every snapshotted projection's state; it replays the journal from there, handing each
record to the projections whose position is behind it. A durable projection ahead of the
journal (a store holding what the journal lost, which the delivery rule makes impossible
short of an OS crash with ``fsync = "never"``) stops recovery with :class:`ProjectionAhead`
naming the store and both positions: it is refused, never skipped silently.
"""

from __future__ import annotations

import gc
from pathlib import Path
import logging
from collections.abc import Callable, Iterator, Sequence

import msgspec

from exchange.engine.core import ExchangeCore, decode_state, encode_state
from exchange.engine.journal import Journal, JournalRecord
from exchange.engine.snapshot import Snapshot, list_snapshots, prune_snapshots, write_snapshot
from exchange.engine.stream import parts_of
from exchange.model.stream import Applied, Projection, SnapshottedProjection
from exchange.model.commands import Command, EndDay
from exchange.model.events import Event

log = logging.getLogger(__name__)

Clock = Callable[[], int]
"""Nanoseconds since the epoch; injected so that tests and simulations are reproducible."""


class ProjectionAhead(Exception):
    """A durable projection holds records the journal does not: recovery refuses to start."""

    def __init__(self, name: str, projection_seq: int, journal_seq: int) -> None:
        super().__init__(
            f"the {name} store has applied up to journal sequence {projection_seq}, but the journal "
            f"ends at {journal_seq}: the store holds commands the journal lost; restore the journal "
            "or rebuild the store from it"
        )
        self.name, self.projection_seq, self.journal_seq = name, projection_seq, journal_seq


class SnapshotBody(msgspec.Struct, array_like=True):
    """What a snapshot file's state bytes hold: the core's state and each snapshotted
    projection's, by name, sorted."""

    core: bytes
    views: list[tuple[str, bytes]]


_command_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_event_encoder = msgspec.msgpack.Encoder()


def encode_command(command: Command) -> bytes:
    return _command_encoder.encode(command)


def decode_command(payload: bytes) -> Command:
    return _command_decoder.decode(payload)


_body_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(SnapshotBody)


def encode_events(seq: int, ts_ns: int, events: list[Event]) -> bytes:
    """The canonical bytes of one command's events, for comparing event streams."""
    return _event_encoder.encode((seq, ts_ns, events))


class Engine:
    def __init__(
        self,
        core: ExchangeCore,
        journal: Journal,
        clock: Clock,
        snapshot_dir: Path | None = None,
        snapshot_every: int = 1_000_000,
        snapshots_kept: int = 3,
        gc_freeze_every: int | None = None,
        projections: Sequence[Projection] = (),
    ) -> None:
        assert core.last_seq == journal.last_seq, "the core must be recovered from this journal"
        assert len({p.name for p in projections}) == len(projections), "projection names must be unique"
        self.core = core
        self.journal = journal
        self.clock = clock
        self.projections = list(projections)
        self.snapshot_dir = snapshot_dir
        self.snapshot_every = snapshot_every
        self.snapshots_kept = snapshots_kept
        self.gc_freeze_every = gc_freeze_every
        self.last_ts_ns = 0
        self._undelivered: list[Applied] = []
        self._next_snapshot_seq = self._next_freeze_seq = self._next_housekeeping_seq = 0
        self._schedule_snapshot()
        self._schedule_freeze()

    def _schedule_snapshot(self) -> None:
        every = self.snapshot_every if self.snapshot_dir is not None else 2**63
        self._next_snapshot_seq = self.core.last_seq + every
        self._next_housekeeping_seq = min(self._next_snapshot_seq, self._next_freeze_seq)

    def _schedule_freeze(self) -> None:
        every = self.gc_freeze_every if self.gc_freeze_every is not None else 2**63
        self._next_freeze_seq = self.core.last_seq + every
        self._next_housekeeping_seq = min(self._next_snapshot_seq, self._next_freeze_seq)

    def _housekeeping(self, seq: int) -> None:
        if seq >= self._next_snapshot_seq:
            self.snapshot()
        if seq >= self._next_freeze_seq:
            gc.freeze()
            self._schedule_freeze()

    def _collect_after_close(self) -> None:
        if self.gc_freeze_every is not None:
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    @property
    def last_seq(self) -> int:
        return self.core.last_seq

    def execute(self, command: Command) -> Applied:
        """Journal, then apply one command; its record (delivered to the projections at the
        next :meth:`flush`)."""
        core = self.core
        seq = core.last_seq + 1
        ts_ns = self.clock()
        if ts_ns < self.last_ts_ns:  # the journal's time never runs backwards
            ts_ns = self.last_ts_ns
        self.last_ts_ns = ts_ns
        durable = self.journal.append(seq, ts_ns, _command_encoder.encode(command))
        events = core.apply(seq, ts_ns, command)  # first: the record takes the day it leaves
        applied = Applied(seq, ts_ns, core.trading_day, command, events)
        if self.projections:  # with none, holding the records would only keep them alive (~4 %)
            self._undelivered.append(applied)
            if durable:  # the journal committed a batch by itself
                self._deliver()
        if seq >= self._next_housekeeping_seq:
            self._housekeeping(seq)
        if type(command) is EndDay:
            self._collect_after_close()
        return applied

    def flush(self) -> list[Applied]:
        """Make the journal durable, then hand the records it now covers to every projection;
        return the records this call delivered (records the journal made durable by itself,
        when a batch filled, were delivered as it did so)."""
        self.journal.flush()
        return self._deliver()

    def _deliver(self) -> list[Applied]:
        delivered, self._undelivered = self._undelivered, []
        for projection in self.projections:
            apply = projection.apply
            for applied in delivered:
                apply(applied)
        return delivered

    def flush_projections(self) -> None:
        """Flush the journal, deliver, and wait until every projection has stored it all."""
        self.flush()
        for projection in self.projections:
            projection.flush()

    def snapshot(self) -> Path:
        """Write the core's and the snapshotted projections' state at the current sequence
        number (the journal and every projection flushed first)."""
        assert self.snapshot_dir is not None
        self.flush_projections()
        views = sorted(
            (p.name, p.snapshot_state()) for p in self.projections if isinstance(p, SnapshottedProjection)
        )
        body = _body_encoder.encode(SnapshotBody(encode_state(self.core.state()), views))
        path = write_snapshot(self.snapshot_dir, Snapshot(self.core.last_seq, self.journal.chain_hash, body))
        prune_snapshots(self.snapshot_dir, self.snapshots_kept)
        self._schedule_snapshot()
        return path

    def close(self) -> None:
        self.flush_projections()
        self.journal.close()

    @classmethod
    def recover(
        cls,
        core: ExchangeCore,
        journal: Journal,
        clock: Clock,
        snapshot_dir: Path | None = None,
        projections: Sequence[Projection] = (),
        snapshot_every: int = 1_000_000,
        snapshots_kept: int = 3,
        gc_freeze_every: int | None = None,
    ) -> Engine:
        """Rebuild ``core`` and the projections from a snapshot and the journal, then open for
        business (see the module docstring for which snapshot and which records). The
        options are the constructor's."""
        durable = [p for p in projections if not isinstance(p, SnapshottedProjection)]
        for part in (part for projection in durable for part in parts_of(projection)):
            if part.last_seq > journal.last_seq:
                raise ProjectionAhead(part.name, part.last_seq, journal.last_seq)
        needed = min((p.last_seq for p in durable), default=journal.last_seq)
        views = {p.name: p for p in projections if isinstance(p, SnapshottedProjection)}
        snap, body = _usable_snapshot(snapshot_dir, min(needed, journal.last_seq), sorted(views))
        records: Iterator[JournalRecord] = journal.records()
        if snap is not None and body is not None:
            core.restore(decode_state(body.core))
            for name, data in body.views:
                if name in views:
                    views[name].restore_state(data, snap.seq)
            records = journal.records(after_seq=snap.seq, expect_chain=snap.chain_hash)
        last_ts_ns = 0
        for applied in replay_applied(core, records):
            last_ts_ns = applied.ts_ns
            for projection in projections:
                if projection.last_seq < applied.seq:
                    projection.apply(applied)
        for projection in projections:
            projection.flush()
        engine = cls(
            core, journal, clock, snapshot_dir, snapshot_every, snapshots_kept, gc_freeze_every, projections,
        )
        engine.last_ts_ns = last_ts_ns
        return engine


def _usable_snapshot(
    snapshot_dir: Path | None, at_most_seq: int, view_names: list[str]
) -> tuple[Snapshot | None, SnapshotBody | None]:
    """The newest snapshot that verifies, is not past ``at_most_seq`` and holds every named
    view's state. A snapshot ahead of the journal (the OS lost journal pages it had not
    synced) is passed over for an older one: the journal is the truth."""
    if snapshot_dir is None:
        return None, None
    for path, found in reversed(list_snapshots(snapshot_dir)):
        if not isinstance(found, Snapshot):
            log.warning("skipping a damaged snapshot: %s", found)
            continue
        if found.seq > at_most_seq:
            continue
        body = _body_decoder.decode(found.state)
        if all(name in dict(body.views) for name in view_names):
            return found, body
        log.info("snapshot %s lacks a projection's state; trying an older one", path.name)
    return None, None


def replay_applied(core: ExchangeCore, records: Iterator[JournalRecord]) -> Iterator[Applied]:
    """Apply journal records to ``core`` in order, yielding each command's record."""
    for record in records:
        command = _command_decoder.decode(record.payload)
        events = core.apply(record.seq, record.ts_ns, command)
        yield Applied(record.seq, record.ts_ns, core.trading_day, command, events)


def replay(core: ExchangeCore, records: Iterator[JournalRecord]) -> Iterator[tuple[int, int, list[Event]]]:
    """Apply journal records to ``core`` in order, yielding each command's events."""
    apply, decode = core.apply, _command_decoder.decode
    for record in records:
        yield record.seq, record.ts_ns, apply(record.seq, record.ts_ns, decode(record.payload))
