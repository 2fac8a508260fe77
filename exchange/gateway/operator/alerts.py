"""The regulator's alerts: large-holder threshold crossings, a projection of the stream.

Decisions:

* **In memory, bounded.** The latest :data:`MAX_ALERTS` crossings are kept, oldest dropped
  first; ``GET /regulator/alerts`` lists them oldest first.
* **Snapshotted.** The kept alerts travel in the engine's snapshots (msgspec bytes of the
  events themselves), so a restart restores them and replays only the journal's tail: the
  list is a function of the journal, the same whether the process ran through or restarted.
"""

from __future__ import annotations

from collections import deque

import msgspec

from exchange.model.events import LargeHolderThresholdCrossed
from exchange.model.stream import Applied

MAX_ALERTS = 10_000  # regulator alerts kept in memory (oldest dropped)

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(list[LargeHolderThresholdCrossed])


class Alerts:
    name = "gateway.alerts"

    def __init__(self, max_alerts: int = MAX_ALERTS) -> None:
        assert max_alerts >= 1
        self.last_seq = 0
        self._alerts: deque[LargeHolderThresholdCrossed] = deque(maxlen=max_alerts)

    def apply(self, applied: Applied) -> None:
        self.last_seq = applied.seq
        for event in applied.events:
            if type(event) is LargeHolderThresholdCrossed:
                self._alerts.append(event)

    def flush(self) -> None:
        """In memory: nothing to write."""

    def snapshot_state(self) -> bytes:
        return _state_encoder.encode(list(self._alerts))

    def restore_state(self, data: bytes, seq: int) -> None:
        self._alerts.extend(_state_decoder.decode(data))
        self.last_seq = seq

    def __iter__(self):
        return iter(self._alerts)

    def __len__(self) -> int:
        return len(self._alerts)
