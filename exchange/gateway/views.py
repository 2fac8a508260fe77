"""The gateway's projections of the engine's stream, built together.

The composition root builds a :class:`GatewayViews` *before* it opens the exchange and hands
:meth:`GatewayViews.projections` to it (``Exchange.open(..., views=...)``): the engine then
restores them from its newest snapshot, replays the journal's tail into them, and from then
on delivers every durable record to them. The hub takes the same object and reads them.

All five are in memory and snapshotted (their state travels in the engine's snapshots):

* ``tracker`` (:class:`~exchange.gateway.member.orders.OrderTracker`): orders, client
  order ids, execution reports (private messages);
* ``market_data`` (:class:`~exchange.gateway.member.market_data.MarketData`): the L2 book,
  trades and instrument status (public messages);
* ``alerts`` (:class:`~exchange.gateway.operator.alerts.Alerts`): the regulator's alerts;
* ``metrics`` (:class:`~exchange.gateway.operator.metrics.Metrics`): the stream's counters;
* ``guards`` (:class:`~exchange.gateway.guards.SessionGuards`): each member's latest journalled
  session guard (cancel-on-disconnect, dead-man period), which the hub reads at start-up to
  cancel the orders of guarded members who do not come back (see :mod:`exchange.gateway.hub`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence

from exchange.gateway.guards import SessionGuards
from exchange.gateway.member.market_data import DEFAULT_LEVELS, MarketData
from exchange.gateway.member.orders import OrderTracker
from exchange.gateway.operator.alerts import MAX_ALERTS, Alerts
from exchange.gateway.operator.metrics import Metrics


@dataclass
class GatewayViews:
    tracker: OrderTracker
    market_data: MarketData
    alerts: Alerts = field(default_factory=Alerts)
    metrics: Metrics = field(default_factory=Metrics)
    guards: SessionGuards = field(default_factory=SessionGuards)

    @classmethod
    def build(cls, symbols: Sequence[str], levels: int = DEFAULT_LEVELS, max_alerts: int = MAX_ALERTS) -> GatewayViews:
        return cls(OrderTracker(), MarketData(symbols, levels), Alerts(max_alerts), Metrics(), SessionGuards())

    def projections(self) -> list:
        """The five, for ``Exchange.open(..., views=...)``."""
        return [self.tracker, self.market_data, self.alerts, self.metrics, self.guards]

    @property
    def restored_seq(self) -> int:
        """Where the tracker was restored from a snapshot (0: replayed from the start)."""
        return self.tracker.restored_seq
