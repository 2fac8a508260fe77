"""A file journal is a chain of segment files: opening verifies only the newest, reading crosses
them and checks each continues the one before, and recovery works the same whatever the cut."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exchange.engine import Engine, FileJournal, FsyncPolicy
from exchange.engine import journal as journal_module
from exchange.engine.journal import FILE_HEADER_SIZE, JournalCorrupted, JournalError, file_header, scan

from tests.engine.test_stream import commands, new_core


def write(path: Path, count: int, segment_records: int, batch: int = 1) -> list[bytes]:
    """``count`` records, a commit after every ``batch``; the chain value after each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = FileJournal(path, fsync=FsyncPolicy.BATCHED, batch_records=batch, segment_records=segment_records)
    chains = [journal.chain_hash]
    for seq in range(1, count + 1):
        journal.append(seq, seq * 10, f"command {seq}".encode())
        chains.append(journal.chain_hash)
    journal.close()
    return chains


def payloads(journal: FileJournal, after: int = 0) -> list[tuple[int, int, bytes]]:
    return [(r.seq, r.ts_ns, bytes(r.payload)) for r in journal.records(after)]


def test_a_full_segment_is_sealed_and_the_next_named_by_its_base_seq(tmp_path: Path) -> None:
    write(tmp_path / "j", 25, segment_records=10)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["j", "j.000000000010", "j.000000000020"]
    journal = FileJournal(tmp_path / "j")
    assert [p.name for p in journal.segments] == names
    assert payloads(journal) == [(seq, seq * 10, f"command {seq}".encode()) for seq in range(1, 26)]
    assert journal.last_seq == 25
    journal.close()


def test_rotation_waits_for_a_synced_commit_so_a_segment_may_hold_more(tmp_path: Path) -> None:
    write(tmp_path / "j", 25, segment_records=10, batch=7)
    # 14 is the first synced commit with ten records in the segment; close() syncs at 25.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "j.000000000014", "j.000000000025"]
    assert scan(tmp_path / "j").last_seq == 25


def test_the_records_and_the_state_do_not_depend_on_where_the_journal_was_cut(tmp_path: Path) -> None:
    write(tmp_path / "whole" / "j", 100, segment_records=1_000)
    write(tmp_path / "cut" / "j", 100, segment_records=7)
    whole, cut = FileJournal(tmp_path / "whole" / "j"), FileJournal(tmp_path / "cut" / "j")
    for after in (0, 6, 7, 8, 50, 99, 100):
        assert payloads(cut, after) == payloads(whole, after)
    whole.close()
    cut.close()


def test_a_snapshot_at_a_boundary_matches_either_side_of_the_cut(tmp_path: Path) -> None:
    """Taken before the rotation it holds the sealed segment's end, after it the new header's."""
    path = tmp_path / "j"
    chains = write(path, 20, segment_records=10)
    journal = FileJournal(path)
    sealed_end = journal_module._blake2b(path.read_bytes(), digest_size=16).digest()
    new_header = journal_module._blake2b(file_header(10, sealed_end), digest_size=16).digest()
    assert chains[10] == new_header, "the append of seq 10 committed, synced and rotated"
    for value in (sealed_end, new_header):
        assert [r.seq for r in journal.records(10, value)] == list(range(11, 21))
    with pytest.raises(JournalError, match="chain mismatch"):
        list(journal.records(10, chains[9]))
    for after in (0, 5, 9, 15, 19, 20):
        assert len(list(journal.records(after, chains[after]))) == 20 - after
    journal.close()


def test_opening_reads_only_the_newest_segment_and_reading_the_tail_skips_the_old(tmp_path: Path) -> None:
    path = tmp_path / "j"
    chains = write(path, 30, segment_records=10)
    sealed = tmp_path / "j.000000000010"
    data = bytearray(sealed.read_bytes())
    data[FILE_HEADER_SIZE + 30] ^= 0xFF  # damage a record of the middle segment
    sealed.write_bytes(bytes(data))
    journal = FileJournal(path)  # opens: the damage is in a sealed segment it does not read
    assert journal.last_seq == 30
    assert [r.seq for r in journal.records(20, chains[20])] == list(range(21, 31))
    with pytest.raises(JournalCorrupted, match="bad"):
        list(journal.records(0))
    journal.close()
    with pytest.raises(JournalCorrupted, match="j.000000000010"):
        scan(path)


def test_a_segment_that_does_not_continue_the_one_before_is_damage(tmp_path: Path) -> None:
    write(tmp_path / "a" / "j", 20, segment_records=10)
    (tmp_path / "c").mkdir()
    first = FileJournal(tmp_path / "c" / "j", fsync=FsyncPolicy.NEVER)
    for seq in range(1, 11):
        first.append(seq, seq, b"other history")
    first.close()
    os.replace(tmp_path / "c" / "j", tmp_path / "a" / "j")  # a's first segment, from another history
    journal = FileJournal(tmp_path / "a" / "j")
    with pytest.raises(JournalCorrupted, match="does not continue the segment before it"):
        list(journal.records(0))
    journal.close()
    with pytest.raises(JournalCorrupted, match="does not continue"):
        scan(tmp_path / "a" / "j")


def test_a_crash_right_after_the_new_segment_was_made_opens_on_the_empty_segment(tmp_path: Path) -> None:
    path = tmp_path / "j"
    chains = write(path, 10, segment_records=1_000)
    (tmp_path / "j.000000000010").write_bytes(file_header(10, chains[10]))  # made whole, nothing in it
    journal = FileJournal(path, fsync=FsyncPolicy.NEVER)
    assert journal.last_seq == 10
    journal.append(11, 11, b"next")
    journal.close()
    assert [r.seq for r in FileJournal(path).records(0)] == list(range(1, 12))


def test_a_segment_whose_header_disagrees_with_its_name_is_refused_at_opening(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, 20, segment_records=10)
    os.replace(tmp_path / "j.000000000010", tmp_path / "j.000000000011")
    with pytest.raises(JournalCorrupted, match="j.000000000011: segment header says base seq 10"):
        FileJournal(path)


def test_a_failed_rotation_writes_on_in_the_same_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, fsync=FsyncPolicy.BATCHED, batch_records=1, segment_records=5)

    def no_descriptors(*args: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(journal_module, "_create_file", no_descriptors)
    for seq in range(1, 9):
        journal.append(seq, seq, b"x")
    monkeypatch.undo()
    journal.append(9, 9, b"x")  # the next synced commit rotates
    journal.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "j.000000000009"]
    assert scan(path).last_seq == 9


def test_recovery_from_a_snapshot_reads_only_the_segments_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = FileJournal(tmp_path / "j", fsync=FsyncPolicy.NEVER, segment_records=4, batch_records=1)
    engine = Engine(new_core(), journal, lambda: 1, tmp_path / "snap", snapshot_every=12)
    for command in commands(8):
        engine.execute(command)
    engine.close()
    assert len(list(tmp_path.glob("j.*"))) >= 3
    opened: list[str] = []
    real_open = open

    def recording_open(file, *args, **kwargs):
        opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", recording_open)
    recovered = Engine.recover(new_core(), FileJournal(tmp_path / "j", segment_records=4), lambda: 1, tmp_path / "snap", snapshot_every=12)
    monkeypatch.undo()
    assert recovered.core.state_hash() == engine.core.state_hash()
    # Opening reads each segment's header once; only the segments from the snapshot on are read again.
    snapshot_seq = 12
    for segment in sorted(tmp_path.glob("j.*")):
        before_snapshot = int(segment.suffix[1:]) + 4 <= snapshot_seq
        assert (opened.count(segment.name) == 1) == before_snapshot, (segment.name, opened)
    recovered.close()
