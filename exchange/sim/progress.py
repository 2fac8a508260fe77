"""The served run's progress bar: one plain-text line on stderr, rewritten with ``\\r``
(``[##########..........]  52% 5,200/10,000 orders  2026-11-23 continuous 2/2``).

Members count the orders they send into :attr:`Progress.sent` and the run names its stage; a
task redraws the line ten times a second, so a slow terminal never slows the members down.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO


class Progress:
    """A one-line bar on stderr, rewritten in place; silent when not enabled."""

    WIDTH = 30

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.sent = 0
        self.stage = "setting up"
        self._width = 0
        self._task: asyncio.Task | None = None

    def line(self) -> str:
        fraction = min(self.sent / self.total, 1.0) if self.total else 1.0
        done = int(fraction * self.WIDTH)
        bar = "#" * done + "." * (self.WIDTH - done)
        return f"[{bar}] {fraction:4.0%} {self.sent:,}/{self.total:,} orders  {self.stage}"

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(0.1)

    def draw(self) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    async def finish(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.draw()
        self.stream.write("\n")
        self.stream.flush()
