"""Risk parameters: the market's defaults (market-rules.md) and per-member overrides."""

from __future__ import annotations

import msgspec

from exchange.model.enums import MemberKind

NANO = 1_000_000_000  # the token bucket counts nano-orders so that refills stay integers


# Upper bounds that keep every derived figure below 2**63 (the token bucket holds
# order_burst x 10**9 nano-orders; a value x rate refill likewise).
LIMIT_MAXIMA = {
    "max_order_value_fen": 10**17,
    "orders_per_second": 10**9,
    "order_burst": 10**9,
    "max_open_orders": 10**9,
}


class RiskLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits that may differ per member and change intraday (``SetRiskLimits``). A member's
    own limits are a full set, copied from the default when first set: later changes of the
    default do not reach a member that has its own."""

    max_order_value_fen: int = 10_000_000_000  # 100 million CNY
    orders_per_second: int = 50
    order_burst: int = 100
    max_open_orders: int = 10_000


class RiskPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Market-wide rules that are configuration, not per-member limits."""

    position_limit_t: int = 1_000_000  # others; a covered entity adds its annual allocation
    large_holder_bps: int = 8_000  # report at 80 % of the limit
    holding_days: int = 1  # T+1: bought allowances are sellable this many trading days later
    same_day_proceeds: bool = True  # sale proceeds usable the same day
    limits: RiskLimits = msgspec.field(default_factory=RiskLimits)

    def position_limit(self, kind: MemberKind, annual_allocation_t: int) -> int:
        extra = annual_allocation_t if kind == MemberKind.COVERED else 0
        return self.position_limit_t + extra

    def large_holder_threshold(self, limit_t: int) -> int:
        return limit_t * self.large_holder_bps // 10_000


def take_token(tokens: int, last_ts_ns: int, ts_ns: int, limits: RiskLimits) -> tuple[int, bool]:
    """Refill a token bucket up to ``ts_ns`` and take one order from it.

    Returns the new count and whether the order may go. Integer arithmetic in nano-orders:
    ``orders_per_second`` tokens a second is exactly that many nano-orders a nanosecond.
    """
    capacity = limits.order_burst * NANO
    if tokens < 0:
        tokens = capacity
    else:
        tokens = min(capacity, tokens + max(ts_ns - last_ts_ns, 0) * limits.orders_per_second)
    if tokens < NANO:
        return tokens, False
    return tokens - NANO, True
