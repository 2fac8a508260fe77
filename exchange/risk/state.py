"""The risk room's state as plain structs, for snapshots and the state hash.

Lists are sorted (member accounts in registration order, house accounts in their fixed
order, holdings by symbol, holds by kind then id) so the bytes never depend on hashing.
A hold names its account by id; restoring links it to the restored account.
"""

from __future__ import annotations

from collections import deque

import msgspec

from exchange.model.enums import AccountKind, HoldKind, MemberKind, MemberStatus, TradingPhase
from exchange.risk.accounts import Account, Holding
from exchange.risk.holds import Hold, Ledger
from exchange.risk.limits import RiskLimits


class AccountState(msgspec.Struct, array_like=True):
    member_id: str  # the account's id
    kind: MemberKind | None  # None for a house account
    account_kind: AccountKind
    annual_allocation_t: int
    linked_group: str
    status: MemberStatus
    killed: bool
    cash_available_fen: int
    cash_reserved_fen: int
    cash_pending_fen: int
    cash_obligation_fen: int
    holdings: list[tuple[str, Holding]]
    unlocks: list[tuple[int, str, int]]
    open_orders: int
    pending_buy_t: int
    position_t: int
    limits: RiskLimits | None
    tokens: int
    tokens_ts_ns: int
    large_holder: bool
    position_limit_t: int
    large_holder_t: int
    references: list[tuple[str, bool, int, int]] = []  # (reference, *FundsOutcome), in journal order


class HoldState(msgspec.Struct, array_like=True):
    kind: HoldKind
    hold_id: int
    account_id: str
    asset: str
    amount: int
    price_fen: int


class RiskState(msgspec.Struct, array_like=True):
    day_number: int
    phase: TradingPhase
    market_closed: bool
    halted: list[str]
    default_limits: RiskLimits
    accounts: list[AccountState]  # the members'
    house: list[AccountState]
    holds: list[HoldState]


def account_state(account: Account) -> AccountState:
    return AccountState(
        account.member_id, account.kind, account.account_kind, account.annual_allocation_t, account.linked_group,
        account.status, account.killed, account.cash_available_fen, account.cash_reserved_fen,
        account.cash_pending_fen, account.cash_obligation_fen,
        [(symbol, msgspec.structs.replace(h)) for symbol, h in sorted(account.holdings.items())],
        list(account.unlocks), account.open_orders,
        account.pending_buy_t, account.position_t, account.limits, account.tokens,
        account.tokens_ts_ns, account.large_holder, account.position_limit_t,
        account.large_holder_t,
        [(reference, *outcome) for reference, outcome in account.references.items()],
    )


def restore_account(state: AccountState) -> Account:
    account = Account(
        state.member_id, state.kind, state.annual_allocation_t, state.linked_group, state.position_limit_t,
        state.account_kind,
    )
    account.status = state.status
    account.killed = state.killed
    account.cash_available_fen = state.cash_available_fen
    account.cash_reserved_fen = state.cash_reserved_fen
    account.cash_pending_fen = state.cash_pending_fen
    account.cash_obligation_fen = state.cash_obligation_fen
    account.holdings = {symbol: msgspec.structs.replace(h) for symbol, h in state.holdings}
    account.unlocks = deque(state.unlocks)  # the entries are tuples: decoded as such, and immutable
    account.open_orders = state.open_orders
    account.pending_buy_t = state.pending_buy_t
    account.position_t = state.position_t
    account.limits = state.limits
    account.tokens = state.tokens
    account.tokens_ts_ns = state.tokens_ts_ns
    account.large_holder = state.large_holder
    account.large_holder_t = state.large_holder_t
    account.references = {reference: (withdrawal, amount, available) for reference, withdrawal, amount, available in state.references}
    return account


def holds_state(ledger: Ledger) -> list[HoldState]:
    return [
        HoldState(kind, hold_id, hold.account.member_id, hold.asset, hold.amount, hold.price_fen)
        for kind, book in sorted(ledger.holds.items())
        for hold_id, hold in sorted(book.held.items())
    ]


def restore_ledger(members: list[AccountState], house: list[AccountState], holds: list[HoldState]) -> Ledger:
    ledger = Ledger()
    assert [a.member_id for a in house] == list(ledger.house), "the snapshot lists other house accounts"
    ledger.members.update((a.member_id, restore_account(a)) for a in members)
    ledger.house.update((a.member_id, restore_account(a)) for a in house)
    for h in holds:
        account = ledger.account(h.account_id)
        assert account is not None, f"a hold on {h.account_id!r}, which is not an account"
        ledger.holds[h.kind].held[h.hold_id] = Hold(account, h.asset, h.amount, h.price_fen)
    return ledger
