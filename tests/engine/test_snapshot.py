"""Snapshots: written atomically, every damaged byte noticed, a damaged newest one skipped and
reported in favour of the previous good one, and pruning never deletes the last good one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from exchange.engine.snapshot import (
    HEADER_SIZE,
    Snapshot,
    SnapshotDamaged,
    latest_snapshot,
    list_snapshots,
    prune_snapshots,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)


def snap(seq: int, size: int = 50) -> Snapshot:
    return Snapshot(seq, bytes([seq % 256]) * 16, bytes((seq + i) % 256 for i in range(size)))


def damage(path: Path, index: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= mask
    path.write_bytes(bytes(data))


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip(tmp_path: Path) -> None:
    for state in (b"", b"x", bytes(range(256)) * 1000):
        written = Snapshot(7, bytes(range(16)), state)
        path = write_snapshot(tmp_path, written)
        assert path == tmp_path / "snapshot-00000000000000000007.snap"
        assert read_snapshot(path) == written
        assert latest_snapshot(tmp_path) == written


def test_names_sort_by_seq_and_the_newest_is_latest(tmp_path: Path) -> None:
    for seq in (5, 100, 20, 3_000_000_000):
        write_snapshot(tmp_path / "new", snap(seq))  # the directory is made when missing
    listed = [s for _, s in list_snapshots(tmp_path / "new")]
    assert [s.seq if isinstance(s, Snapshot) else s for s in listed] == [5, 20, 100, 3_000_000_000]
    assert latest_snapshot(tmp_path / "new") == snap(3_000_000_000)


def test_no_snapshots(tmp_path: Path) -> None:
    assert latest_snapshot(tmp_path) is None
    assert latest_snapshot(tmp_path / "missing") is None
    assert list_snapshots(tmp_path / "missing") == []
    prune_snapshots(tmp_path / "missing", keep=2)


def test_the_write_is_durable_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_snapshot(tmp_path, snap(1))
    assert len(synced) == 2, "the file, then its directory"

    def crash(src, dst) -> None:
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_snapshot(tmp_path, snap(2))
    assert names(tmp_path) == [snapshot_name(1)], "nothing half-written is visible or left behind"
    assert latest_snapshot(tmp_path) == snap(1)


def test_a_stray_temporary_file_is_ignored_then_pruned(tmp_path: Path) -> None:
    write_snapshot(tmp_path, snap(1))
    stray = tmp_path / f".{snapshot_name(2)}.tmp"
    stray.write_bytes(b"half a snapshot")  # what a crash before the rename leaves
    assert [path.name for path, _ in list_snapshots(tmp_path)] == [snapshot_name(1)]
    assert latest_snapshot(tmp_path) == snap(1)
    prune_snapshots(tmp_path, keep=1)
    assert names(tmp_path) == [snapshot_name(1)]


def test_every_damaged_byte_is_noticed(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, snap(9, size=20))
    data = path.read_bytes()
    assert len(data) == HEADER_SIZE + 20
    for index in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[index] ^= mask
            path.write_bytes(bytes(damaged))
            with pytest.raises(SnapshotDamaged):
                read_snapshot(path)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda data: data[:-1], "bad checksum"),
        (lambda data: data + b"\0", "bad checksum"),
        (lambda data: data[:30], "shorter than the 60-byte header"),
        (lambda data: b"PK" + data[2:], "bad magic"),
    ],
)
def test_cut_padded_or_foreign_files_are_damaged(tmp_path: Path, change, reason) -> None:
    path = write_snapshot(tmp_path, snap(4))
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(SnapshotDamaged, match=reason):
        read_snapshot(path)


def test_a_renamed_snapshot_is_damaged(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, snap(4))
    path.rename(tmp_path / snapshot_name(40))
    with pytest.raises(SnapshotDamaged, match="holds seq 4"):
        read_snapshot(tmp_path / snapshot_name(40))


def test_a_damaged_newest_snapshot_falls_back_to_the_previous_one_and_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for seq in (10, 20, 30):
        write_snapshot(tmp_path, snap(seq))
    damage(tmp_path / snapshot_name(30), HEADER_SIZE + 3)
    damage(tmp_path / snapshot_name(20), 12)

    reported: list[SnapshotDamaged] = []
    assert latest_snapshot(tmp_path, on_damaged=reported.append) == snap(10)
    assert [(d.path.name, d.reason) for d in reported] == [(snapshot_name(30), "bad checksum"), (snapshot_name(20), "bad checksum")]

    with caplog.at_level(logging.WARNING):
        assert latest_snapshot(tmp_path) == snap(10)
    assert "snapshot-00000000000000000030.snap: bad checksum" in caplog.text

    listed = list_snapshots(tmp_path)
    assert [type(found) for _, found in listed] == [Snapshot, SnapshotDamaged, SnapshotDamaged]


def test_all_damaged_means_no_snapshot(tmp_path: Path) -> None:
    damage(write_snapshot(tmp_path, snap(1)), 0)
    reported: list[SnapshotDamaged] = []
    assert latest_snapshot(tmp_path, on_damaged=reported.append) is None
    assert [d.reason for d in reported] == ["bad magic: not a snapshot file"]


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for seq in range(1, 6):
        write_snapshot(tmp_path, snap(seq))
    (tmp_path / "operator-notes.txt").write_text("not ours")
    prune_snapshots(tmp_path, keep=2)
    assert names(tmp_path) == ["operator-notes.txt", snapshot_name(4), snapshot_name(5)]
    prune_snapshots(tmp_path, keep=5)
    assert names(tmp_path) == ["operator-notes.txt", snapshot_name(4), snapshot_name(5)]


def test_prune_counts_only_good_snapshots_and_keeps_newer_damaged_ones(tmp_path: Path) -> None:
    for seq in range(1, 6):
        write_snapshot(tmp_path, snap(seq))
    damage(tmp_path / snapshot_name(5), 20)
    damage(tmp_path / snapshot_name(2), 20)
    prune_snapshots(tmp_path, keep=1)
    assert names(tmp_path) == [snapshot_name(4), snapshot_name(5)], "4 is the good one; 5 stays to be looked at"
    damage(tmp_path / snapshot_name(4), 20)
    prune_snapshots(tmp_path, keep=1)
    assert names(tmp_path) == [snapshot_name(4), snapshot_name(5)], "no good snapshot left: delete nothing"


def test_prune_keeps_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        prune_snapshots(tmp_path, keep=0)


def test_same_seq_replaces(tmp_path: Path) -> None:
    write_snapshot(tmp_path, snap(3))
    newer = Snapshot(3, bytes(16), b"rewritten")
    write_snapshot(tmp_path, newer)
    assert names(tmp_path) == [snapshot_name(3)]
    assert latest_snapshot(tmp_path) == newer
