"""The engine: gap-free stamping, journal first, replay identical under any hash seed,
snapshots at random points, damaged journals refused, torn tails cut."""

from __future__ import annotations

import gc
import hashlib
import os
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from exchange.config import Config
from exchange.engine import (
    Engine,
    ExchangeCore,
    FileJournal,
    FsyncPolicy,
    JournalCorrupted,
    MemoryJournal,
    decode_command,
    decode_state,
    encode_events,
    encode_state,
)
from exchange.engine.engine import replay
from exchange.model import CancelOrder, Side, StartDay, SubmitOrder
from exchange.sim.in_process import SimulatedClock, Simulation

ROOT = Path(__file__).resolve().parent.parent


class StepClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


def new_core() -> ExchangeCore:
    config = Config()
    return ExchangeCore(config.listed_instruments(), config.market.stp)


class Recorder:
    """Keeps each command's events as canonical bytes."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []

    def __call__(self, seq: int, ts_ns: int, events: list) -> None:
        self.batches.append(encode_events(seq, ts_ns, events))


class RecordingEngine(Engine):
    def __init__(self, *args, recorder: Recorder, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder

    def execute(self, command):
        applied = super().execute(command)
        self.recorder(applied.seq, applied.ts_ns, applied.events)
        return applied


class RecordingProjection:
    """A durable-looking projection that keeps what it was handed, from ``last_seq`` on."""

    name = "recorder"

    def __init__(self, last_seq: int = 0) -> None:
        self.last_seq = last_seq
        self.recorder = Recorder()

    def apply(self, applied) -> None:
        assert applied.seq == self.last_seq + 1
        self.last_seq = applied.seq
        self.recorder(applied.seq, applied.ts_ns, applied.events)

    def flush(self) -> None:
        pass


def simulate(journal, commands: int = 3_000, seed: int = 7, days: int = 2) -> tuple[Engine, Recorder]:
    recorder = Recorder()
    engine = RecordingEngine(new_core(), journal, SimulatedClock(), recorder=recorder)
    Simulation(engine, seed, members=12, start_day=date(2026, 11, 23)).run(days, commands)
    engine.flush()
    return engine, recorder


def test_sequence_is_gap_free_and_time_never_runs_backwards() -> None:
    times = iter([50, 40, 60])
    journal = MemoryJournal()
    engine = Engine(new_core(), journal, clock=lambda: next(times))
    engine.execute(StartDay("2026-11-23"))
    engine.execute(SubmitOrder("m1", "CEA-2025", Side.BUY, 10, 5_800))
    engine.execute(CancelOrder("m1", "CEA-2025", 2))
    records = list(journal.records())
    assert [r.seq for r in records] == [1, 2, 3]
    assert [r.ts_ns for r in records] == [50, 50, 60]
    assert decode_command(records[1].payload) == SubmitOrder("m1", "CEA-2025", Side.BUY, 10, 5_800)


def test_the_command_is_journalled_before_it_is_applied() -> None:
    class ExplodingCore(ExchangeCore):
        def apply(self, seq, ts_ns, command):
            raise AssertionError("invariant broken")

    journal = MemoryJournal()
    engine = Engine(ExplodingCore(Config().listed_instruments()), journal, clock=lambda: 1)
    with pytest.raises(AssertionError):
        engine.execute(StartDay("2026-11-23"))
    assert journal.last_seq == 1


def test_replay_rebuilds_the_same_state_and_events() -> None:
    engine, recorder = simulate(MemoryJournal())
    replayed = Recorder()
    core = new_core()
    for seq, ts_ns, events in replay(core, engine.journal.records()):
        replayed(seq, ts_ns, events)
    assert replayed.batches == recorder.batches
    assert core.state_hash() == engine.core.state_hash()


REPLAY_SCRIPT = """
import hashlib, sys
from exchange.config import Config
from exchange.engine import ExchangeCore, FileJournal, encode_events
from exchange.engine.engine import replay
config = Config()
core = ExchangeCore(config.listed_instruments(), config.market.stp)
journal = FileJournal(sys.argv[1])
digest = hashlib.sha256()
for seq, ts_ns, events in replay(core, journal.records()):
    digest.update(encode_events(seq, ts_ns, events))
print(digest.hexdigest(), core.state_hash())
"""


def test_replay_is_byte_identical_under_two_hash_seeds(tmp_path: Path) -> None:
    path = tmp_path / "commands.journal"
    engine, recorder = simulate(FileJournal(path, fsync=FsyncPolicy.NEVER))
    engine.close()
    expected = f"{hashlib.sha256(b''.join(recorder.batches)).hexdigest()} {engine.core.state_hash()}"
    outputs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", REPLAY_SCRIPT, str(path)], env=env, capture_output=True, text=True, check=True)
        outputs.append(done.stdout.strip())
    assert outputs == [expected, expected]


def test_snapshot_at_random_points_then_replay_the_tail() -> None:
    engine, recorder = simulate(MemoryJournal(), commands=2_000)
    records = list(engine.journal.records())
    rnd = random.Random(11)
    for cut in sorted(rnd.sample(range(1, len(records)), 8)):
        core = new_core()
        for _ in replay(core, iter(records[:cut])):
            pass
        restored = new_core()
        restored.restore(decode_state(encode_state(core.state())))
        assert restored.state_hash() == core.state_hash()
        tail = Recorder()
        for seq, ts_ns, events in replay(restored, iter(records[cut:])):
            tail(seq, ts_ns, events)
        assert tail.batches == recorder.batches[cut:], f"diverged after a snapshot at {cut}"
        assert restored.state_hash() == engine.core.state_hash()


def test_recover_from_snapshot_and_journal_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j", fsync=FsyncPolicy.NEVER)
    engine = Engine(new_core(), journal, SimulatedClock(), snapshot_dir=tmp_path / "snap", snapshot_every=700)
    Simulation(engine, 3, members=10, start_day=date(2026, 11, 23)).run(1, 2_500)
    engine.close()
    assert list((tmp_path / "snap").iterdir()), "snapshots were written"
    snapshots = sorted((tmp_path / "snap").iterdir())
    newest_seq = int(snapshots[-1].name.split("-")[1].split(".")[0])
    caught_up = RecordingProjection(last_seq=engine.last_seq - 10)
    again = Engine.recover(new_core(), FileJournal(tmp_path / "j"), SimulatedClock(), tmp_path / "snap", projections=[caught_up])
    assert again.core.state_hash() == engine.core.state_hash()
    assert len(caught_up.recorder.batches) == 10, "a projection gets only the records it lacks"
    again.close()
    behind = RecordingProjection(last_seq=newest_seq - 5)
    again = Engine.recover(new_core(), FileJournal(tmp_path / "j"), SimulatedClock(), tmp_path / "snap", projections=[behind])
    assert again.core.state_hash() == engine.core.state_hash()
    assert len(behind.recorder.batches) == engine.last_seq - newest_seq + 5, "replayed from an older snapshot"


def test_a_damaged_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    engine, _ = simulate(FileJournal(path, fsync=FsyncPolicy.NEVER), commands=200, days=1)
    engine.close()
    data = path.read_bytes()
    rnd = random.Random(5)
    for position in rnd.sample(range(len(data)), 40):
        damaged = bytearray(data)
        damaged[position] ^= 1 << rnd.randrange(8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(JournalCorrupted):
            Engine.recover(new_core(), FileJournal(path), SimulatedClock())


def test_a_torn_last_record_is_cut_and_the_state_is_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "j"
    engine, _ = simulate(FileJournal(path, fsync=FsyncPolicy.NEVER), commands=100, days=1)
    engine.close()
    records = list(FileJournal(path).records())
    last = records[-1]
    path.write_bytes(path.read_bytes()[: last.position + 5])
    journal = FileJournal(path)
    assert journal.torn_tail_bytes == 5
    recovered = Engine.recover(new_core(), journal, SimulatedClock())
    expected = new_core()
    for _ in replay(expected, iter(records[:-1])):
        pass
    assert recovered.core.state_hash() == expected.state_hash()
    assert recovered.last_seq == last.seq - 1


def test_the_core_makes_no_reference_cycles() -> None:
    """What the engine's gc.freeze() policy relies on: trading garbage is freed by reference
    counting alone, so freezing never keeps a dead cycle alive."""
    gc.collect()
    gc.disable()
    try:
        engine, _ = simulate(MemoryJournal(), commands=3_000, days=2)
        del engine
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0


def test_the_engine_freezes_the_collector_on_schedule_and_collects_after_the_close() -> None:
    gc.unfreeze()
    try:
        engine = Engine(new_core(), MemoryJournal(), SimulatedClock(), gc_freeze_every=100)
        Simulation(engine, 1, members=5, start_day=date(2026, 11, 23)).run(1, 250)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_recovery_passes_over_a_snapshot_ahead_of_the_journal(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j", fsync=FsyncPolicy.NEVER)
    engine = Engine(new_core(), journal, SimulatedClock(), snapshot_dir=tmp_path / "snap", snapshot_every=300)
    Simulation(engine, 4, members=8, start_day=date(2026, 11, 23)).run(1, 1_000)
    engine.close()
    expected = engine.core.state_hash()
    records = list(FileJournal(tmp_path / "j").records())
    # The journal loses its tail (as if the OS dropped unsynced pages); the newest snapshot
    # is now ahead of it and must not be used.
    cut = records[-150]
    with open(tmp_path / "j", "r+b") as file:
        file.truncate(cut.position)
    recovered = Engine.recover(new_core(), FileJournal(tmp_path / "j"), SimulatedClock(), tmp_path / "snap")
    replayed = new_core()
    for _ in replay(replayed, iter(records[:-150])):
        pass
    assert recovered.core.state_hash() == replayed.state_hash() != expected


def test_a_snapshot_from_another_history_is_refused(tmp_path: Path) -> None:
    from exchange.engine.journal import JournalError

    for name, seed in (("a", 1), ("b", 2)):
        journal = FileJournal(tmp_path / name, fsync=FsyncPolicy.NEVER)
        engine = Engine(new_core(), journal, SimulatedClock(), snapshot_dir=tmp_path / f"snap-{name}", snapshot_every=400)
        Simulation(engine, seed, members=8, start_day=date(2026, 11, 23)).run(1, 1_000)
        engine.close()
    with pytest.raises(JournalError):
        Engine.recover(new_core(), FileJournal(tmp_path / "a"), SimulatedClock(), tmp_path / "snap-b")
