"""Snapshots of the engine's state, so recovery replays only the journal's tail.

A snapshot is the state as of journal seq `seq` together with the journal's chain value at
that seq, so recovery can check the snapshot was taken from the history it replays
(`journal.records(after_seq=snap.seq, expect_chain=snap.chain_hash)`). The state is opaque
bytes from the engine. Write one only after the journal is durable up to its seq (flush with
an fsync policy other than NEVER): a snapshot must never be ahead of the journal.

File format (all integers little-endian), one file per snapshot::

    magic      8s   b"\\x89CXS\\r\\n\\x1a\\n"
    version    u32  1
    seq        u64
    chain_hash 16s
    state_len  u64
    checksum   16s  blake2b(digest_size=16) of the 44 bytes above and the state
    state      state_len bytes

File names are ``snapshot-<seq, 20 digits>.snap`` so they sort by seq. Writing is atomic and
private (:func:`exchange.files.write_atomic`: a hidden temporary file in the same directory,
mode 0600, fsync, rename, fsync the directory); a crash leaves either the old set of snapshots
or the new one, plus at most a stray temporary file that nothing reads and prune_snapshots
removes.

Damaged snapshots: latest_snapshot() returns the newest snapshot that verifies and reports
every newer damaged one through `on_damaged` (by default a warning in the log) rather than
raising, because an older snapshot plus a longer replay is a correct recovery.
list_snapshots() shows every file with its verdict, for tools and operators.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from exchange import files

MAGIC = b"\x89CXS\r\n\x1a\n"
FORMAT_VERSION = 1
CHAIN_SIZE = 16
_FIELDS = struct.Struct("<8sIQ16sQ")  # magic, version, seq, chain_hash, state_len
HEADER_SIZE = _FIELDS.size + CHAIN_SIZE  # 60: the fields and the checksum
_PREFIX, _SUFFIX = "snapshot-", ".snap"
_SEQ_DIGITS = 20  # 2**64 has 20 digits

log = logging.getLogger(__name__)


class Snapshot(NamedTuple):
    seq: int
    chain_hash: bytes
    state: bytes


class SnapshotDamaged(Exception):
    """A snapshot file that does not verify. Raised by read_snapshot, listed as a value by
    list_snapshots."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def snapshot_name(seq: int) -> str:
    return f"{_PREFIX}{seq:0{_SEQ_DIGITS}d}{_SUFFIX}"


def write_snapshot(directory: str | os.PathLike[str], snapshot: Snapshot) -> Path:
    """Write atomically and durably; return the path. A snapshot with the same seq is replaced."""
    assert len(snapshot.chain_hash) == CHAIN_SIZE and 0 <= snapshot.seq < 2**64
    directory = files.make_private_dir(directory)
    path = directory / snapshot_name(snapshot.seq)
    files.write_atomic(path, _encode_header(snapshot), snapshot.state)  # a stray .NAME.tmp is pruned
    return path


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and verify one snapshot file; raise SnapshotDamaged if it does not verify."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < HEADER_SIZE:
        raise SnapshotDamaged(path, f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, seq, chain_hash, state_len = _FIELDS.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotDamaged(path, "bad magic: not a snapshot file")
    # The checksum covers the length too, so a cut or padded file fails here.
    if _checksum(data[: _FIELDS.size], memoryview(data)[HEADER_SIZE:]) != data[_FIELDS.size : HEADER_SIZE]:
        raise SnapshotDamaged(path, "bad checksum")
    if version != FORMAT_VERSION:
        raise SnapshotDamaged(path, f"unsupported format version {version}")
    if len(data) != HEADER_SIZE + state_len:
        raise SnapshotDamaged(path, f"state is {len(data) - HEADER_SIZE} bytes, header says {state_len}")
    if path.name != snapshot_name(seq):
        raise SnapshotDamaged(path, f"holds seq {seq}, its name says otherwise")
    return Snapshot(seq, chain_hash, data[HEADER_SIZE:])


def list_snapshots(directory: str | os.PathLike[str]) -> list[tuple[Path, Snapshot | SnapshotDamaged]]:
    """Every snapshot file, oldest first, each with its snapshot or what is wrong with it."""
    return [(path, _read_or_damage(path)) for path in _snapshot_paths(Path(directory))]


def latest_snapshot(
    directory: str | os.PathLike[str],
    on_damaged: Callable[[SnapshotDamaged], None] | None = None,
    at_most_seq: int | None = None,
) -> Snapshot | None:
    """The newest snapshot that verifies (and, given ``at_most_seq``, is not ahead of the
    journal), or None. Each newer damaged one is passed to `on_damaged` (default: logged as a
    warning) and skipped."""
    report = on_damaged or _log_damage
    for path in reversed(_snapshot_paths(Path(directory))):
        found = _read_or_damage(path)
        if isinstance(found, Snapshot):
            if at_most_seq is None or found.seq <= at_most_seq:
                return found
            continue
        report(found)
    return None


def prune_snapshots(directory: str | os.PathLike[str], keep: int) -> None:
    """Keep the newest `keep` snapshots that verify, and any damaged file newer than the oldest
    of those (left for an operator to look at); delete older files and stray temporaries.

    Counting only verified snapshots means pruning can never delete the last good one.
    """
    if keep < 1:
        raise ValueError("keep at least one snapshot")
    directory = Path(directory)
    paths = _snapshot_paths(directory)
    good = 0
    for index in range(len(paths) - 1, -1, -1):
        if isinstance(_read_or_damage(paths[index]), Snapshot):
            good += 1
            if good == keep:
                doomed = paths[:index] + sorted(directory.glob(f".{_PREFIX}*{_SUFFIX}.tmp"))
                break
    else:
        doomed = sorted(directory.glob(f".{_PREFIX}*{_SUFFIX}.tmp"))
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        files.fsync_dir(directory)


def _encode_header(snapshot: Snapshot) -> bytes:
    fields = _FIELDS.pack(MAGIC, FORMAT_VERSION, snapshot.seq, snapshot.chain_hash, len(snapshot.state))
    return fields + _checksum(fields, snapshot.state)


def _checksum(fields: bytes, state: bytes | memoryview) -> bytes:
    hasher = hashlib.blake2b(fields, digest_size=CHAIN_SIZE)
    hasher.update(state)
    return hasher.digest()


def _snapshot_paths(directory: Path) -> list[Path]:
    """Snapshot files by name, which is by seq; temporaries (hidden) and strangers ignored."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if _is_snapshot_name(path.name))


def _is_snapshot_name(name: str) -> bool:
    digits = name[len(_PREFIX) : -len(_SUFFIX)]
    return name.startswith(_PREFIX) and name.endswith(_SUFFIX) and len(digits) == _SEQ_DIGITS and digits.isdigit()


def _read_or_damage(path: Path) -> Snapshot | SnapshotDamaged:
    try:
        return read_snapshot(path)
    except SnapshotDamaged as damage:
        return damage


def _log_damage(damage: SnapshotDamaged) -> None:
    log.warning("skipping damaged snapshot %s", damage)
