"""Every CLI mistake an operator makes is one line on stderr, a non-zero exit, no traceback.

Table-driven: each case runs the real command (``python -m exchange.cli ...``) as a process
of its own and checks its exit code, that stderr is exactly one line holding what the case
expects, and that no "Traceback" appears anywhere. The ``serve`` cases hold a data directory
with a real running ``exchange serve`` (and a port with a listening socket), so the locked
journal and the port in use are the real ones. Deadlines are generous (a hang, not a slow
machine, fails them).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 120
DAY = "2026-11-23"


def exchange(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "exchange.cli", *arguments], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=DEADLINE_S)


@dataclass
class Places:
    settled: Path  # an exchange whose first day traded and settled (in-process simulation)
    served: Path  # an exchange a running `exchange serve` holds
    busy_port: int  # a port something listens on
    scratch: Path


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Places]:
    root = tmp_path_factory.mktemp("cli-errors")
    settled = root / "settled"
    done = exchange("simulate", "--in-process", "--members", "4", "--commands", "400", "--data-dir", str(settled),
                    "--progress", "never")
    assert done.returncode == 0, done.stderr
    served = root / "served"
    assert exchange("init", str(served)).returncode == 0
    server = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "serve", "--port", "0", "--data-dir", str(served)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        assert server.stdout is not None
        first_line: list[str] = []
        reader = threading.Thread(target=lambda: first_line.append(server.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(DEADLINE_S)
        assert first_line and "serving on" in first_line[0], f"serve did not start: {first_line}"
        yield Places(settled, served, listener.getsockname()[1], root)
    finally:
        listener.close()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=DEADLINE_S)


def bad_config(places: Places) -> str:
    path = places.scratch / "bad.toml"
    path.write_text('[engine]\nfsync = "sometimes"\n')
    return str(path)


def stranger_dir(places: Places) -> str:
    path = places.scratch / "someone-elses"
    path.mkdir(exist_ok=True)
    (path / "notes.txt").write_text("not an exchange")
    return str(path)


# (name, arguments from the places, exit code, a fragment the one line on stderr holds)
CASES = [
    ("settle while the server runs",
     lambda p: ["settle", "--date", DAY, "--data-dir", str(p.served)], 2, "in use by another process"),
    ("a second serve on the same data directory",
     lambda p: ["serve", "--port", "0", "--data-dir", str(p.served)], 2, "is `exchange serve` already running on it?"),
    ("a port in use",
     lambda p: ["serve", "--port", str(p.busy_port), "--data-dir", str(p.scratch / "fresh")], 2, "already in use"),
    ("serve with a missing configuration file",
     lambda p: ["serve", "--port", "0", "--data-dir", str(p.scratch / "fresh2"), "--config", str(p.scratch / "none.toml")],
     2, "check the path given to --config"),
    ("a bad date",
     lambda p: ["settle", "--date", "2026-02-30", "--data-dir", str(p.settled)], 2, "not a date on the calendar"),
    ("a bad first day for simulate",
     lambda p: ["simulate", "--in-process", "--start", "2026-13-01"], 2, "is not a date"),
    ("a missing configuration file",
     lambda p: ["settle", "--date", DAY, "--data-dir", str(p.settled), "--config", str(p.scratch / "none.toml")],
     2, "check the path given to --config"),
    ("a bad configuration",
     lambda p: ["settle", "--date", DAY, "--data-dir", str(p.settled), "--config", bad_config(p)], 2, "fix the file"),
    ("a missing registry account",
     lambda p: ["registry", "holdings", "NOBODY", "--db", f"sqlite:///{p.settled / 'registry.db'}"],
     2, "`exchange registry accounts` lists the accounts"),
    ("a day that has not closed",
     lambda p: ["settle", "--date", "2026-11-24", "--data-dir", str(p.settled)], 1, "it has not closed; deal with the cause, then run `exchange settle"),
    ("a data directory with no exchange",
     lambda p: ["settle", "--date", DAY, "--data-dir", str(p.scratch)], 2, "give the --data-dir `exchange serve` uses"),
    ("init on someone else's directory",
     lambda p: ["init", stranger_dir(p)], 2, "is not empty and holds no exchange"),
    ("a required flag left out",
     lambda p: ["settle", "--data-dir", str(p.settled)], 2, "the following arguments are required: --date"),
]


@pytest.mark.parametrize(("name", "arguments", "code", "fragment"), CASES, ids=[case[0] for case in CASES])
def test_a_mistake_is_one_line(places: Places, name: str, arguments, code: int, fragment: str) -> None:
    result = exchange(*arguments(places))
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1, lines
    assert fragment in lines[0], lines[0]


def test_a_day_already_settled_says_so_and_posts_nothing(places: Places) -> None:
    """Not an error: the day is settled, the retry changes nothing and says so (exit 0)."""
    result = exchange("settle", "--date", DAY, "--data-dir", str(places.settled))
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{DAY} was already settled: "), lines
    assert "nothing was posted again" in lines[0]
