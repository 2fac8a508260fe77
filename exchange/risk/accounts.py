"""Accounts: cash and allowances, available, reserved and owed, to the fen and tonne.

An account is a member's or one of the house's (``AccountKind``): the adjustment reserve, the
buy-back fund, the auction proceeds and the exchange's fees are accounts like a member's, so
that conservation counts every fen and tonne wherever it sits. Only member accounts trade on
the book: house accounts live apart from the members (``Ledger.house``), under ids with a
``house:`` prefix that no command's member id can match (``MemberId`` allows no colon), so no
order, deposit or withdrawal can name one.

Money and allowances move in two phases (``exchange.risk.holds``). Accepting a buy holds
price x quantity of cash; accepting a sell holds the allowances; what is held shows here as
``reserved``. A fill turns reservations into the day's
**obligations**, signed per asset: positive is what the member holds now and delivers at
settlement, negative what it will receive and has already been credited with (as locked
allowances, pending cash, or, when sale proceeds are usable the same day, available cash).
Every trade adds +x to one member and -x to the other, so obligations sum to zero over the
market, and per asset

    sum over members of (available + reserved + locked/pending + obligation)

changes only by deposits, withdrawals and holdings loaded from the registry (later: issuance
into the reserve and cancellation). The tests check exactly that after every command, over
member and house accounts, and that the reserved figures equal the sum of the open holds.

Rolling into a new trading day assumes the previous day settled (the clearing work reconciles
that against the registry): obligations are discharged, pending proceeds become available,
and bought allowances unlock once the holding period (T+1 by default) has passed.
"""

from __future__ import annotations

from collections import deque

import msgspec

from exchange.model.enums import AccountKind, MemberKind, MemberStatus
from exchange.model.events import LargeHolderThresholdCrossed
from exchange.risk.limits import RiskLimits


# What a deposit or withdrawal under a reference did: (withdrawal, amount_fen, available_fen
# after it). A plain tuple: a member may have thousands, so each costs as little as it can.
FundsOutcome = tuple[bool, int, int]


class Holding(msgspec.Struct, gc=False):
    """One member's allowances of one instrument, in tonnes."""

    available_t: int = 0  # settled, sellable
    reserved_t: int = 0  # held: the sum of the open holds of this instrument (sell orders ...)
    locked_t: int = 0  # bought within the holding period: owned, not yet sellable
    obligation_t: int = 0  # + sold today, to deliver; - bought today, to receive

    def total(self) -> int:
        return self.available_t + self.reserved_t + self.locked_t + self.obligation_t


class Account:
    """One account: identity, status, money, allowances, open orders and rate budget.

    ``member_id`` is the account's id (a member id, or a ``house:`` id for the house's own
    accounts); ``kind`` is the member's kind, None for a house account."""

    __slots__ = (
        "member_id", "kind", "account_kind", "annual_allocation_t", "linked_group", "status", "killed",
        "cash_available_fen", "cash_reserved_fen", "cash_pending_fen", "cash_obligation_fen",
        "holdings", "unlocks", "open_orders", "pending_buy_t", "position_t",
        "limits", "tokens", "tokens_ts_ns", "large_holder", "position_limit_t", "large_holder_t", "owner",
        "references",
    )

    def __init__(
        self,
        member_id: str,
        kind: MemberKind | None,
        annual_allocation_t: int,
        linked_group: str,
        position_limit_t: int,
        account_kind: AccountKind = AccountKind.MEMBER,
    ) -> None:
        assert (kind is None) == (account_kind != AccountKind.MEMBER), "a member account needs a member kind"
        self.member_id = member_id
        self.kind = kind
        self.account_kind = account_kind
        self.annual_allocation_t = annual_allocation_t
        self.linked_group = linked_group
        self.position_limit_t = position_limit_t
        self.large_holder_t = position_limit_t  # the reporting threshold, set by the gate
        # Whose orders may not meet (self-trade prevention). Group keys carry a prefix no member
        # id can contain, so a group named like a member never links that member.
        self.owner = f"group:{linked_group}" if linked_group else member_id
        self.status = MemberStatus.ACTIVE
        self.killed = False
        self.cash_available_fen = 0
        self.cash_reserved_fen = 0  # held: the sum of this account's open cash holds
        self.cash_pending_fen = 0  # sale proceeds not usable until settlement (when so configured)
        self.cash_obligation_fen = 0  # + to pay at settlement, - to receive and already credited
        self.holdings: dict[str, Holding] = {}
        # Bought allowances waiting out the holding period: (trading day number, symbol, qty).
        self.unlocks: deque[tuple[int, str, int]] = deque()
        self.open_orders = 0
        self.pending_buy_t = 0  # open quantity of buy orders in allowances
        self.position_t = 0  # allowances owned or bought, plus pending buys (all vintages)
        self.limits: RiskLimits | None = None  # this member's own limits, else the market's
        self.tokens = -1  # order-rate bucket, in nano-orders; -1: full, not yet used
        self.tokens_ts_ns = 0
        self.large_holder = False  # at or above the reporting threshold
        # Every deposit and withdrawal reference the member used, in journal order, with the
        # outcome to repeat to a retry (see ``exchange.risk.members``).
        self.references: dict[str, FundsOutcome] = {}

    def holding(self, symbol: str) -> Holding:
        found = self.holdings.get(symbol)
        if found is None:
            found = self.holdings[symbol] = Holding()
        return found

    def cash_total(self) -> int:
        return self.cash_available_fen + self.cash_reserved_fen + self.cash_pending_fen + self.cash_obligation_fen


# The house's own accounts, one of each kind, in this (fixed) order.
HOUSE_ACCOUNTS: dict[AccountKind, str] = {
    AccountKind.ADJUSTMENT_RESERVE: "house:adjustment-reserve",
    AccountKind.BUYBACK_FUND: "house:buyback-fund",
    AccountKind.AUCTION_PROCEEDS: "house:auction-proceeds",
    AccountKind.EXCHANGE_FEES: "house:exchange-fees",
}


def house_account(kind: AccountKind) -> Account:
    return Account(HOUSE_ACCOUNTS[kind], None, 0, "", 0, kind)


def watch_position(account: Account, reports: list[LargeHolderThresholdCrossed] | None) -> None:
    """Report a member reaching the large-holder threshold; re-arm when it falls below.
    ``reports`` None: only re-arm (a fall cannot cross upwards)."""
    if account.position_t < account.large_holder_t:
        account.large_holder = False
    elif not account.large_holder and reports is not None:
        account.large_holder = True
        reports.append(LargeHolderThresholdCrossed(
            account.member_id, account.position_t, account.large_holder_t, account.position_limit_t
        ))
