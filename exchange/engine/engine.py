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

Event sinks. The shell's stores (trades, the cash ledger's mirror) follow the journal as an
:class:`EventSink` handed to the engine: it receives every command's events as they are
applied, and again on recovery for the commands replayed after the snapshot. The engine
flushes the sink before it writes a snapshot, so whatever a snapshot covers is already in
the stores and a recovery that starts from it loses nothing; a sink must skip what it has
already stored, because recovery may hand it the same events twice.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Iterator, Protocol

import msgspec

from exchange.engine.core import ExchangeCore, decode_state, encode_state
from exchange.engine.journal import Journal
from exchange.engine.snapshot import Snapshot, latest_snapshot, prune_snapshots, write_snapshot
from exchange.model.commands import Command, EndDay

Clock = Callable[[], int]
"""Nanoseconds since the epoch; injected so that tests and simulations are reproducible."""



class EventSink(Protocol):
    def __call__(self, seq: int, ts_ns: int, events: list) -> None:
        """One applied command's events."""

    def flush(self) -> None:
        """Make durable everything handed over so far (called before each snapshot)."""

    def resume(self, core: ExchangeCore) -> None:
        """Recovery loaded a snapshot into ``core``; the journal's tail follows."""


_command_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_event_encoder = msgspec.msgpack.Encoder()


def encode_command(command: Command) -> bytes:
    return _command_encoder.encode(command)


def decode_command(payload: bytes) -> Command:
    return _command_decoder.decode(payload)


def encode_events(seq: int, ts_ns: int, events: list) -> bytes:
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
        sink: EventSink | None = None,
    ) -> None:
        assert core.last_seq == journal.last_seq, "the core must be recovered from this journal"
        self.core = core
        self.sink = sink
        self.journal = journal
        self.clock = clock
        self.snapshot_dir = snapshot_dir
        self.snapshot_every = snapshot_every
        self.snapshots_kept = snapshots_kept
        self.gc_freeze_every = gc_freeze_every
        self.last_ts_ns = 0
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

    def execute(self, command: Command) -> list:
        """Journal, then apply one command; return its events."""
        seq = self.core.last_seq + 1
        ts_ns = self.clock()
        if ts_ns < self.last_ts_ns:  # the journal's time never runs backwards
            ts_ns = self.last_ts_ns
        self.last_ts_ns = ts_ns
        self.journal.append(seq, ts_ns, _command_encoder.encode(command))
        events = self.core.apply(seq, ts_ns, command)
        if self.sink is not None:
            self.sink(seq, ts_ns, events)
        if seq >= self._next_housekeeping_seq:
            self._housekeeping(seq)
        if type(command) is EndDay:
            self._collect_after_close()
        return events

    def snapshot(self) -> Path:
        """Write the core's state at the current sequence number (journal flushed first)."""
        assert self.snapshot_dir is not None
        self.journal.flush()
        if self.sink is not None:
            self.sink.flush()
        snap = Snapshot(self.core.last_seq, self.journal.chain_hash, encode_state(self.core.state()))
        path = write_snapshot(self.snapshot_dir, snap)
        prune_snapshots(self.snapshot_dir, self.snapshots_kept)
        self._schedule_snapshot()
        return path

    def flush(self) -> None:
        self.journal.flush()

    def close(self) -> None:
        self.journal.close()

    @classmethod
    def recover(
        cls,
        core: ExchangeCore,
        journal: Journal,
        clock: Clock,
        snapshot_dir: Path | None = None,
        on_events: Callable[[int, int, list], None] | None = None,
        sink: EventSink | None = None,
        **options: int,
    ) -> "Engine":
        """Rebuild ``core`` from the newest snapshot and the journal's tail, then open for
        business. ``on_events`` receives the replayed events, as live trading would; a
        ``sink`` receives them too, and then every live command's events."""
        # A snapshot ahead of the journal (the OS lost journal pages it had not synced) is
        # passed over for an older one; the journal is the truth.
        snap = latest_snapshot(snapshot_dir, at_most_seq=journal.last_seq) if snapshot_dir is not None else None
        records = journal.records()
        if snap is not None:
            core.restore(decode_state(snap.state))
            records = journal.records(after_seq=snap.seq, expect_chain=snap.chain_hash)
            if sink is not None:
                sink.resume(core)
        last_ts_ns = 0
        for seq, ts_ns, events in replay(core, records):
            last_ts_ns = ts_ns
            if on_events is not None:
                on_events(seq, ts_ns, events)
            if sink is not None:
                sink(seq, ts_ns, events)
        if sink is not None:
            sink.flush()
        engine = cls(core, journal, clock, snapshot_dir, sink=sink, **options)
        engine.last_ts_ns = last_ts_ns
        return engine


def replay(core: ExchangeCore, records: Iterator) -> Iterator[tuple[int, int, list]]:
    """Apply journal records to ``core`` in order, yielding each command's events."""
    for record in records:
        yield record.seq, record.ts_ns, core.apply(record.seq, record.ts_ns, _command_decoder.decode(record.payload))
