"""Session guards: what protects a member's resting orders when its sessions go away.

A member's **guard** is its cancel-on-disconnect flag and its dead-man period
(``dead_man_ms``, 0: not armed). The hub keeps the live state (its sessions and the dead-man
timers) in memory; so that a crash of the server cannot leave the orders of a member who never
comes back resting, it also journals the guard (``SetSessionGuard``, answered by
``SessionGuardSet``) whenever it changes, and :class:`SessionGuards`, a snapshotted projection
of the stream, keeps the latest per member. After a restart the hub reads it and arms a grace
timer per guarded member (see :mod:`exchange.gateway.hub` and ``docs/protocol.md``).

Decisions:

* **The member's effective guard** (:func:`effective_guard`): cancel-on-disconnect if *any*
  live session of the member asked for it at logon (the safe side: orders the member wanted
  protected stay protected while one such session lives), and the member's dead-man period
  while its timer is armed. With no live session the cancel-on-disconnect flag stays what was
  last journalled: the last session closing changes nothing in the journal (the hub's own
  cancel-on-disconnect then runs, and a member with no orders loses nothing by its guard).
* **Compact.** The hub journals a guard only when it differs from the last one it journalled
  for the member; a member never journalled counts as unguarded (:data:`UNGUARDED`), so a
  logon without cancel-on-disconnect and without a timer journals nothing.
* **The projection keeps every member's latest guard**, unguarded ones included, in memory;
  its state travels in the engine's snapshots as msgspec bytes sorted by member id, so equal
  states give equal bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from exchange.model.events import SessionGuardSet
from exchange.model.stream import Applied


class Guard(msgspec.Struct, frozen=True, array_like=True):
    """One member's guard as last journalled."""

    member_id: str
    cancel_on_disconnect: bool
    dead_man_ms: int = 0

    @property
    def guarded(self) -> bool:
        """Something would cancel the member's orders if it stayed away."""
        return self.cancel_on_disconnect or self.dead_man_ms > 0


class GuardsState(msgspec.Struct, array_like=True):
    """What a snapshot holds: every member's latest guard, in member id order."""

    guards: list[Guard]


UNGUARDED = (False, 0)  # (cancel_on_disconnect, dead_man_ms) of a member never journalled

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(GuardsState)


def effective_guard(session_flags: Iterable[bool], dead_man_ms: int, journalled: tuple[bool, int]) -> tuple[bool, int]:
    """The member's guard now: ``session_flags`` are its live sessions' cancel-on-disconnect
    options (none: the journalled flag stays), ``dead_man_ms`` its armed period (0: none)."""
    flags = list(session_flags)
    cancel_on_disconnect = any(flags) if flags else journalled[0]
    return cancel_on_disconnect, dead_man_ms


class SessionGuards:
    """The latest guard per member, from ``SessionGuardSet`` events."""

    name = "gateway.guards"

    def __init__(self) -> None:
        self.last_seq = 0
        self.restored_seq = 0  # the snapshot's position this projection was restored at (0: none)
        self._guards: dict[str, Guard] = {}

    # -- the projection ----------------------------------------------------------------------

    def apply(self, applied: Applied) -> None:
        assert applied.seq > self.last_seq, (applied.seq, self.last_seq)
        self.last_seq = applied.seq
        for event in applied.events:
            if type(event) is SessionGuardSet:
                self._guards[event.member_id] = Guard(event.member_id, event.cancel_on_disconnect, event.dead_man_ms)

    def flush(self) -> None:
        """In memory: nothing to write (the engine's snapshots carry the state)."""

    def snapshot_state(self) -> bytes:
        return _state_encoder.encode(GuardsState([self._guards[m] for m in sorted(self._guards)]))

    def restore_state(self, data: bytes, seq: int) -> None:
        assert self.last_seq == 0 and not self._guards, "restore needs a fresh projection"
        for guard in _state_decoder.decode(data).guards:
            self._guards[guard.member_id] = guard
        self.last_seq = self.restored_seq = seq

    # -- reads -------------------------------------------------------------------------------

    def get(self, member_id: str) -> Guard | None:
        return self._guards.get(member_id)

    def guarded(self) -> list[Guard]:
        """The members something would protect, in member id order."""
        return [self._guards[m] for m in sorted(self._guards) if self._guards[m].guarded]

    def __iter__(self):
        return iter([self._guards[m] for m in sorted(self._guards)])

    def __len__(self) -> int:
        return len(self._guards)
