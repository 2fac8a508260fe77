"""Member administration: admission, measures, the kill switch, money in and out, holdings
loaded from the registry, and the roll of every account from one trading day into the next.

Changing a status does not cancel resting orders; the kill switch does (the core cancels
them on every book), and refuses new orders until the member is restored to ACTIVE. A
FROZEN member may not withdraw.

A withdrawal takes settled cash only: at most what is available *and* at most the account's
cash total (available, held, pending and the day's obligation together), which trades do not
change until settlement moves the money. Sale proceeds are usable for buying the same day (the
market rules) but are paid out only once settled: the cash ledger holds them only then, and a
withdrawal of them before would be refused by the ledger after the exchange had accepted it
(the clearing projection stopped on exactly that: reject 224 now, before anything moves).

Every command here names a member; the house accounts are never reachable by them (their
``house:`` ids are not valid member ids), and an id that is not registered is refused with
``UNKNOWN_MEMBER``.

Deposit and withdrawal references (*decisions*). A clearing house that loses the answer to a
deposit sends it again; the reference it gives each payment makes the retry harmless:

* References are per member, and deposits and withdrawals share them: a reference names one
  movement of that member's money. Another member may use the same text.
* A known reference with the same direction and amount is answered with ``FundsRetried``,
  which repeats the first outcome (the amount and what it left available) and moves nothing;
  the rules are not weighed again. Another amount or direction is ``REFERENCE_REUSED``.
* Only a movement that happened takes its reference. A refused one (not positive, frozen,
  more than is available) moved nothing, so nothing can move twice: the clearing house may
  fix the cause and send the same instruction again under its reference.
* References are kept forever (simplest, and deterministic: no clock or window decides
  whether a retry is recognised) in each member's account, so they travel in the snapshots
  and the state hash. Memory, measured with 20-character references: about 240 bytes a
  reference in the running core (the dict slot, the key, a tuple of a bool and two ints) and
  37 in a snapshot; a thousand members with two movements a trading day for ten years is
  5 million references, about 1.2 GB in memory and 185 MB in each snapshot. A retention window (forget references older than N days, itself
  journalled) is the way out should that ever matter.
* An empty reference is no reference: such a deposit is never recognised as a retry (the
  journals written before references existed replay as they did).
"""

from __future__ import annotations

from collections.abc import Iterable

from exchange.model.commands import Deposit, LoadHolding, RegisterMember, SetMemberStatus, Withdraw
from exchange.model.enums import CommandName, MemberStatus, TradingPhase
from exchange.model.events import (
    CommandRejected,
    Event,
    FundsDeposited,
    FundsRetried,
    FundsWithdrawn,
    HeldPosition,
    HoldingLoaded,
    LargeHolderThresholdCrossed,
    MemberPosition,
    MemberRegistered,
    MemberStatusChanged,
)
from exchange.model.rejects import RejectReason
from exchange.risk.accounts import Account, Holding, watch_position
from exchange.risk.holds import Ledger
from exchange.risk.limits import RiskPolicy
from exchange.risk.market import MarketState

R = RejectReason
ACTIVE = MemberStatus.ACTIVE


class MemberDesk:
    def __init__(self, ledger: Ledger, market: MarketState, policy: RiskPolicy, positioned: Iterable[str]) -> None:
        self.ledger = ledger
        self.accounts = ledger.members
        self.market = market
        self.policy = policy
        self.positioned: dict[str, bool] = {symbol: True for symbol in sorted(positioned)}

    def register(self, cmd: RegisterMember) -> list[Event]:
        if cmd.member_id in self.accounts:
            return [CommandRejected(CommandName.REGISTER_MEMBER, R.MEMBER_ALREADY_REGISTERED, cmd.member_id)]
        assert self.ledger.account(cmd.member_id) is None, f"member id {cmd.member_id!r} names a house account"
        limit = self.policy.position_limit(cmd.kind, cmd.annual_allocation_t)
        account = Account(cmd.member_id, cmd.kind, cmd.annual_allocation_t, cmd.linked_group, limit)
        account.large_holder_t = self.policy.large_holder_threshold(limit)
        self.accounts[cmd.member_id] = account
        return [MemberRegistered(cmd.member_id, cmd.kind, cmd.annual_allocation_t, cmd.linked_group, limit)]

    def set_status(self, cmd: SetMemberStatus) -> list[Event]:
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return [CommandRejected(CommandName.SET_MEMBER_STATUS, R.UNKNOWN_MEMBER, cmd.member_id)]
        if account.status == cmd.status and not (cmd.status == ACTIVE and account.killed):
            return [CommandRejected(CommandName.SET_MEMBER_STATUS, R.STATUS_UNCHANGED, cmd.member_id)]
        account.status = cmd.status
        if cmd.status == ACTIVE:
            account.killed = False
        return [MemberStatusChanged(cmd.member_id, account.status, account.killed)]

    def kill(self, member_id: str) -> list[Event]:
        """Turn the kill switch on; the caller cancels the member's resting orders."""
        account = self.accounts.get(member_id)
        if account is None:
            return [CommandRejected(CommandName.KILL_SWITCH, R.UNKNOWN_MEMBER, member_id)]
        if account.killed:
            return [CommandRejected(CommandName.KILL_SWITCH, R.STATUS_UNCHANGED, member_id)]
        account.killed = True
        return [MemberStatusChanged(member_id, account.status, True)]

    def deposit(self, cmd: Deposit) -> list[Event]:
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return [CommandRejected(CommandName.DEPOSIT, R.UNKNOWN_MEMBER, cmd.member_id)]
        known = known_reference(account, CommandName.DEPOSIT, cmd.reference, cmd.amount_fen)
        if known is not None:
            return [known]
        if cmd.amount_fen <= 0:
            return [CommandRejected(CommandName.DEPOSIT, R.AMOUNT_NOT_POSITIVE, cmd.member_id)]
        account.cash_available_fen += cmd.amount_fen
        remember_reference(account, cmd.reference, False, cmd.amount_fen)
        return [FundsDeposited(cmd.member_id, cmd.amount_fen, account.cash_available_fen, cmd.reference)]

    def withdraw(self, cmd: Withdraw) -> list[Event]:
        account = self.accounts.get(cmd.member_id)
        if account is None:
            return [CommandRejected(CommandName.WITHDRAW, R.UNKNOWN_MEMBER, cmd.member_id)]
        known = known_reference(account, CommandName.WITHDRAW, cmd.reference, cmd.amount_fen)
        if known is not None:
            return [known]
        reason = None
        if cmd.amount_fen <= 0:
            reason = R.AMOUNT_NOT_POSITIVE
        elif account.status == MemberStatus.FROZEN:
            reason = R.MEMBER_FROZEN
        elif cmd.amount_fen > account.cash_available_fen:
            reason = R.INSUFFICIENT_AVAILABLE
        elif cmd.amount_fen > account.cash_total():
            reason = R.PROCEEDS_NOT_SETTLED
        if reason is not None:
            return [CommandRejected(CommandName.WITHDRAW, reason, cmd.member_id)]
        account.cash_available_fen -= cmd.amount_fen
        remember_reference(account, cmd.reference, True, cmd.amount_fen)
        return [FundsWithdrawn(cmd.member_id, cmd.amount_fen, account.cash_available_fen, cmd.reference)]

    def load_holding(self, cmd: LoadHolding) -> list[Event]:
        """The registry's settled holding replaces the exchange's view, before trading."""
        account = self.accounts.get(cmd.member_id)
        reason = None
        if account is None:
            reason = R.UNKNOWN_MEMBER
        elif self.market.phase not in (TradingPhase.PRE_OPEN, TradingPhase.POST_CLOSE):
            reason = R.HOLDING_LOAD_DURING_TRADING
        else:
            holding = account.holdings.get(cmd.instrument) or Holding()
            if cmd.qty_t < holding.reserved_t + holding.locked_t:
                reason = R.HOLDING_BELOW_COMMITTED
        if reason is not None:
            return [CommandRejected(CommandName.LOAD_HOLDING, reason, cmd.member_id)]
        assert account is not None
        holding = account.holding(cmd.instrument)
        change = cmd.qty_t - (holding.available_t + holding.reserved_t + holding.locked_t)
        holding.available_t += change
        events: list[Event] = [
            HoldingLoaded(cmd.member_id, cmd.instrument, cmd.qty_t, change)
        ]
        if self.positioned.get(cmd.instrument):
            account.position_t += change
            reports: list[LargeHolderThresholdCrossed] = []
            watch_position(account, reports)
            events.extend(reports)
        return events

    # -- the trading day ------------------------------------------------------------------

    def start_day(self) -> None:
        """Roll every account (members' and the house's) into a new day as if the previous
        one settled: obligations discharged, pending proceeds available, unlocks due."""
        day_number = self.market.day_number
        for account in self.ledger.all_accounts():
            account.cash_available_fen += account.cash_pending_fen
            account.cash_pending_fen = 0
            account.cash_obligation_fen = 0
            for holding in account.holdings.values():
                holding.obligation_t = 0
            while account.unlocks and account.unlocks[0][0] <= day_number:
                _, symbol, qty = account.unlocks.popleft()
                holding = account.holdings[symbol]
                holding.locked_t -= qty
                holding.available_t += qty

    def positions(self, trading_day: str) -> list[MemberPosition]:
        """Each member's closing position, sorted by member id, for settlement to post and
        reconcile against."""
        return [self._position(trading_day, self.accounts[member]) for member in sorted(self.accounts)]

    @staticmethod
    def _position(trading_day: str, account: Account) -> MemberPosition:
        holdings = [
            HeldPosition(symbol, holding.available_t + holding.reserved_t + holding.locked_t, holding.obligation_t)
            for symbol, holding in sorted(account.holdings.items())
        ]
        settled_cash = account.cash_available_fen + account.cash_reserved_fen + account.cash_pending_fen
        return MemberPosition(trading_day, account.member_id, settled_cash, account.cash_obligation_fen, holdings)


# -- deposit and withdrawal references ---------------------------------------------------------


def known_reference(account: Account, command: CommandName, reference: str, amount_fen: int) -> Event | None:
    """The answer to a reference the member already used, or None for a new one (or none).
    The rules were weighed when the reference was first used; a retry is not weighed again,
    so a frozen member's retried withdrawal still gets its first outcome, and moves nothing."""
    if not reference:
        return None
    outcome = account.references.get(reference)
    if outcome is None:
        return None
    withdrawal, first_amount_fen, available_fen = outcome
    if withdrawal != (command == CommandName.WITHDRAW) or first_amount_fen != amount_fen:
        return CommandRejected(command, R.REFERENCE_REUSED, account.member_id)
    return FundsRetried(command, account.member_id, reference, amount_fen, available_fen)


def remember_reference(account: Account, reference: str, withdrawal: bool, amount_fen: int) -> None:
    if reference:
        account.references[reference] = (withdrawal, amount_fen, account.cash_available_fen)
