"""Files at rest are the service account's alone (issue 10, finding 4): the commands run with
umask 077 and create the data directory 0700, so the journal, the databases, the snapshots, the
gateway's files and the statements are 0600 in 0700 directories; ``exchange serve`` warns, one
line each, about a data directory or a file in it that group or others may use."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.app import SHARED_WARNINGS_SHOWN, keep_files_private, shared_paths, warn_about_shared_paths
from exchange.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shared_umask() -> Iterator[None]:
    """The usual umask of a login shell, put back afterwards whatever the test set."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def open_to_others(directory: Path) -> list[str]:
    """Every path under ``directory`` (itself included) with a group or other permission bit."""
    paths = [directory, *directory.rglob("*")]
    return [f"{stat.S_IMODE(p.stat().st_mode):04o} {p}" for p in paths if p.stat().st_mode & 0o077]


def test_an_in_process_simulation_leaves_only_private_files(tmp_path: Path, shared_umask: None) -> None:
    data_dir = tmp_path / "sim"
    result = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "simulate", "--in-process", "--members", "5", "--commands", "300",
         "--data-dir", str(data_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert (data_dir / "commands.journal").exists() and any((data_dir / "statements").rglob("*.csv"))
    assert open_to_others(data_dir) == []


def test_cli_main_puts_the_callers_umask_back(tmp_path: Path, shared_umask: None) -> None:
    assert main(["settle", "--date", "2026-11-23", "--data-dir", str(tmp_path / "nothing")]) == 2
    assert os.umask(0o022) == 0o022


def test_serve_warns_about_a_shared_data_directory_and_creates_its_own_files_private(
    tmp_path: Path, shared_umask: None,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    left_open = data_dir / "notes.txt"
    left_open.write_text("an operator's file")
    left_open.chmod(0o644)
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from exchange.serve import main; sys.exit(main(sys.argv[1:]))",
         "--port", "0", "--data-dir", str(data_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        assert "serving on" in process.stdout.readline()  # every start-up file is made by now
        process.send_signal(signal.SIGKILL)
        process.wait(60)
        warnings = [line for line in process.stderr.read().splitlines() if line.startswith("warning:")]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert warnings == [
        f"warning: directory {data_dir} is open to group or others (mode 0755); "
        f"the data directory should be private to the service account (chmod 700 {data_dir})",
        f"warning: file {left_open} is open to group or others (mode 0644); "
        f"the data directory should be private to the service account (chmod 600 {left_open})",
    ]
    # What the server made itself is private although the directory it found was not.
    assert sorted(open_to_others(data_dir)) == sorted([f"0755 {data_dir}", f"0644 {left_open}"])
    assert (data_dir / "gateway-secret").exists() and (data_dir / "commands.journal").exists()


def test_a_data_directory_the_exchange_creates_is_private(tmp_path: Path, shared_umask: None) -> None:
    from exchange.app import Exchange
    from exchange.config import Config
    from exchange.sim.in_process import SimulatedClock

    previous = keep_files_private()
    try:
        exchange = Exchange.open(Config(), tmp_path / "new" / "data", SimulatedClock())
        exchange.close()
    finally:
        os.umask(previous)
    assert open_to_others(tmp_path / "new" / "data") == []


def test_shared_paths_sees_group_and_other_bits_and_skips_links(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    (tmp_path / "private").write_text("")
    (tmp_path / "private").chmod(0o600)
    (tmp_path / "group-writable").write_text("")
    (tmp_path / "group-writable").chmod(0o620)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub").chmod(0o750)
    (tmp_path / "sub" / "inner").write_text("")
    (tmp_path / "sub" / "inner").chmod(0o604)
    (tmp_path / "link").symlink_to("/etc/hostname")
    assert shared_paths(tmp_path) == [
        (tmp_path / "group-writable", 0o620), (tmp_path / "sub", 0o750), (tmp_path / "sub" / "inner", 0o604)]
    assert shared_paths(tmp_path / "missing") == []


def test_many_shared_files_give_a_bounded_warning(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    for i in range(SHARED_WARNINGS_SHOWN + 5):
        (tmp_path / f"f{i:02d}").write_text("")
        (tmp_path / f"f{i:02d}").chmod(0o644)
    out = io.StringIO()
    assert warn_about_shared_paths(tmp_path, out) == SHARED_WARNINGS_SHOWN + 5
    lines = out.getvalue().splitlines()
    assert len(lines) == SHARED_WARNINGS_SHOWN + 1
    assert lines[-1] == f"warning: and 5 more paths under {tmp_path} open to group or others"
