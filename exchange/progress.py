"""Progress of long work (``simulate`` in both modes, ``settle``), shared by every command.

On a terminal a ``rich`` progress bar on stderr, redrawn at most ten times a second; off a
terminal (a log file, a pipe, CI) plain lines, one every few seconds at most (``every_s``,
5 by default)::

    [###############...............]  52% 10,400/20,000 orders  2026-11-23 continuous 2/2

Decisions:

- The work counts into :attr:`Progress.done` (a plain ``int``: a member's send loop adds one
  per order without a call) and names its stage in :attr:`Progress.stage`; drawing is a
  separate, time-gated step (:meth:`Progress.tick`), so neither a slow terminal nor a busy log
  slows the work down. An ``asyncio`` run lets :meth:`Progress.start` tick it from a task; a
  synchronous loop calls :meth:`Progress.tick` itself, as often as it likes.
- Plain lines never come faster than ``every_s``, and the first only after ``every_s``: work
  shorter than that prints nothing, so a command that fails at once says only its one line.
  The closing line comes only when a line was printed before (and the work finished).
- Everything goes to stderr: stdout stays the command's result, for scripts.
- The clock is injectable (``clock``), so tests count lines without sleeping.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

PLAIN_EVERY_S = 5.0
BAR_EVERY_S = 0.1


class Progress:
    """Counts work done of ``total`` and shows it: a bar, plain lines, or nothing."""

    WIDTH = 30

    def __init__(
        self, total: int, enabled: bool = True, stream: TextIO | None = None, *, unit: str = "orders",
        bar: bool | None = None, every_s: float = PLAIN_EVERY_S, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``bar`` None: a bar when ``stream`` is a terminal, plain lines otherwise."""
        self.total, self.enabled, self.unit = total, enabled, unit
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self.every_s = BAR_EVERY_S if self.bar else every_s
        self.clock = clock
        self.done = 0
        self.stage = "setting up"
        self._started = self._drawn_at = clock()
        self._lines = 0
        self._rich: RichProgress | None = None
        self._task: asyncio.Task | None = None

    # The served run's members count into ``sent``: the same counter.
    @property
    def sent(self) -> int:
        return self.done

    @sent.setter
    def sent(self, value: int) -> None:
        self.done = value

    def line(self) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self.WIDTH)
        meter = "#" * filled + "." * (self.WIDTH - filled)
        return f"[{meter}] {fraction:4.0%} {self.done:,}/{self.total:,} {self.unit}  {self.stage}"

    def tick(self) -> None:
        """Show the progress if it is time to (cheap otherwise: one clock read)."""
        if not self.enabled:
            return
        now = self.clock()
        if self.bar and self._rich is None:
            self._open_bar()
        if now - self._drawn_at >= self.every_s:
            self._drawn_at = now
            self._draw()

    def _open_bar(self) -> None:
        console = Console(file=self.stream, force_terminal=True)
        self._rich = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
            TimeElapsedColumn(), console=console, auto_refresh=False, transient=False,
        )
        self._rich.add_task(self.stage, total=self.total or None)
        self._rich.start()

    def _draw(self) -> None:
        if self._rich is not None:
            task = self._rich.task_ids[0]
            self._rich.update(task, completed=self.done, total=self.total or None, description=self.stage)
            self._rich.refresh()
            return
        self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._lines += 1

    def close(self, finished: bool = True) -> None:
        """Stop showing: the bar drawn a last time; a closing plain line if any came before
        and the work ``finished`` (a failure's one line stays alone)."""
        if not self.enabled:
            return
        if self._rich is not None:
            self._draw()
            self._rich.stop()
            self._rich = None
        elif finished and self._lines:
            self.stage = f"done in {self.clock() - self._started:,.0f} s"
            self._draw()

    # -- for an asyncio run ---------------------------------------------------------------------

    def start(self) -> None:
        """Tick from a task on the running loop until :meth:`finish`."""
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._ticking())

    async def _ticking(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(BAR_EVERY_S)

    async def finish(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.close()
