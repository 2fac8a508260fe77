"""The one event stream's vocabulary: the record per command, and what follows the stream.

The engine hands out one :class:`Applied` record per command. Everything that reacts to
events is a :class:`Projection` of that stream with its own position; see
:mod:`exchange.engine.stream` for the delivery rules (durable records only, each projection
catching up from its own position).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import msgspec

from exchange.model.commands import Command
from exchange.model.events import Event


class Applied(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One command as the engine applied it. ``trading_day`` is the core's trading day after
    the command (the new day for ``StartDay``; empty before the first day)."""

    seq: int
    ts_ns: int
    trading_day: str
    command: Command
    events: list[Event]


class Projection(Protocol):
    """A consumer of the event stream with its own position."""

    name: str

    @property
    def last_seq(self) -> int:
        """The last sequence number applied (for a durable projection: stored)."""

    def apply(self, applied: Applied) -> None:
        """Take one durable record; records arrive in sequence order, each exactly once."""

    def flush(self) -> None:
        """Make durable everything applied so far (a no-op for an in-memory projection)."""


@runtime_checkable
class SnapshottedProjection(Projection, Protocol):
    """An in-memory projection whose state travels in the engine's snapshots."""

    def snapshot_state(self) -> bytes:
        """The state as of ``last_seq``, as bytes."""

    def restore_state(self, data: bytes, seq: int) -> None:
        """Load what :meth:`snapshot_state` gave, taken at ``seq`` (a fresh projection)."""
