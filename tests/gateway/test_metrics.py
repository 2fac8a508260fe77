"""``/metrics`` written by prometheus_client: the same names and labels as before, valid
exposition (the library's own parser reads it back), the process collector, one registry per
:class:`Metrics` (never the global one), and the stream's counters restored from a snapshot."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exchange.gateway.operator.metrics import Metrics

NAMES = {  # family -> type, as the hand-written exposition had them
    "exchange_orders_received": "counter", "exchange_orders_accepted": "counter", "exchange_fills": "counter",
    "exchange_rejects": "counter", "exchange_malformed_frames": "counter", "exchange_sessions_closed": "counter",
    "exchange_connections": "gauge", "exchange_gateway_refusals": "counter", "exchange_command_queue_depth": "gauge",
    "exchange_outbound_queue_messages": "gauge", "exchange_outbound_queue_max_messages": "gauge",
    "exchange_order_ack_latency_seconds": "histogram",
}


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render()) for s in family.samples}


def families(metrics: Metrics) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(metrics.render())}


def test_the_names_labels_and_values_are_those_of_before() -> None:
    metrics = Metrics()
    metrics.orders_received, metrics.orders_accepted, metrics.fills, metrics.malformed_frames = 7, 5, 3, 2
    metrics.rejects["price_outside_band"] += 4
    metrics.sessions_closed["slow_reader"] += 1
    metrics.gateway_refusals["member_budget"] += 6
    metrics.connections = 2
    metrics.queue_depth_of = lambda: 9
    metrics.outbound_depths = lambda: [3, 10]
    metrics.order_ack_latency.observe(0.0004)
    metrics.order_ack_latency.observe(2.0)
    ours = {name: kind for name, kind in families(metrics).items() if name.startswith("exchange_")}
    ours.pop("exchange_order_ack_latency_seconds_created", None)  # the library's (when the histogram began)
    assert ours == NAMES
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= set(families(metrics))  # the process collector
    got = samples(metrics)
    expected = {
        ("exchange_orders_received_total", ()): 7, ("exchange_orders_accepted_total", ()): 5,
        ("exchange_fills_total", ()): 3, ("exchange_malformed_frames_total", ()): 2,
        ("exchange_rejects_total", (("reason", "price_outside_band"),)): 4,
        ("exchange_sessions_closed_total", (("reason", "slow_reader"),)): 1,
        ("exchange_gateway_refusals_total", (("reason", "member_budget"),)): 6,
        ("exchange_connections", ()): 2, ("exchange_command_queue_depth", ()): 9,
        ("exchange_outbound_queue_messages", ()): 13, ("exchange_outbound_queue_max_messages", ()): 10,
        ("exchange_order_ack_latency_seconds_bucket", (("le", "0.0005"),)): 1,
        ("exchange_order_ack_latency_seconds_bucket", (("le", "+Inf"),)): 2,
        ("exchange_order_ack_latency_seconds_count", ()): 2,
    }
    assert {key: got[key] for key in expected} == expected


def test_the_process_collector_is_there() -> None:
    names = families(Metrics())
    assert names.get("process_cpu_seconds") == "counter" or names.get("process_cpu_seconds_total") == "counter", names
    assert "process_resident_memory_bytes" in names


def test_each_metrics_has_its_own_registry_never_the_global_one() -> None:
    first, second = Metrics(), Metrics()
    assert isinstance(first.registry, prometheus_client.CollectorRegistry)
    assert first.registry is not second.registry and first.registry is not prometheus_client.REGISTRY
    first.orders_received = 11
    first.order_ack_latency.observe(0.001)
    assert samples(first)[("exchange_orders_received_total", ())] == 11
    assert samples(second)[("exchange_orders_received_total", ())] == 0
    assert samples(second)[("exchange_order_ack_latency_seconds_count", ())] == 0
    assert "exchange_orders_received_total" not in prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()


def test_the_stream_counters_come_back_from_a_snapshot() -> None:
    metrics = Metrics()
    metrics.orders_accepted, metrics.fills = 40, 12
    metrics.rejects["unknown_instrument"] += 3
    restored = Metrics()
    restored.restore_state(metrics.snapshot_state(), seq=99)
    got = samples(restored)
    assert (got[("exchange_orders_accepted_total", ())], got[("exchange_fills_total", ())]) == (40, 12)
    assert got[("exchange_rejects_total", (("reason", "unknown_instrument"),))] == 3
    assert restored.last_seq == 99


@pytest.mark.asyncio
async def test_metrics_over_http_say_their_format(served, http) -> None:
    async with http.get(served.url + "/metrics") as response:
        text = await response.text()
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert {f.name for f in text_string_to_metric_families(text)} >= set(NAMES)
