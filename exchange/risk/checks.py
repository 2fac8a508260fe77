"""Pre-trade checks: nothing reaches a book unless it is backed and allowed.

``check_submit`` and ``check_amend`` run before the book sees an order, in this order, and
the first failure is the reject reason: the member (registered, status, kill switch); the
market and instrument (temporary closure, halt, continuous session); the order rate (a token
bucket on the engine's clock: every attempt spends a token, so a throttled member cannot
probe); the member's open-order count; the book's own validation (lot, size, tick, band);
the order value; cash for a buy or sellable allowances for a sell (no short sales, T+1); the
position limit. Cancels are never refused for risk: taking risk off is always allowed.

Member statuses: RESTRICTED may cancel and reduce (lower quantity at the same price);
SUSPENDED and FROZEN may only cancel, and FROZEN may not withdraw.

The checks only read the ledger and the market state, except for the rate bucket they
spend. Only member accounts are looked up: a house account (``house:`` ids) cannot trade.
The risk limits in force (the market's default and each member's own) live here too, as
``SetRiskLimits`` changes them.
"""

from __future__ import annotations

from typing import Protocol
from collections.abc import Iterable

import msgspec

from exchange.model.commands import AmendOrder, SetRiskLimits, SubmitOrder
from exchange.model.enums import CommandName, MemberStatus, Side, TradingPhase
from exchange.model.events import CommandRejected, Event, RiskLimitsChanged
from exchange.model.rejects import RejectReason
from exchange.risk.accounts import Account
from exchange.risk.holds import Ledger, allowance_shortfall
from exchange.risk.limits import LIMIT_MAXIMA, NANO, RiskLimits, take_token
from exchange.risk.market import MarketState

R = RejectReason
BUY = Side.BUY
ACTIVE = MemberStatus.ACTIVE
CONTINUOUS = TradingPhase.CONTINUOUS
STATUS_REASON = {
    MemberStatus.RESTRICTED: R.MEMBER_RESTRICTED,
    MemberStatus.SUSPENDED: R.MEMBER_SUSPENDED,
    MemberStatus.FROZEN: R.MEMBER_FROZEN,
}


class OrderValidator(Protocol):
    """What the checks ask of a book: the rooms stay independent (the engine composes them)."""

    def validate(self, cmd: SubmitOrder) -> tuple[RejectReason | None, int]: ...

    def validate_amend(self, cmd: AmendOrder) -> RejectReason | None: ...


class PreTradeChecks:
    def __init__(self, ledger: Ledger, market: MarketState, default_limits: RiskLimits, positioned: Iterable[str]) -> None:
        """``positioned``: the instruments the position limit counts (the allowances)."""
        self.accounts = ledger.members  # members only: house accounts never trade
        self.market = market
        self.default_limits = default_limits
        self.positioned: dict[str, bool] = {symbol: True for symbol in sorted(positioned)}

    def check_submit(self, ts_ns: int, cmd: SubmitOrder, book: OrderValidator) -> RejectReason | None:
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return R.UNKNOWN_MEMBER
        limits = account.limits or self.default_limits
        market = self.market
        # The usual case inline (an active member, an open market); the rest in _check_access.
        if (
            account.status == ACTIVE and not account.killed and not market.market_closed
            and market.phase == CONTINUOUS and not market.halted.get(cmd.instrument)
        ):
            # take_token, written out (it runs for every order): refill, cap, take one.
            capacity = limits.order_burst * NANO
            tokens = account.tokens
            if tokens < 0:
                tokens = capacity
            else:
                elapsed = ts_ns - account.tokens_ts_ns
                if elapsed > 0:
                    tokens += elapsed * limits.orders_per_second
                if tokens > capacity:
                    tokens = capacity
            account.tokens_ts_ns = ts_ns
            if tokens < NANO:
                account.tokens = tokens
                return R.THROTTLED
            account.tokens = tokens - NANO
        else:
            reason = self._check_access(ts_ns, account, cmd.instrument)
            if reason is not None:
                return reason
        if account.open_orders >= limits.max_open_orders:
            return R.TOO_MANY_OPEN_ORDERS
        reason, price = book.validate(cmd)
        if reason is not None:
            return reason
        qty = cmd.qty_t
        value = price * qty
        if value > limits.max_order_value_fen:
            return R.ORDER_VALUE_ABOVE_MAXIMUM
        if cmd.side == BUY:
            if value > account.cash_available_fen:
                return R.INSUFFICIENT_FUNDS
            if account.position_t + qty > account.position_limit_t and self.positioned.get(cmd.instrument):
                return R.POSITION_LIMIT
            return None
        return allowance_shortfall(account, cmd.instrument, qty)

    def check_amend(
        self, ts_ns: int, cmd: AmendOrder, before: tuple[Side, int, int] | None, book: OrderValidator
    ) -> RejectReason | None:
        """``before`` is the order's (side, price, open quantity), None when it is not open."""
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return R.UNKNOWN_MEMBER
        reducing = before is not None and cmd.price_fen == before[1] and cmd.qty_t < before[2]
        if account.status != ACTIVE and not (account.status == MemberStatus.RESTRICTED and reducing):
            return STATUS_REASON[account.status]
        reason = self._check_access(ts_ns, account, cmd.instrument, status_checked=True)
        if reason is not None or before is None:
            return reason  # an unknown order is the book's to refuse
        reason = book.validate_amend(cmd)
        if reason is not None:
            return reason
        side, price, qty = before
        limits = account.limits or self.default_limits
        if cmd.price_fen * cmd.qty_t > limits.max_order_value_fen:
            return R.ORDER_VALUE_ABOVE_MAXIMUM
        if side == BUY:
            extra_t = cmd.qty_t - qty if self.positioned.get(cmd.instrument) else 0
            return self._check_buy(account, cmd.price_fen * cmd.qty_t - price * qty, extra_t)
        return allowance_shortfall(account, cmd.instrument, cmd.qty_t - qty)

    def _check_access(
        self, ts_ns: int, account: Account, symbol: str, status_checked: bool = False
    ) -> RejectReason | None:
        if not status_checked and account.status != ACTIVE:
            return STATUS_REASON[account.status]
        if account.killed:
            return R.MEMBER_KILLED
        market = self.market
        if market.market_closed:
            return R.MARKET_CLOSED
        if market.halted.get(symbol):
            return R.INSTRUMENT_HALTED
        if market.phase != CONTINUOUS:
            return R.OUTSIDE_TRADING_HOURS
        tokens, allowed = take_token(account.tokens, account.tokens_ts_ns, ts_ns, account.limits or self.default_limits)
        account.tokens = tokens
        account.tokens_ts_ns = ts_ns
        return None if allowed else R.THROTTLED

    @staticmethod
    def _check_buy(account: Account, value_fen: int, qty: int) -> RejectReason | None:
        if value_fen > account.cash_available_fen:
            return R.INSUFFICIENT_FUNDS
        if qty > 0 and account.position_t + qty > account.position_limit_t:
            return R.POSITION_LIMIT
        return None

    # -- limits ---------------------------------------------------------------------------

    def set_limits(self, cmd: SetRiskLimits) -> list[Event]:
        changes = {
            name: value
            for name in ("max_order_value_fen", "orders_per_second", "order_burst", "max_open_orders")
            if (value := getattr(cmd, name)) is not None
        }
        subject = cmd.member_id or ""
        if any(value <= 0 for value in changes.values()):
            return [CommandRejected(CommandName.SET_RISK_LIMITS, R.AMOUNT_NOT_POSITIVE, subject)]
        if any(value > LIMIT_MAXIMA[name] for name, value in changes.items()):
            return [CommandRejected(CommandName.SET_RISK_LIMITS, R.LIMIT_OUT_OF_RANGE, subject)]
        if cmd.member_id is None:
            self.default_limits = limits = msgspec.structs.replace(self.default_limits, **changes)
        else:
            account = self.accounts.get(cmd.member_id)
            if account is None:
                return [CommandRejected(CommandName.SET_RISK_LIMITS, R.UNKNOWN_MEMBER, subject)]
            account.limits = limits = msgspec.structs.replace(account.limits or self.default_limits, **changes)
        return [RiskLimitsChanged(subject, limits.max_order_value_fen, limits.orders_per_second, limits.order_burst, limits.max_open_orders)]
