"""Accounts and two-phase holds, pre-trade checks, limits, throttles and market state.

See ``exchange.risk.gate`` for how the modules divide the work."""

from exchange.risk.accounts import HOUSE_ACCOUNTS, Account, Holding
from exchange.risk.gate import RiskGate
from exchange.risk.holds import CASH, Hold, HoldBook, Ledger
from exchange.risk.limits import RiskLimits, RiskPolicy

__all__ = ["CASH", "HOUSE_ACCOUNTS", "Account", "Hold", "HoldBook", "Holding", "Ledger", "RiskGate", "RiskLimits", "RiskPolicy"]
