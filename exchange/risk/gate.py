"""The risk gate: nothing reaches a book unless it is backed and allowed.

``check_submit`` and ``check_amend`` run before the book sees an order, in this order, and
the first failure is the reject reason: the member (registered, status, kill switch); the
market and instrument (temporary closure, halt, continuous session); the order rate (a token
bucket on the engine's clock: every attempt spends a token, so a throttled member cannot
probe); the member's open-order count; the book's own validation (lot, size, tick, band);
the order value; cash for a buy or sellable allowances for a sell (no short sales, T+1); the
position limit. Cancels are never refused for risk: taking risk off is always allowed.

``apply`` then books what the order book did, from its events: reservations at acceptance,
obligations at each fill (with the buyer's price improvement released), releases at cancel
and expiry. It returns any report-only events (a member crossing the large-holder threshold).

Member statuses: RESTRICTED may cancel and reduce (lower quantity at the same price);
SUSPENDED and FROZEN may only cancel, and FROZEN may not withdraw. Changing a status does not
cancel resting orders; the kill switch does, and refuses new orders until the member is
restored to ACTIVE.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import msgspec

from exchange.model.commands import (
    AmendOrder,
    Deposit,
    LoadHolding,
    RegisterMember,
    SetMemberStatus,
    SetRiskLimits,
    SubmitOrder,
    Withdraw,
)
from exchange.model.enums import MemberStatus, Side, TradingPhase
from exchange.model.events import (
    CommandRejected,
    InstrumentStatusChanged,
    MarketStatusChanged,
    TradingPhaseChanged,
    FundsDeposited,
    FundsWithdrawn,
    HeldPosition,
    HoldingLoaded,
    LargeHolderThresholdCrossed,
    MemberPosition,
    MemberRegistered,
    MemberStatusChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    RiskLimitsChanged,
)
from exchange.model.rejects import RejectReason
from exchange.risk.accounts import Account, Holding
from exchange.risk.limits import LIMIT_MAXIMA, RiskLimits, RiskPolicy, take_token
from exchange.risk.state import RiskState, account_state, restore_account

R = RejectReason
BUY = Side.BUY
ACTIVE = MemberStatus.ACTIVE
CONTINUOUS = TradingPhase.CONTINUOUS
_NEXT_PHASES = {
    TradingPhase.PRE_OPEN: (TradingPhase.CONTINUOUS, TradingPhase.POST_CLOSE),
    TradingPhase.CONTINUOUS: (TradingPhase.BREAK, TradingPhase.POST_CLOSE),
    TradingPhase.BREAK: (TradingPhase.CONTINUOUS, TradingPhase.POST_CLOSE),
    TradingPhase.POST_CLOSE: (),
}
_STATUS_REASON = {
    MemberStatus.RESTRICTED: R.MEMBER_RESTRICTED,
    MemberStatus.SUSPENDED: R.MEMBER_SUSPENDED,
    MemberStatus.FROZEN: R.MEMBER_FROZEN,
}


class OrderValidator(Protocol):
    """What the gate asks of a book: the rooms stay independent (the engine composes them)."""

    def validate(self, cmd: SubmitOrder) -> tuple[RejectReason | None, int]: ...

    def validate_amend(self, cmd: AmendOrder) -> RejectReason | None: ...


class RiskGate:
    def __init__(self, policy: RiskPolicy, position_symbols: Iterable[str] = ()) -> None:
        """``position_symbols``: the instruments the position limit counts (the allowances;
        certified reductions are another product and do not count)."""
        self.policy = policy
        self.positioned: dict[str, bool] = {symbol: True for symbol in sorted(position_symbols)}
        self.default_limits: RiskLimits = policy.limits
        self.accounts: dict[str, Account] = {}
        self.halted: dict[str, bool] = {}  # symbol -> halted; absent means trading
        self.market_closed = False
        self.phase = TradingPhase.POST_CLOSE
        self.day_number = 0  # trading days started; the holding period counts these

    # -- pre-trade checks -------------------------------------------------------------------

    def check_submit(self, ts_ns: int, cmd: SubmitOrder, book: OrderValidator) -> RejectReason | None:
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return R.UNKNOWN_MEMBER
        limits = account.limits or self.default_limits
        # The usual case inline (an active member, an open market); the rest in _check_access.
        if (
            account.status == ACTIVE and not account.killed and not self.market_closed
            and self.phase == CONTINUOUS and not self.halted.get(cmd.instrument)
        ):
            tokens, allowed = take_token(account.tokens, account.tokens_ts_ns, ts_ns, limits)
            account.tokens = tokens
            account.tokens_ts_ns = ts_ns
            if not allowed:
                return R.THROTTLED
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
        return self._check_sell(account, cmd.instrument, qty)

    def check_amend(
        self, ts_ns: int, cmd: AmendOrder, before: tuple[Side, int, int] | None, book: OrderValidator
    ) -> RejectReason | None:
        """``before`` is the order's (side, price, open quantity), None when it is not open."""
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return R.UNKNOWN_MEMBER
        reducing = before is not None and cmd.price_fen == before[1] and cmd.qty_t < before[2]
        if account.status != ACTIVE and not (account.status == MemberStatus.RESTRICTED and reducing):
            return _STATUS_REASON[account.status]
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
        return self._check_sell(account, cmd.instrument, cmd.qty_t - qty)

    def _check_access(
        self, ts_ns: int, account: Account, symbol: str, status_checked: bool = False
    ) -> RejectReason | None:
        if not status_checked and account.status != ACTIVE:
            return _STATUS_REASON[account.status]
        if account.killed:
            return R.MEMBER_KILLED
        if self.market_closed:
            return R.MARKET_CLOSED
        if self.halted.get(symbol):
            return R.INSTRUMENT_HALTED
        if self.phase != CONTINUOUS:
            return R.OUTSIDE_TRADING_HOURS
        tokens, allowed = take_token(account.tokens, account.tokens_ts_ns, ts_ns, account.limits or self.default_limits)
        account.tokens = tokens
        account.tokens_ts_ns = ts_ns
        return None if allowed else R.THROTTLED

    def _check_buy(self, account: Account, value_fen: int, qty: int) -> RejectReason | None:
        if value_fen > account.cash_available_fen:
            return R.INSUFFICIENT_FUNDS
        if qty > 0 and account.position_t + qty > account.position_limit_t:
            return R.POSITION_LIMIT
        return None

    def _check_sell(self, account: Account, symbol: str, qty: int) -> RejectReason | None:
        holding = account.holdings.get(symbol)
        available = holding.available_t if holding is not None else 0
        if qty <= available:
            return None
        if holding is not None and qty <= available + holding.locked_t:
            return R.ALLOWANCES_NOT_YET_SELLABLE
        return R.INSUFFICIENT_ALLOWANCES

    # -- booking what the book did --------------------------------------------------------

    def apply(self, events: list, amended: tuple[Side, int, int] | None = None) -> list:
        """Book the order book's events into the accounts; return report-only events."""
        reports: list = []
        accounts = self.accounts
        for event in events:
            kind = type(event)
            if kind is OrderFilled:
                self._fill(event)
            elif kind is OrderAccepted:
                self._reserve(accounts[event.member_id], event, reports)
            elif kind is OrderCancelled or kind is OrderExpired:
                self._release(accounts[event.member_id], event.order_id, event.instrument, event.qty_t)
            elif kind is OrderAmended:
                assert amended is not None
                self._re_reserve(accounts[event.member_id], event, amended, reports)
        return reports

    def _reserve(self, account: Account, event: OrderAccepted, reports: list) -> None:
        account.open_orders += 1
        qty = event.qty_t
        if event.side == BUY:
            value = event.price_fen * qty
            account.cash_available_fen -= value
            account.cash_reserved_fen += value
            account.buy_limits[event.order_id] = event.price_fen
            if self.positioned.get(event.instrument):
                account.pending_buy_t += qty
                account.position_t += qty
                if account.position_t >= account.large_holder_t:
                    self._watch_position(account, reports)
        else:
            holding = account.holdings[event.instrument]
            holding.available_t -= qty
            holding.reserved_t += qty
        assert account.cash_available_fen >= 0, "a buy was accepted without the cash"

    def _fill(self, event: OrderFilled) -> None:
        qty = event.qty_t
        value = event.price_fen * qty
        buyer = self.accounts[event.buy_member_id]
        limit = buyer.buy_limits[event.buy_order_id]
        buyer.cash_reserved_fen -= limit * qty
        buyer.cash_available_fen += limit * qty - value  # the price improvement comes back
        buyer.cash_obligation_fen += value
        positioned = self.positioned.get(event.instrument, False)
        if positioned:
            buyer.pending_buy_t -= qty  # pending becomes owned: the position stays
        bought = buyer.holding(event.instrument)
        bought.locked_t += qty
        bought.obligation_t -= qty
        self._lock_until(buyer, event.instrument, qty)
        if not event.buy_leaves_t:
            del buyer.buy_limits[event.buy_order_id]
            buyer.open_orders -= 1
        seller = self.accounts[event.sell_member_id]
        sold = seller.holdings[event.instrument]
        sold.reserved_t -= qty
        sold.obligation_t += qty
        if positioned:
            seller.position_t -= qty
        seller.cash_obligation_fen -= value
        if self.policy.same_day_proceeds:
            seller.cash_available_fen += value
        else:
            seller.cash_pending_fen += value
        if not event.sell_leaves_t:
            seller.open_orders -= 1
        if seller.large_holder:
            self._watch_position(seller, None)

    def _lock_until(self, account: Account, symbol: str, qty: int) -> None:
        """Bought allowances unlock once ``holding_days`` trading days have passed."""
        unlock_day = self.day_number + self.policy.holding_days
        unlocks = account.unlocks
        if unlocks and unlocks[-1][0] == unlock_day and unlocks[-1][1] == symbol:
            unlocks[-1] = (unlock_day, symbol, unlocks[-1][2] + qty)
        else:
            unlocks.append((unlock_day, symbol, qty))

    def _release(self, account: Account, order_id: int, symbol: str, qty: int) -> None:
        account.open_orders -= 1
        limit = account.buy_limits.pop(order_id, None)
        if limit is not None:
            account.cash_reserved_fen -= limit * qty
            account.cash_available_fen += limit * qty
            if self.positioned.get(symbol):
                account.pending_buy_t -= qty
                account.position_t -= qty
                if account.large_holder:
                    self._watch_position(account, None)
        else:
            holding = account.holdings[symbol]
            holding.reserved_t -= qty
            holding.available_t += qty

    def _re_reserve(self, account: Account, event: OrderAmended, before: tuple[Side, int, int], reports: list) -> None:
        side, price, qty = before
        if side == BUY:
            change = event.price_fen * event.qty_t - price * qty
            account.cash_available_fen -= change
            account.cash_reserved_fen += change
            account.buy_limits[event.order_id] = event.price_fen
            if self.positioned.get(event.instrument):
                account.pending_buy_t += event.qty_t - qty
                account.position_t += event.qty_t - qty
                self._watch_position(account, reports)
            assert account.cash_available_fen >= 0, "an amend was accepted without the cash"
        else:
            holding = account.holdings[event.instrument]
            holding.available_t -= event.qty_t - qty
            holding.reserved_t += event.qty_t - qty
            assert holding.available_t >= 0, "an amend was accepted without the allowances"

    def _watch_position(self, account: Account, reports: list | None) -> None:
        """Report a member reaching the large-holder threshold; re-arm when it falls below."""
        if account.position_t < account.large_holder_t:
            account.large_holder = False
        elif not account.large_holder and reports is not None:
            account.large_holder = True
            reports.append(LargeHolderThresholdCrossed(
                account.member_id, account.position_t, account.large_holder_t, account.position_limit_t
            ))

    # -- the trading day ------------------------------------------------------------------

    def start_day(self) -> None:
        """Roll every account into a new day as if the previous one settled."""
        self.day_number += 1
        self.phase = TradingPhase.PRE_OPEN
        for account in self.accounts.values():
            account.cash_available_fen += account.cash_pending_fen
            account.cash_pending_fen = 0
            account.cash_obligation_fen = 0
            for holding in account.holdings.values():
                holding.obligation_t = 0
            while account.unlocks and account.unlocks[0][0] <= self.day_number:
                _, symbol, qty = account.unlocks.popleft()
                holding = account.holdings[symbol]
                holding.locked_t -= qty
                holding.available_t += qty

    # -- members and money ----------------------------------------------------------------

    def register(self, cmd: RegisterMember) -> list:
        if cmd.member_id in self.accounts:
            return [CommandRejected("RegisterMember", R.MEMBER_ALREADY_REGISTERED, cmd.member_id)]
        limit = self.policy.position_limit(cmd.kind, cmd.annual_allocation_t)
        account = Account(cmd.member_id, cmd.kind, cmd.annual_allocation_t, cmd.linked_group, limit)
        account.large_holder_t = self.policy.large_holder_threshold(limit)
        self.accounts[cmd.member_id] = account
        return [MemberRegistered(cmd.member_id, cmd.kind, cmd.annual_allocation_t, cmd.linked_group, limit)]

    def set_status(self, cmd: SetMemberStatus) -> list:
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return [CommandRejected("SetMemberStatus", R.UNKNOWN_MEMBER, cmd.member_id)]
        if account.status == cmd.status and not (cmd.status == ACTIVE and account.killed):
            return [CommandRejected("SetMemberStatus", R.STATUS_UNCHANGED, cmd.member_id)]
        account.status = cmd.status
        if cmd.status == ACTIVE:
            account.killed = False
        return [MemberStatusChanged(cmd.member_id, account.status, account.killed)]

    def kill(self, member_id: str) -> list:
        """Turn the kill switch on; the caller cancels the member's resting orders."""
        account = self.accounts.get(member_id)
        if account is None:
            return [CommandRejected("KillSwitch", R.UNKNOWN_MEMBER, member_id)]
        if account.killed:
            return [CommandRejected("KillSwitch", R.STATUS_UNCHANGED, member_id)]
        account.killed = True
        return [MemberStatusChanged(member_id, account.status, True)]

    def deposit(self, cmd: Deposit) -> list:
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return [CommandRejected("Deposit", R.UNKNOWN_MEMBER, cmd.member_id)]
        if cmd.amount_fen <= 0:
            return [CommandRejected("Deposit", R.AMOUNT_NOT_POSITIVE, cmd.member_id)]
        account.cash_available_fen += cmd.amount_fen
        return [FundsDeposited(cmd.member_id, cmd.amount_fen, account.cash_available_fen)]

    def withdraw(self, cmd: Withdraw) -> list:
        account = self.accounts.get(cmd.member_id)
        reason = None
        if account is None:
            reason = R.UNKNOWN_MEMBER
        elif cmd.amount_fen <= 0:
            reason = R.AMOUNT_NOT_POSITIVE
        elif account.status == MemberStatus.FROZEN:
            reason = R.MEMBER_FROZEN
        elif cmd.amount_fen > account.cash_available_fen:
            reason = R.INSUFFICIENT_AVAILABLE
        if reason is not None:
            return [CommandRejected("Withdraw", reason, cmd.member_id)]
        assert account is not None
        account.cash_available_fen -= cmd.amount_fen
        return [FundsWithdrawn(cmd.member_id, cmd.amount_fen, account.cash_available_fen)]

    def load_holding(self, cmd: LoadHolding) -> list:
        """The registry's settled holding replaces the exchange's view, before trading."""
        account = self.accounts.get(cmd.member_id)
        reason = None
        if account is None:
            reason = R.UNKNOWN_MEMBER
        elif self.phase not in (TradingPhase.PRE_OPEN, TradingPhase.POST_CLOSE):
            reason = R.HOLDING_LOAD_DURING_TRADING
        else:
            holding = account.holdings.get(cmd.instrument) or Holding()
            if cmd.qty_t < holding.reserved_t + holding.locked_t:
                reason = R.HOLDING_BELOW_COMMITTED
        if reason is not None:
            return [CommandRejected("LoadHolding", reason, cmd.member_id)]
        assert account is not None
        holding = account.holding(cmd.instrument)
        change = cmd.qty_t - (holding.available_t + holding.reserved_t + holding.locked_t)
        holding.available_t += change
        reports: list = [HoldingLoaded(cmd.member_id, cmd.instrument, cmd.qty_t, change)]
        if self.positioned.get(cmd.instrument):
            account.position_t += change
            self._watch_position(account, reports)
        return reports

    def set_limits(self, cmd: SetRiskLimits) -> list:
        changes = {
            name: value
            for name in ("max_order_value_fen", "orders_per_second", "order_burst", "max_open_orders")
            if (value := getattr(cmd, name)) is not None
        }
        subject = cmd.member_id or ""
        if any(value <= 0 for value in changes.values()):
            return [CommandRejected("SetRiskLimits", R.AMOUNT_NOT_POSITIVE, subject)]
        if any(value > LIMIT_MAXIMA[name] for name, value in changes.items()):
            return [CommandRejected("SetRiskLimits", R.LIMIT_OUT_OF_RANGE, subject)]
        if cmd.member_id is None:
            self.default_limits = limits = msgspec.structs.replace(self.default_limits, **changes)
        else:
            account = self.accounts.get(cmd.member_id)
            if account is None:
                return [CommandRejected("SetRiskLimits", R.UNKNOWN_MEMBER, subject)]
            account.limits = limits = msgspec.structs.replace(account.limits or self.default_limits, **changes)
        return [RiskLimitsChanged(subject, limits.max_order_value_fen, limits.orders_per_second, limits.order_burst, limits.max_open_orders)]

    # -- market controls --------------------------------------------------------------------

    def halt(self, symbol: str, halted: bool) -> list:
        """Halt or resume one instrument; resting orders stay, cancels are allowed."""
        command = "HaltInstrument" if halted else "ResumeInstrument"
        if bool(self.halted.get(symbol)) == halted:
            return [CommandRejected(command, R.STATUS_UNCHANGED, symbol)]
        if halted:
            self.halted[symbol] = True
        else:
            del self.halted[symbol]
        return [InstrumentStatusChanged(symbol, halted)]

    def close_market(self, closed: bool) -> list:
        if self.market_closed == closed:
            return [CommandRejected("CloseMarket" if closed else "ReopenMarket", R.STATUS_UNCHANGED)]
        self.market_closed = closed
        return [MarketStatusChanged(closed)]

    def set_phase(self, phase: TradingPhase, day_open: bool) -> list:
        """Follow the day's schedule: pre-open, continuous, break, continuous, post-close."""
        allowed = _NEXT_PHASES.get(self.phase, ()) if day_open else ()
        if phase not in allowed:
            return [CommandRejected("SetTradingPhase", R.PHASE_OUT_OF_ORDER, phase.name)]
        self.phase = phase
        return [TradingPhaseChanged(phase)]

    def end_day(self, trading_day: str) -> list:
        """Close the day: the phase goes to post-close, and each member's closing position
        is reported, sorted by member id, for settlement to post and reconcile against."""
        self.phase = TradingPhase.POST_CLOSE
        return [self._position(trading_day, self.accounts[member]) for member in sorted(self.accounts)]

    @staticmethod
    def _position(trading_day: str, account: Account) -> MemberPosition:
        holdings = [
            HeldPosition(symbol, holding.available_t + holding.reserved_t + holding.locked_t, holding.obligation_t)
            for symbol, holding in sorted(account.holdings.items())
        ]
        settled_cash = account.cash_available_fen + account.cash_reserved_fen + account.cash_pending_fen
        return MemberPosition(trading_day, account.member_id, settled_cash, account.cash_obligation_fen, holdings)

    # -- state ----------------------------------------------------------------------------

    def state(self) -> RiskState:
        return RiskState(
            self.day_number, self.phase, self.market_closed, sorted(self.halted), self.default_limits,
            [account_state(account) for account in self.accounts.values()],
        )

    def restore(self, state: RiskState) -> None:
        assert not self.accounts, "restore needs a fresh gate"
        self.day_number = state.day_number
        self.phase = state.phase
        self.market_closed = state.market_closed
        self.halted = {symbol: True for symbol in state.halted}
        self.default_limits = state.default_limits
        self.accounts = {a.member_id: restore_account(a) for a in state.accounts}
