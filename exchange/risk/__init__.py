"""Member accounts and pre-trade risk: reservations, checks, limits, throttles, halts."""

from exchange.risk.accounts import Account, Holding
from exchange.risk.gate import RiskGate
from exchange.risk.limits import RiskLimits, RiskPolicy

__all__ = ["Account", "Holding", "RiskGate", "RiskLimits", "RiskPolicy"]
