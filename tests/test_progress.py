"""Progress of long work: plain lines off a terminal, never faster than every few seconds and
none for work shorter than that; a rich bar on a terminal; ``settle`` and the in-process
``simulate`` report through it. A fake clock stands in for time, so nothing here sleeps."""

from __future__ import annotations

import io
import itertools
from datetime import date
from functools import partial
from pathlib import Path

import pytest

import exchange.cli
from exchange.app import Exchange
from exchange.cli import main
from exchange.config import Config
from exchange.progress import Progress
from exchange.sim.in_process import SimulatedClock, Simulation


class FakeClock:
    def __init__(self, step_s: float = 0.0) -> None:
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def test_plain_lines_come_every_few_seconds_at_most() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(1_280, stream=out, unit="commands", every_s=5.0, clock=clock)
    for _ in range(1_280):
        progress.done += 1
        clock.now += 1 / 64  # 1,280 items over 20 s (a step binary fractions hold exactly)
        progress.tick()
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5  # at 5, 10, 15 and 20 s, and the closing line
    assert lines[0] == "[#######.......................]  25% 320/1,280 commands  setting up"
    assert lines[-1] == "[##############################] 100% 1,280/1,280 commands  done in 20 s"


def test_short_work_and_failed_work_print_nothing_more() -> None:
    out = io.StringIO()
    progress = Progress(10, stream=out, clock=FakeClock(0.1))
    for _ in range(10):
        progress.done += 1
        progress.tick()
    progress.close()
    assert out.getvalue() == ""  # shorter than the interval: not a line
    failed = Progress(10, stream=out, clock=FakeClock(6.0))
    failed.tick()
    failed.close(finished=False)
    assert out.getvalue().count("\n") == 1  # the line that came, no closing line after a failure


def test_disabled_progress_is_silent() -> None:
    out = io.StringIO()
    progress = Progress(10, enabled=False, stream=out, clock=FakeClock(60.0))
    progress.tick()
    progress.close()
    assert out.getvalue() == ""


def test_on_a_terminal_a_bar() -> None:
    out = io.StringIO()
    progress = Progress(200, stream=out, bar=True, unit="orders", clock=FakeClock(1.0))
    progress.done, progress.stage = 120, "2026-11-23 continuous 1/2"
    progress.tick()
    progress.close()
    shown = out.getvalue()
    assert "2026-11-23 continuous 1/2" in shown and "120/200" in shown and "orders" in shown
    assert "\x1b[" in shown  # drawn for a terminal, in place


def closed_day(data_dir: Path, commands: int, progress: Progress | None = None) -> None:
    """A trading day run to its close in process, not settled."""
    venue = Exchange.open(Config(), data_dir, SimulatedClock())
    try:
        Simulation(venue, 7, 5, date(2026, 11, 23), progress=progress).run(1, commands, settle=False)
    finally:
        venue.close()


def test_the_in_process_simulation_counts_its_commands(tmp_path: Path) -> None:
    clock, out = FakeClock(0.001), io.StringIO()
    progress = Progress(3_000, stream=out, unit="commands", every_s=1.0, clock=clock)
    closed_day(tmp_path / "venue", 3_000, progress)
    progress.close()
    lines = out.getvalue().splitlines()
    assert progress.done == 3_000 and len(lines) >= 2
    assert "2026-11-23 trading" in lines[0] and "3,000/3,000 commands  done in" in lines[-1]


def test_settle_shows_its_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "venue"
    closed_day(data_dir, 300)
    ticks = itertools.count()
    monkeypatch.setattr(exchange.cli, "Progress", partial(Progress, clock=lambda: float(next(ticks)), every_s=1.0))
    code = main(["settle", "--date", "2026-11-23", "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("settled 2026-11-23")
    lines = err.splitlines()
    assert "settling 2026-11-23: start" in lines[0]
    assert "settling 2026-11-23: settled" in lines[-2] and "11/11 steps  done in" in lines[-1]
