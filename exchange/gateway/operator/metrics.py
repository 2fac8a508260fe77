"""Counters for ``/metrics``, in the Prometheus text exposition format (version 0.0.4).

Decisions:

* **No client library.** A handful of counters, gauges and one histogram are written out by
  hand; the format is simple and stable, and the gateway takes no further dependency.
* **What is counted**: orders received over the WebSocket, orders accepted, rejects by reason
  code (labelled with the code's name), fills, order to acknowledgement latency (from the
  frame's arrival to the order's first execution report being queued to the session: it
  includes the queue wait and the group commit's fsync), connections now open, the total and
  the largest outbound queue among sessions, the hub's command queue depth (every job waiting
  for the engine: members' commands, operator jobs and the hub's own, read from the queue
  when ``/metrics`` is asked, so no path that queues can forget to update it), malformed
  frames, frames and commands the gateway answered itself without the engine, by reason
  (``session_budget``, ``member_budget``: error 13; ``member_pending``: error 14;
  ``order_not_live``: a cancel or amend of an order that is not the member's live order), and
  sessions closed by reason.
* Latency buckets are in seconds, as Prometheus expects, from 100 us to 1 s.
* **The event counters are a projection of the stream** (:class:`Metrics` has a ``name``, a
  ``last_seq`` and ``apply``): orders accepted, fills and rejects are counted from durable
  records, and travel in the engine's snapshots, so they count since the exchange's first
  command and a restart neither loses nor double-counts them. The session and connection
  counters and the latency histogram are the process's own and start at zero.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable

import msgspec

from exchange.model.events import CommandRejected, OrderAccepted, OrderFilled, OrderRejected
from exchange.model.stream import Applied

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value_s)] += 1
        self.total += value_s
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, None), self.counts, strict=True):
            running += count
            label = "+Inf" if bound is None else repr(bound)
            out.append(f'{name}_bucket{{le="{label}"}} {running}')
        out.append(f"{name}_sum {self.total:.9f}")
        out.append(f"{name}_count {self.count}")
        return out


class MetricsState(msgspec.Struct, array_like=True):
    """The stream's counters, for a snapshot (rejects by reason name, sorted)."""

    orders_accepted: int
    fills: int
    rejects: list[tuple[str, int]]


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(MetricsState)


class Metrics:
    name = "gateway.metrics"

    def __init__(self) -> None:
        self.last_seq = 0
        self.orders_received = 0
        self.orders_accepted = 0
        self.fills = 0
        self.rejects: Counter[str] = Counter()  # reason name -> count
        self.malformed_frames = 0
        self.sessions_closed: Counter[str] = Counter()  # reason -> count
        self.connections = 0
        self.queue_depth_of: Callable[[], int] = lambda: 0  # the hub's queue, read when rendered
        self.gateway_refusals: Counter[str] = Counter()  # reason -> frames answered without the engine
        self.order_ack_latency = Histogram()
        self.outbound_depths: Callable[[], Iterable[int]] = lambda: ()

    # -- the projection ----------------------------------------------------------------------

    def apply(self, applied: Applied) -> None:
        self.last_seq = applied.seq
        self.count_events(applied.events)

    def flush(self) -> None:
        """In memory: nothing to write."""

    def snapshot_state(self) -> bytes:
        return _state_encoder.encode(MetricsState(self.orders_accepted, self.fills, sorted(self.rejects.items())))

    def restore_state(self, data: bytes, seq: int) -> None:
        state = _state_decoder.decode(data)
        self.orders_accepted, self.fills = state.orders_accepted, state.fills
        self.rejects = Counter(dict(state.rejects))
        self.last_seq = seq

    def count_events(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is OrderAccepted:
                self.orders_accepted += 1
            elif kind is OrderFilled:
                self.fills += 1
            elif kind is OrderRejected or kind is CommandRejected:
                self.rejects[event.reason.name.lower()] += 1

    def render(self) -> str:
        depths = list(self.outbound_depths())
        lines = [
            *_metric("exchange_orders_received_total", "counter", "New orders received over the WebSocket.", self.orders_received),
            *_metric("exchange_orders_accepted_total", "counter", "Orders the engine accepted.", self.orders_accepted),
            *_metric("exchange_fills_total", "counter", "Executions.", self.fills),
            "# HELP exchange_rejects_total Orders and commands refused, by reason.",
            "# TYPE exchange_rejects_total counter",
            *(f'exchange_rejects_total{{reason="{reason}"}} {count}' for reason, count in sorted(self.rejects.items())),
            *_metric("exchange_malformed_frames_total", "counter", "Frames answered with an error.", self.malformed_frames),
            "# HELP exchange_sessions_closed_total Sessions closed by the server, by reason.",
            "# TYPE exchange_sessions_closed_total counter",
            *(f'exchange_sessions_closed_total{{reason="{r}"}} {n}' for r, n in sorted(self.sessions_closed.items())),
            *_metric("exchange_connections", "gauge", "Member sessions logged on now.", self.connections),
            "# HELP exchange_gateway_refusals_total Frames the gateway answered itself, never queued for the engine, by reason.",
            "# TYPE exchange_gateway_refusals_total counter",
            *(f'exchange_gateway_refusals_total{{reason="{r}"}} {n}' for r, n in sorted(self.gateway_refusals.items())),
            *_metric("exchange_command_queue_depth", "gauge", "Jobs waiting for the engine.", self.queue_depth_of()),
            *_metric("exchange_outbound_queue_messages", "gauge", "Messages waiting in all sessions' outbound queues.", sum(depths)),
            *_metric("exchange_outbound_queue_max_messages", "gauge", "The longest session outbound queue.", max(depths, default=0)),
            "# HELP exchange_order_ack_latency_seconds From a new order's frame to its first report being queued.",
            "# TYPE exchange_order_ack_latency_seconds histogram",
            *self.order_ack_latency.lines("exchange_order_ack_latency_seconds"),
        ]
        return "\n".join(lines) + "\n"


def _metric(name: str, kind: str, help_text: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
