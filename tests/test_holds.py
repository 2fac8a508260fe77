"""Unit tests of the two-phase hold API (exchange.risk.holds) and the house accounts."""

from __future__ import annotations

import pytest

from exchange.engine import ExchangeCore, decode_state, encode_state
from exchange.model import (
    AccountKind,
    Command,
    CommandRejected,
    Deposit,
    HoldKind,
    Instrument,
    InstrumentKind,
    MemberKind,
    OrderRejected,
    RegisterMember,
    RejectReason,
    SetTradingPhase,
    Side,
    StartDay,
    SubmitOrder,
    TradingPhase,
)
from exchange.risk import CASH, HOUSE_ACCOUNTS, Account, Ledger

SYMBOL = "CEA-2025"


def ledger_with_member(cash: int = 10_000, allowances: int = 100) -> tuple[Ledger, Account]:
    ledger = Ledger()
    account = Account("alice", MemberKind.VOLUNTARY, 0, "", 1_000_000)
    ledger.members["alice"] = account
    account.cash_available_fen = cash
    account.holding(SYMBOL).available_t = allowances
    return ledger, account


def balances(account: Account) -> tuple:
    h = account.holding(SYMBOL)
    return (
        account.cash_available_fen, account.cash_reserved_fen, account.cash_obligation_fen,
        h.available_t, h.reserved_t, h.obligation_t,
    )


def conserved(account: Account) -> tuple[int, int]:
    return account.cash_total(), account.holding(SYMBOL).total()


def test_hold_moves_available_to_reserved() -> None:
    ledger, alice = ledger_with_member()
    bids = ledger.holds[HoldKind.AUCTION_BID]
    bids.hold(7, alice, CASH, 3_000, price_fen=30)
    ledger.holds[HoldKind.BLOCK_QUOTE].hold(7, alice, SYMBOL, 40)  # same int id, another kind
    assert balances(alice) == (7_000, 3_000, 0, 60, 40, 0)
    bid = bids.get(7)
    assert 7 in bids and len(bids) == 1 and bid is not None and bid.amount == 3_000
    assert conserved(alice) == (10_000, 100)


def test_commit_in_full_closes_the_hold() -> None:
    ledger, alice = ledger_with_member()
    quotes = ledger.holds[HoldKind.BLOCK_QUOTE]
    quotes.hold(1, alice, SYMBOL, 40)
    hold = quotes.commit(1, 40)
    assert hold.amount == 0 and 1 not in quotes
    assert balances(alice) == (10_000, 0, 0, 60, 0, 40)  # owed at settlement
    assert conserved(alice) == (10_000, 100)


def test_partial_commits_then_release_the_rest() -> None:
    ledger, alice = ledger_with_member()
    bids = ledger.holds[HoldKind.AUCTION_BID]
    bids.hold(3, alice, CASH, 5_000, price_fen=50)  # 100 t at 50.00
    bids.commit_qty(3, 40, 45)  # 40 t clear at 45: 2,000 leave the hold, 1,800 paid
    bid = bids.get(3)
    assert bid is not None and bid.amount == 3_000
    assert balances(alice) == (5_200, 3_000, 1_800, 100, 0, 0)
    bids.commit(3, 1_000, paid=900)
    assert balances(alice) == (5_300, 2_000, 2_700, 100, 0, 0)
    released = bids.release(3)
    assert released.amount == 2_000 and 3 not in bids
    assert balances(alice) == (7_300, 0, 2_700, 100, 0, 0)
    assert conserved(alice) == (10_000, 100)


def test_adjust_up_and_down() -> None:
    ledger, alice = ledger_with_member()
    orders = ledger.orders
    orders.hold(9, alice, CASH, 1_000, 10)
    orders.adjust(9, 4_000, 20)
    adjusted = orders.get(9)
    assert adjusted is not None and (adjusted.amount, adjusted.price_fen, alice.cash_reserved_fen) == (4_000, 20, 4_000)
    orders.adjust(9, 500)
    assert balances(alice)[:2] == (9_500, 500)
    with pytest.raises(AssertionError, match="without the cash"):
        orders.adjust(9, 20_000)


def test_release_returns_everything_and_double_release_is_a_bug() -> None:
    ledger, alice = ledger_with_member()
    offers = ledger.holds[HoldKind.BUYBACK_OFFER]
    offers.hold(5, alice, SYMBOL, 30)
    offers.release(5)
    assert balances(alice) == (10_000, 0, 0, 100, 0, 0)
    with pytest.raises(AssertionError, match="release of unknown or already closed hold BUYBACK_OFFER 5"):
        offers.release(5)


def test_unknown_hold_ids_fail_an_assertion_not_a_key_error() -> None:
    ledger, alice = ledger_with_member()
    orders = ledger.orders
    for operation in (lambda: orders.release(42), lambda: orders.commit(42, 1), lambda: orders.adjust(42, 1),
                      lambda: orders.commit_qty(42, 1, 1)):
        with pytest.raises(AssertionError, match="unknown"):
            operation()
    orders.hold(1, alice, SYMBOL, 10)
    orders.commit(1, 10)
    with pytest.raises(AssertionError, match="unknown"):
        orders.release(1)  # committed to zero: closed


def test_misuse_is_refused_before_it_changes_anything() -> None:
    ledger, alice = ledger_with_member()
    orders = ledger.orders
    before = balances(alice)
    with pytest.raises(AssertionError, match="lacks the cash"):
        orders.hold(1, alice, CASH, 10_001)
    with pytest.raises(AssertionError, match="lacks the"):
        orders.hold(1, alice, "CCER", 1)
    with pytest.raises(AssertionError):
        orders.hold(1, alice, SYMBOL, 0)
    assert balances(alice) == before and not len(orders)
    orders.hold(1, alice, SYMBOL, 10)
    with pytest.raises(AssertionError, match="already open"):
        orders.hold(1, alice, SYMBOL, 10)
    with pytest.raises(AssertionError, match="commit of 11"):
        orders.commit(1, 11)
    with pytest.raises(AssertionError, match="paid"):
        orders.commit(1, 5, paid=6)
    unchanged = orders.get(1)
    assert unchanged is not None and unchanged.amount == 10


def test_check_hold_answers_with_numbered_reasons() -> None:
    ledger, alice = ledger_with_member(cash=100, allowances=10)
    alice.holding(SYMBOL).locked_t = 5
    check = ledger.check_hold
    assert check(alice, CASH, 100) is None
    assert check(alice, CASH, 101) == RejectReason.INSUFFICIENT_FUNDS
    assert check(alice, CASH, 0) == RejectReason.AMOUNT_NOT_POSITIVE
    assert check(alice, SYMBOL, 10) is None
    assert check(alice, SYMBOL, 15) == RejectReason.ALLOWANCES_NOT_YET_SELLABLE
    assert check(alice, SYMBOL, 16) == RejectReason.INSUFFICIENT_ALLOWANCES
    assert check(alice, "CCER", 1) == RejectReason.INSUFFICIENT_ALLOWANCES


def test_house_accounts_are_accounts_that_cannot_trade() -> None:
    ledger = Ledger()
    assert list(ledger.house) == list(HOUSE_ACCOUNTS.values())
    reserve = ledger.house_account(AccountKind.ADJUSTMENT_RESERVE)
    assert reserve.account_kind == AccountKind.ADJUSTMENT_RESERVE and reserve.kind is None
    assert ledger.account(reserve.member_id) is reserve and ledger.account("nobody") is None
    # A house account holds like any other (an auction sells from the reserve).
    reserve.holding(SYMBOL).available_t = 1_000
    ledger.holds[HoldKind.AUCTION_BID].hold(1, reserve, SYMBOL, 600)
    assert reserve.holding(SYMBOL).reserved_t == 600

    core = ExchangeCore([Instrument(SYMBOL, InstrumentKind.ALLOWANCE, 1_000, vintage=2025)])
    # No command can name a house account: not a valid member id, and not a member.
    setup: list[Command] = [RegisterMember("alice", MemberKind.VOLUNTARY), StartDay("2026-11-23"), SetTradingPhase(TradingPhase.CONTINUOUS)]
    for seq, command in enumerate(setup, 1):
        core.apply(seq, seq, command)
    [order_rejected] = core.apply(4, 4, SubmitOrder("house:adjustment-reserve", SYMBOL, Side.SELL, 1, 1_000))
    assert isinstance(order_rejected, OrderRejected) and order_rejected.reason == RejectReason.UNKNOWN_MEMBER
    [deposit_rejected] = core.apply(5, 5, Deposit("house:buyback-fund", 5))
    assert isinstance(deposit_rejected, CommandRejected) and deposit_rejected.reason == RejectReason.UNKNOWN_MEMBER
    assert set(core.risk.accounts) == {"alice"}


def test_holds_and_house_accounts_round_trip_through_a_snapshot() -> None:
    instruments = [Instrument(SYMBOL, InstrumentKind.ALLOWANCE, 1_000, vintage=2025)]
    core = ExchangeCore(instruments)
    core.apply(1, 1, RegisterMember("alice", MemberKind.VOLUNTARY))
    core.apply(2, 2, Deposit("alice", 10_000))
    ledger = core.risk.ledger
    alice = ledger.members["alice"]
    ledger.holds[HoldKind.BLOCK_QUOTE].hold(11, alice, CASH, 2_500, 25)
    ledger.house_account(AccountKind.EXCHANGE_FEES).cash_available_fen = 0
    state = core.state()
    fresh = ExchangeCore(instruments)
    fresh.restore(decode_state(encode_state(state)))
    assert fresh.state_hash() == core.state_hash()
    hold = fresh.risk.ledger.holds[HoldKind.BLOCK_QUOTE].get(11)
    assert hold is not None and hold.account is fresh.risk.accounts["alice"] and (hold.amount, hold.price_fen) == (2_500, 25)
    fresh.risk.ledger.holds[HoldKind.BLOCK_QUOTE].release(11)
    assert fresh.risk.accounts["alice"].cash_available_fen == 10_000
