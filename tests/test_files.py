"""Files at rest (issue 10, finding 6): one helper writes them whole, private and durable, and
every side file goes through it: the gateway's secret, tokens and credentials, the engine's
snapshots and the clearing house's statements.

Durability is seen by recording what ``os.fsync`` was called on (the descriptor's inode, and
whether it is a directory), in order with the renames."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exchange import files
from exchange.engine.snapshot import Snapshot, read_snapshot, write_snapshot
from exchange.gateway import server
from tests.clearing.settlement_support import DAY, closed_day, open_exchange


class Recorder:
    """Every fsync (inode, is a directory) and every os.replace, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, int, bool]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            self.events.append(("fsync", st.st_ino, stat.S_ISDIR(st.st_mode)))
            real_fsync(fd)

        def replace(source, target) -> None:
            real_replace(source, target)
            self.events.append(("replace", os.lstat(target).st_ino, os.path.isdir(target)))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def synced(self, path: Path) -> bool:
        return ("fsync", path.stat().st_ino, path.is_dir()) in self.events

    def index(self, kind: str, path: Path) -> int:
        return self.events.index((kind, path.stat().st_ino, path.is_dir()))

    def synced_after(self, path: Path, position: int) -> bool:
        return ("fsync", path.stat().st_ino, path.is_dir()) in self.events[position + 1:]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the helper ----------------------------------------------------------------------------------


def test_write_atomic_writes_the_bytes_private_then_renames_then_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder(monkeypatch)
    path = tmp_path / "secret"
    files.write_atomic(path, b"one ", b"two")
    assert path.read_bytes() == b"one two" and mode(path) == 0o600
    renamed = recorder.index("replace", path)
    assert recorder.index("fsync", path) < renamed
    assert recorder.synced_after(tmp_path, renamed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_write_atomic_replaces_an_existing_file_and_ignores_the_umask_and_a_stray_temporary(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(b"old")
    path.chmod(0o644)
    stray = tmp_path / ".tokens.json.tmp"  # left by a crash, with a mode nobody wants passed on
    stray.write_bytes(b"half a write")
    stray.chmod(0o666)
    previous = os.umask(0)
    try:
        files.write_atomic(path, b"new")
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"new" and mode(path) == 0o600
    assert not stray.exists()


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    path = tmp_path / "credentials.json"
    files.write_atomic(path, b"before")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(path, b"after")
    monkeypatch.undo()
    assert path.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["credentials.json"]


def test_replace_durably_syncs_both_directories_of_a_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files.write_new(tmp_path / "a" / "f", b"x")
    recorder = Recorder(monkeypatch)
    files.replace_durably(tmp_path / "a" / "f", tmp_path / "b" / "f")
    assert recorder.synced(tmp_path / "a") and recorder.synced(tmp_path / "b")


def test_append_durably_syncs_each_append_and_the_directory_when_it_creates_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder(monkeypatch)
    path = tmp_path / "log"
    files.append_durably(path, b"1\n")
    assert recorder.synced(path) and recorder.synced(tmp_path) and mode(path) == 0o600
    recorder.events.clear()
    files.append_durably(path, b"2\n")
    assert recorder.synced(path) and not recorder.synced(tmp_path)
    assert path.read_bytes() == b"1\n2\n"


def test_make_private_dir_creates_0700_and_leaves_an_existing_directory_alone(tmp_path: Path) -> None:
    made = files.make_private_dir(tmp_path / "data" / "deeper")
    assert made.is_dir() and mode(made) == 0o700
    existing = tmp_path / "shared"
    existing.mkdir()
    existing.chmod(0o755)
    files.make_private_dir(existing)
    assert mode(existing) == 0o755  # the operator's: the start-up check warns about it


# -- the call sites ------------------------------------------------------------------------------


def test_the_gateway_writes_its_secret_tokens_and_credentials_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[str] = []
    real = files.write_atomic

    def recording(path, *chunks, **options) -> None:
        written.append(Path(path).name)
        real(path, *chunks, **options)

    monkeypatch.setattr(files, "write_atomic", recording)
    store, save = server.credential_store(tmp_path)
    server.operator_tokens(tmp_path)
    store.issue("M0001", 1)
    save()
    for name in (server.SECRET_FILE, server.TOKENS_FILE, server.CREDENTIALS_FILE):
        assert name in written and mode(tmp_path / name) == 0o600


def test_a_saved_revocation_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, save = server.credential_store(tmp_path)
    key = store.issue("M0001", 1).key_id
    save()
    recorder = Recorder(monkeypatch)
    store.revoke(key)
    save()
    credentials = tmp_path / server.CREDENTIALS_FILE
    renamed = recorder.index("replace", credentials)
    assert recorder.index("fsync", credentials) < renamed
    assert recorder.synced_after(tmp_path, renamed)  # without it a power loss could bring the key back


def test_a_snapshot_is_written_through_the_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[Path] = []
    real = files.write_atomic

    def recording(path, *chunks, **options) -> None:
        written.append(Path(path))
        real(path, *chunks, **options)

    monkeypatch.setattr(files, "write_atomic", recording)
    recorder = Recorder(monkeypatch)
    path = write_snapshot(tmp_path / "snapshots", Snapshot(7, bytes(16), b"state"))
    assert written == [path] and read_snapshot(path).state == b"state"
    assert mode(path) == 0o600 and mode(tmp_path / "snapshots") == 0o700
    assert recorder.synced(path) and recorder.synced(tmp_path / "snapshots")


def test_statements_are_fsynced_each_and_the_day_directory_is_renamed_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir, db_url = tmp_path / "data", f"sqlite:///{tmp_path / 'clearing.db'}"
    closed_day(data_dir, db_url, members=3, commands=300)
    exchange = open_exchange(data_dir, db_url)
    recorder = Recorder(monkeypatch)
    try:
        exchange.settle(DAY)
    finally:
        exchange.close()
        exchange.registry.close()  # type: ignore[union-attr]
    statements, day = data_dir / "statements", data_dir / "statements" / DAY
    written = sorted(day.iterdir())
    assert [p.name for p in written][-1] == "settlement-report.json" and len(written) == 4
    for path in written:
        assert recorder.synced(path) and mode(path) == 0o600
        assert recorder.index("fsync", path) < recorder.index("fsync", day)  # every file before its directory
    renamed = recorder.index("replace", day)
    assert recorder.index("fsync", day) < renamed
    assert recorder.synced_after(statements, renamed)  # the rename itself reaches the disk
    assert mode(day) == 0o700 and mode(statements) == 0o700
