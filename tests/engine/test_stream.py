"""The one event stream: records reach projections only once durable, each exactly once, and
recovery catches every projection up from its own position."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import pytest

from exchange.config import Config
from exchange.engine import (
    Applied,
    Engine,
    ExchangeCore,
    FileJournal,
    FsyncPolicy,
    MemoryJournal,
    ProjectionAhead,
    ProjectionFailed,
    ProjectionWorker,
    SnapshottedProjection,
)
from exchange.model import Deposit, MemberKind, RegisterMember, Side, StartDay, SubmitOrder

SYMBOL = "CEA-2025"


def new_core() -> ExchangeCore:
    config = Config()
    return ExchangeCore(config.listed_instruments(), config.market.stp, config.risk.policy())


class Counting:
    """A durable-looking projection: keeps the sequence numbers it was handed."""

    def __init__(self, name: str = "counting", last_seq: int = 0) -> None:
        self.name = name
        self.last_seq = last_seq
        self.seen: list[int] = []
        self.flushes = 0

    def apply(self, applied: Applied) -> None:
        assert applied.seq == self.last_seq + 1, "records arrive in order, each once"
        self.last_seq = applied.seq
        self.seen.append(applied.seq)

    def flush(self) -> None:
        self.flushes += 1


class Registrations(msgspec.Struct):
    last_seq: int = 0
    members: list[str] = msgspec.field(default_factory=list)


class MemberList:
    """A snapshotted projection: the registered members, in memory."""

    name = "members"

    def __init__(self) -> None:
        self.state = Registrations()
        self.applied: list[int] = []

    @property
    def last_seq(self) -> int:
        return self.state.last_seq

    def apply(self, applied: Applied) -> None:
        self.state.last_seq = applied.seq
        self.applied.append(applied.seq)
        if type(applied.command) is RegisterMember:
            self.state.members.append(applied.command.member_id)

    def flush(self) -> None:
        pass

    def snapshot_state(self) -> bytes:
        return msgspec.msgpack.encode(self.state)

    def restore_state(self, data: bytes, seq: int) -> None:
        self.state = msgspec.msgpack.decode(data, type=Registrations)
        assert self.state.last_seq == seq


def commands(count: int) -> list:
    """A day that opens, registers and funds members, and places some orders."""
    out: list = [StartDay("2026-11-23")]
    for n in range(count):
        member = f"M{n}"
        out += [RegisterMember(member, MemberKind.VOLUNTARY), Deposit(member, 1_000_000)]
    return out


def test_a_projection_sees_a_record_only_after_the_journal_flush() -> None:
    projection = Counting()
    journal = MemoryJournal(batch_records=1_000)
    engine = Engine(new_core(), journal, clock=lambda: 1, projections=[projection])
    applied = engine.execute(StartDay("2026-11-23"))
    assert applied.seq == 1 and applied.trading_day == "2026-11-23" and applied.command == StartDay("2026-11-23")
    assert projection.seen == [], "nothing is delivered before the journal is durable"
    assert journal.durable_seq == 0
    assert [a.seq for a in engine.flush()] == [1]
    assert projection.seen == [1] and journal.durable_seq == 1


def test_records_are_delivered_when_the_journal_commits_a_batch_by_itself() -> None:
    projection = Counting()
    journal = MemoryJournal(batch_records=3)
    engine = Engine(new_core(), journal, clock=lambda: 1, projections=[projection])
    for command in commands(3)[:5]:
        engine.execute(command)
    assert projection.seen == [1, 2, 3], "the journal synced 3 records; 2 are still in its buffer"
    engine.flush()
    assert projection.seen == [1, 2, 3, 4, 5]


def test_applied_records_carry_the_trading_day_and_the_command() -> None:
    engine = Engine(new_core(), MemoryJournal(), clock=lambda: 1)
    assert engine.execute(RegisterMember("A", MemberKind.VOLUNTARY)).trading_day == ""
    engine.execute(StartDay("2026-11-23"))
    order = SubmitOrder("A", SYMBOL, Side.BUY, 1, 5_800)
    applied = engine.execute(order)
    assert (applied.trading_day, applied.command) == ("2026-11-23", order)


def test_recovery_refuses_a_store_ahead_of_the_journal(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j")
    engine = Engine(new_core(), journal, clock=lambda: 1)
    for command in commands(2):
        engine.execute(command)
    engine.close()
    with pytest.raises(ProjectionAhead, match="the trades store has applied up to journal sequence 9"):
        Engine.recover(new_core(), FileJournal(tmp_path / "j"), lambda: 1, projections=[Counting("trades", 9)])


def test_snapshotted_projections_restore_from_the_snapshot_and_replay_only_the_tail(tmp_path: Path) -> None:
    members = MemberList()
    journal = FileJournal(tmp_path / "j", fsync=FsyncPolicy.NEVER)
    engine = Engine(new_core(), journal, lambda: 1, tmp_path / "snap", snapshot_every=6, projections=[members])
    for command in commands(5):
        engine.execute(command)
    engine.close()
    assert members.last_seq == 11
    again = MemberList()
    recovered = Engine.recover(new_core(), FileJournal(tmp_path / "j"), lambda: 1, tmp_path / "snap",
                               projections=[again], snapshot_every=6)
    assert again.state == members.state
    assert again.applied == [7, 8, 9, 10, 11], "restored at the snapshot of seq 6, only the tail replayed"
    assert recovered.core.state_hash() == engine.core.state_hash()


def test_a_snapshot_without_a_projection_state_is_passed_over(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j", fsync=FsyncPolicy.NEVER)
    engine = Engine(new_core(), journal, lambda: 1, tmp_path / "snap", snapshot_every=4)
    for command in commands(3):
        engine.execute(command)
    engine.close()
    members = MemberList()
    Engine.recover(new_core(), FileJournal(tmp_path / "j"), lambda: 1, tmp_path / "snap", projections=[members])
    assert members.applied == list(range(1, 8)), "no snapshot holds its state: replayed from the start"
    assert members.state.members == ["M0", "M1", "M2"]
    assert isinstance(members, SnapshottedProjection) and not isinstance(Counting(), SnapshottedProjection)


def test_a_worker_applies_in_its_own_thread_and_flush_waits_for_it() -> None:
    threads: set[str] = set()

    class Slow(Counting):
        def apply(self, applied: Applied) -> None:
            threads.add(threading.current_thread().name)
            super().apply(applied)

    inner = Slow("slow")
    worker = ProjectionWorker(inner, time.monotonic_ns)
    engine = Engine(new_core(), MemoryJournal(), lambda: 1, projections=[worker])
    for command in commands(20):
        engine.execute(command)
    engine.flush()
    worker.flush()
    assert inner.seen == list(range(1, 42)) and threads == {"projection-slow"}
    assert inner.flushes >= 1
    worker.close()


def test_a_failing_worker_reports_its_error_at_the_next_flush() -> None:
    class Broken(Counting):
        def apply(self, applied: Applied) -> None:
            raise OSError("disk full")

    worker = ProjectionWorker(Broken("broken"), time.monotonic_ns)
    engine = Engine(new_core(), MemoryJournal(), lambda: 1, projections=[worker])
    engine.execute(StartDay("2026-11-23"))
    engine.flush()
    with pytest.raises(ProjectionFailed, match="projection 'broken' stopped: OSError"):
        worker.flush()
    with pytest.raises(ProjectionFailed):
        worker.apply(engine.execute(RegisterMember("A", MemberKind.VOLUNTARY)))
