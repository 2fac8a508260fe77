"""The cash ledger: every refusal, idempotency, two phases, atomicity, and a stateful
differential test against a naive model made of dicts. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import TypeVar

import msgspec
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from exchange.clearing import ledger as ledger_module
from exchange.clearing.ledger import (
    AUCTION_PROCEEDS, BANK, BUYBACK_FUND, FEES, MAX_AMOUNT_FEN, SETTLEMENT,
    AlreadyResolved, BalanceOverflow, BatchTooLarge, CashLedger, IdConflict, InsufficientFunds, InvalidAccount,
    InvalidAmount, InvalidTransfer, LedgerError, NotPending, PostPending, SameAccount, StoredTransfer, Transfer,
    TransferCode, UnknownAccount, UnknownTransfer, VoidPending, cash_transfers, metadata,
)
from exchange.clearing.ledger.store import PostgresStore

MEMBERS = ("A", "B", "C")
HOUSE = (BANK, SETTLEMENT, FEES, AUCTION_PROCEEDS, BUYBACK_FUND)
E = TypeVar("E", bound=Exception)


def move(transfer_id: str, debit: str, credit: str, amount_fen: int, pending: bool = False, memo: str = "") -> Transfer:
    return Transfer(transfer_id, debit, credit, amount_fen, TransferCode.SETTLEMENT, memo, pending)


def deposit(transfer_id: str, member: str, amount_fen: int) -> Transfer:
    return Transfer(transfer_id, BANK, member, amount_fen, TransferCode.DEPOSIT)


def snapshot(ledger: CashLedger) -> tuple[list, list]:
    """Everything the ledger holds: accounts and transfer rows."""
    with ledger.engine.connect() as connection:
        query = sa.select(cash_transfers).order_by(cash_transfers.c.transfer_id)
        rows = [tuple(row) for row in connection.execute(query)]
    return ledger.accounts(), rows


def applied(ledger: CashLedger, operations: list) -> int:
    changes = ledger.apply(operations)
    assert ledger.verify() == []
    return changes


def refused(ledger: CashLedger, operations: list, error: type[E]) -> E:
    """The batch is refused with ``error`` and the ledger is left exactly as it was."""
    before = snapshot(ledger)
    with pytest.raises(error) as caught:
        ledger.apply(operations)
    assert snapshot(ledger) == before
    assert ledger.verify() == []
    return caught.value


def stored(ledger: CashLedger, transfer_id: str) -> StoredTransfer:
    """The stored transfer ``transfer_id``, which must be there."""
    transfer = ledger.transfer(transfer_id)
    assert transfer is not None, transfer_id
    return transfer


@pytest.fixture
def ledger(db_url: str) -> Iterator[CashLedger]:
    """Members A, B, C; A holds 10,000 fen, B 5,000, C nothing."""
    ledger = CashLedger(db_url)
    ledger.create_schema()
    for member in MEMBERS:
        ledger.open_member_account(member)
    applied(ledger, [deposit("seed-A", "A", 10_000), deposit("seed-B", "B", 5_000)])
    yield ledger
    assert ledger.verify() == []
    ledger.close()


# -- accounts and sign conventions ---------------------------------------------------------------


def test_house_accounts_and_only_bank_and_settlement_may_go_negative(ledger: CashLedger) -> None:
    accounts = {a.account_id: a for a in ledger.accounts()}
    assert set(accounts) == set(HOUSE) | set(MEMBERS)
    assert [a.account_id for a in accounts.values() if a.may_go_negative] == [BANK, SETTLEMENT]
    assert accounts["A"].kind == "member" and accounts[FEES].kind == "fees"
    ledger.create_schema()  # again: nothing changes
    ledger.open_member_account("A")
    assert ledger.accounts() == list(accounts.values())


@pytest.mark.parametrize(
    "member_id, problem",
    [
        ("", "1..32"), ("x" * 33, "1..32"), (7, "1..32"),
        ("house:fees", "clearing house"), ("house:mine", "clearing house"),
    ],
)
def test_member_accounts_refused(ledger: CashLedger, member_id: object, problem: str) -> None:
    with pytest.raises(InvalidAccount, match=problem):
        ledger.open_member_account(member_id)  # type: ignore[arg-type]


def test_deposit_and_withdrawal_signs(ledger: CashLedger) -> None:
    # Credit-normal: a member's balance is what the house owes it; the bank's is minus the
    # money held at the bank. All balances sum to zero.
    assert ledger.balance("A") == 10_000 and ledger.balance(BANK) == -15_000
    a = ledger.account("A")
    assert (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending) == (0, 10_000, 0, 0)
    assert ledger.withdraw("w1", "A", 3_000) == 1
    assert ledger.deposit("d1", "C", 700) == 1
    assert ledger.verify() == []
    assert (ledger.balance("A"), ledger.balance("C"), ledger.balance(BANK)) == (7_000, 700, -12_700)
    assert sum(account.available_fen for account in ledger.accounts()) == 0
    stored = ledger.transfer("w1")
    assert stored is not None and stored.state == "posted"
    assert stored.transfer == Transfer("w1", "A", BANK, 3_000, TransferCode.WITHDRAWAL)
    assert ledger.transfer("nothing") is None


def test_balance_of_an_unknown_account(ledger: CashLedger) -> None:
    with pytest.raises(UnknownAccount, match="'Z'"):
        ledger.balance("Z")


# -- every refusal, one row each -------------------------------------------------------------


REFUSALS = [
    ("unknown debit account", [move("t", "Z", "A", 1)], UnknownAccount, "'Z'"),
    ("unknown credit account", [move("t", "A", "Z", 1)], UnknownAccount, "'Z'"),
    ("more than the member has", [move("t", "A", "B", 10_001)], InsufficientFunds, "'A' has 10000 fen available"),
    ("member with nothing", [move("t", "C", "A", 1)], InsufficientFunds, "'C' has 0"),
    ("house account may not go negative", [move("t", FEES, "A", 1)], InsufficientFunds, "'house:fees'"),
    ("fund may not go negative", [move("t", BUYBACK_FUND, "A", 1)], InsufficientFunds, "'house:buyback_fund'"),
    ("amount zero", [move("t", "A", "B", 0)], InvalidAmount, "amount_fen"),
    ("amount negative", [move("t", "A", "B", -5)], InvalidAmount, "-5"),
    ("amount above the maximum", [move("t", BANK, "A", MAX_AMOUNT_FEN + 1)], InvalidAmount, "amount_fen"),
    ("amount a float", [move("t", "A", "B", 1.0)], InvalidAmount, "1.0"),  # type: ignore[arg-type]
    ("amount a bool", [move("t", "A", "B", True)], InvalidAmount, "True"),  # a bool is an int to mypy: no ignore needed
    ("debit equals credit", [move("t", "A", "A", 1)], SameAccount, "'A'"),
    ("empty id", [move("", "A", "B", 1)], InvalidTransfer, "transfer_id"),
    ("id too long", [move("x" * 129, "A", "B", 1)], InvalidTransfer, "transfer_id"),
    ("id not a str", [move(5, "A", "B", 1)], InvalidTransfer, "transfer_id"),  # type: ignore[arg-type]
    ("account id too long", [move("t", "A" * 65, "B", 1)], InvalidTransfer, "debit_account"),
    ("code zero", [Transfer("t", "A", "B", 1, 0)], InvalidTransfer, "code"),
    ("code too large", [Transfer("t", "A", "B", 1, 65_536)], InvalidTransfer, "code"),
    ("memo too long", [move("t", "A", "B", 1, memo="m" * 257)], InvalidTransfer, "memo"),
    ("pending not a bool", [Transfer("t", "A", "B", 1, 3, "", 1)], InvalidTransfer, "pending"),  # type: ignore
    ("stored id, different body", [move("seed-A", BANK, "A", 10_001)], IdConflict, "'seed-A'"),
    ("same id twice in a batch", [move("t", "A", "B", 1), move("t", "A", "B", 2)], IdConflict, "'t'"),
    ("post of an unknown id", [PostPending("nope")], UnknownTransfer, "'nope'"),
    ("void of an unknown id", [VoidPending("nope")], UnknownTransfer, "'nope'"),
    ("post of a single-phase transfer", [PostPending("seed-A")], NotPending, "single-phase"),
    ("void of a single-phase transfer", [VoidPending("seed-A")], NotPending, "single-phase"),
    ("post after void", [move("h", "A", "B", 5, True), VoidPending("h"), PostPending("h")], AlreadyResolved, "voided"),
    ("void after post", [move("h", "A", "B", 5, True), PostPending("h"), VoidPending("h")], AlreadyResolved, "posted"),
]


@pytest.mark.parametrize("operations, error, message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals(ledger: CashLedger, operations: list, error: type[Exception], message: str) -> None:
    problem = refused(ledger, operations, error)
    assert isinstance(problem, LedgerError)
    assert message in str(problem)


def test_refused_after_the_funds_are_held_or_moved(ledger: CashLedger) -> None:
    applied(ledger, [move("hold", "A", "B", 9_000, pending=True)])
    refused(ledger, [move("t", "A", "C", 1_001)], InsufficientFunds)  # 1,000 available, not 10,000
    applied(ledger, [move("t", "A", "C", 1_000)])
    # An incoming pending credit is not available yet: B still has only its 5,000.
    refused(ledger, [move("u", "B", "C", 5_001)], InsufficientFunds)


def test_balance_overflow(ledger: CashLedger) -> None:
    # 47 deposits of the largest amount take the bank's debits (and A's credits) above 2**62
    # fen: refused, all of them. The debit side is named first.
    big = [deposit(f"big-{i}", "A", MAX_AMOUNT_FEN) for i in range(47)]
    problem = refused(ledger, big, BalanceOverflow)
    assert problem.account_id == BANK and problem.transfer_id == "big-46"
    assert applied(ledger, big[:46]) == 46


def test_batch_too_large(ledger: CashLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "MAX_BATCH_OPERATIONS", 3)
    refused(ledger, [deposit(f"d{i}", "C", 1) for i in range(4)], BatchTooLarge)
    assert applied(ledger, [deposit(f"d{i}", "C", 1) for i in range(3)]) == 3


def test_not_an_operation(ledger: CashLedger) -> None:
    refused(ledger, [("t", "A", "B", 1)], TypeError)


@pytest.mark.parametrize("url", ["postgresql+psycopg2://", "mysql+pymysql://"])
def test_unsupported_database(url: str) -> None:
    # A mock engine: its dialect is all the ledger looks at, and no driver need be installed.
    with pytest.raises(ValueError, match="psycopg 3"):
        CashLedger(sa.create_mock_engine(url, executor=None))  # type: ignore[arg-type]


# -- idempotency ----------------------------------------------------------------------------


def test_repeated_and_reordered_batches_apply_once(ledger: CashLedger) -> None:
    batch = [
        move("t1", "A", "B", 100), move("t2", "B", "C", 50), move("t3", "A", FEES, 7),
        move("t4", "A", "C", 20, pending=True), PostPending("t4"), move("t5", "B", "A", 30, pending=True),
    ]
    assert applied(ledger, batch) == 6
    after = snapshot(ledger)
    assert applied(ledger, batch) == 0
    assert applied(ledger, list(reversed(batch))) == 0
    shuffled = batch[:]
    random.Random(7).shuffle(shuffled)
    assert applied(ledger, shuffled) == 0
    assert applied(ledger, batch[1:3]) == 0
    assert snapshot(ledger) == after


def test_a_retry_succeeds_although_the_funds_have_moved_since(ledger: CashLedger) -> None:
    applied(ledger, [move("pay", "A", "B", 10_000)])
    applied(ledger, [move("spend", "B", "C", 15_000)])
    assert applied(ledger, [move("pay", "A", "B", 10_000)]) == 0  # A has nothing left; no matter


def test_same_id_in_one_batch_with_the_same_body_applies_once(ledger: CashLedger) -> None:
    assert applied(ledger, [move("t", "A", "B", 10), move("t", "A", "B", 10)]) == 1
    assert ledger.balance("A") == 9_990


@pytest.mark.parametrize(
    "changed",
    [
        move("t", "A", "C", 10), move("t", "B", "A", 10), move("t", "A", "B", 11),
        move("t", "A", "B", 10, pending=True), move("t", "A", "B", 10, memo="other"),
        Transfer("t", "A", "B", 10, TransferCode.FEE),
    ],
    ids=["credit", "debit", "amount", "pending", "memo", "code"],
)
def test_same_id_different_body_refused(ledger: CashLedger, changed: Transfer) -> None:
    applied(ledger, [move("t", "A", "B", 10)])
    refused(ledger, [changed], IdConflict)
    refused(ledger, [move("fresh", "A", "B", 1), changed], IdConflict)  # and the whole batch with it


# -- two phases ------------------------------------------------------------------------------


def test_pending_holds_post_moves_void_releases(ledger: CashLedger) -> None:
    assert ledger.withdraw("w", "A", 4_000, pending=True) == 1
    assert ledger.verify() == []
    a, bank = ledger.account("A"), ledger.account(BANK)
    assert (a.debits_pending, bank.credits_pending, a.debits_posted) == (4_000, 4_000, 0)
    assert ledger.balance("A") == 6_000  # held, not available
    assert stored(ledger, "w").state == "pending"

    assert ledger.post_pending("w") == 1
    assert ledger.verify() == []
    a, bank = ledger.account("A"), ledger.account(BANK)
    assert (a.debits_pending, a.debits_posted, bank.credits_pending, bank.credits_posted) == (0, 4_000, 0, 4_000)
    assert ledger.balance("A") == 6_000 and ledger.balance(BANK) == -11_000
    assert ledger.post_pending("w") == 0  # again: nothing
    assert stored(ledger, "w").state == "posted"

    assert ledger.withdraw("v", "A", 6_000, pending=True) == 1
    assert ledger.balance("A") == 0
    assert ledger.void_pending("v") == 1
    assert ledger.verify() == []
    assert ledger.balance("A") == 6_000 and ledger.account("A").debits_pending == 0
    assert ledger.void_pending("v") == 0
    assert stored(ledger, "v").state == "voided"


def test_pending_credit_becomes_available_when_posted(ledger: CashLedger) -> None:
    applied(ledger, [move("p", "A", "C", 300, pending=True)])
    assert ledger.balance("C") == 0 and ledger.account("C").credits_pending == 300
    applied(ledger, [PostPending("p")])
    assert ledger.balance("C") == 300


def test_create_and_post_in_one_batch(ledger: CashLedger) -> None:
    assert applied(ledger, [move("p", "A", "B", 500, pending=True), PostPending("p"), PostPending("p")]) == 2
    assert stored(ledger, "p").state == "posted"
    assert ledger.balance("A") == 9_500 and ledger.balance("B") == 5_500


def test_many_pending_resolved_in_one_batch(ledger: CashLedger) -> None:
    applied(ledger, [move(f"h{i}", "A", "B", 10, pending=True) for i in range(100)])
    assert ledger.balance("A") == 9_000
    resolve = [PostPending(f"h{i}") if i % 2 else VoidPending(f"h{i}") for i in range(100)]
    assert applied(ledger, resolve) == 100
    assert applied(ledger, resolve) == 0
    assert ledger.balance("A") == 9_500 and ledger.balance("B") == 5_500
    assert ledger.account("A").debits_pending == 0


# -- atomicity -------------------------------------------------------------------------------


def test_a_failing_transfer_leaves_nothing(ledger: CashLedger) -> None:
    batch = [move("ok1", "A", "B", 100), move("ok2", "B", "C", 100), move("bad", "C", "A", 1_000)]
    refused(ledger, batch, InsufficientFunds)
    assert ledger.transfer("ok1") is None and ledger.transfer("ok2") is None


def test_a_batch_sees_its_own_earlier_transfers(ledger: CashLedger) -> None:
    # Through a member and out again works in order, and not the other way round.
    route = [move("in", "A", "C", 2_000), move("out", "C", "B", 2_000)]
    refused(ledger, list(reversed(route)), InsufficientFunds)
    assert applied(ledger, route) == 2
    assert ledger.balance("C") == 0 and ledger.balance("B") == 7_000


def test_the_settlement_account_pays_out_before_it_collects(ledger: CashLedger) -> None:
    # C has nothing: it can pay for what it buys only with what it is paid for what it sells.
    legs = [move("pay-out", SETTLEMENT, "C", 3_000), move("pay-in", "C", SETTLEMENT, 3_000)]
    assert applied(ledger, legs) == 2
    assert ledger.balance(SETTLEMENT) == 0 and ledger.balance("C") == 0


def test_a_malformed_operation_anywhere_refuses_the_batch(ledger: CashLedger) -> None:
    refused(ledger, [move("ok", "A", "B", 1)] * 3 + [move("bad", "A", "B", 0)], InvalidAmount)


# -- verify is not vacuous ---------------------------------------------------------------------


def test_verify_sees_a_tampered_counter(ledger: CashLedger) -> None:
    accounts = ledger_module.cash_accounts
    with ledger.engine.begin() as connection:
        connection.execute(sa.update(accounts).where(accounts.c.account_id == "B").values(credits_posted=5_001))
    problems = ledger.verify()
    assert any("'B' keeps" in p for p in problems)
    assert any("posted debits 15000 != posted credits 15001" in p for p in problems)
    with ledger.engine.begin() as connection:  # put it back for the fixture's final check
        connection.execute(sa.update(accounts).where(accounts.c.account_id == "B").values(credits_posted=5_000))


def test_verify_sees_a_tampered_transfer(ledger: CashLedger) -> None:
    applied(ledger, [move("h", "A", "B", 10, pending=True)])
    transfer = cash_transfers.c.transfer_id
    with ledger.engine.begin() as connection:
        connection.execute(sa.update(cash_transfers).where(transfer == "h").values(state="voided"))
        connection.execute(sa.update(cash_transfers).where(transfer == "seed-B").values(debit_account="ghost"))
    problems = ledger.verify()
    assert any("'A' keeps" in p for p in problems)
    assert any("'ghost', which does not exist" in p for p in problems)
    with ledger.engine.begin() as connection:  # put it back for the fixture's final check
        connection.execute(sa.update(cash_transfers).where(transfer == "h").values(state="pending"))
        connection.execute(sa.update(cash_transfers).where(transfer == "seed-B").values(debit_account=BANK))


# -- bulk and concurrency ----------------------------------------------------------------------


def test_a_large_batch(ledger: CashLedger) -> None:
    members = [f"M{i:03d}" for i in range(50)]
    for member in members:
        ledger.open_member_account(member)
    applied(ledger, [deposit(f"fund-{m}", m, 1_000_000) for m in members])
    trades = [
        move(f"2026-11-23/T{i:06d}/cash", members[i % 50], members[(i * 7 + 3) % 50], 1 + i % 97) for i in range(20_000)
    ]
    trades = [t for t in trades if t.debit_account != t.credit_account]
    assert applied(ledger, trades) == len(trades)
    assert applied(ledger, trades) == 0
    assert sum(ledger.balance(m) for m in members) == 50 * 1_000_000


def test_concurrent_batches_apply_each_transfer_once(ledger: CashLedger) -> None:
    batches = [[move(f"b{b}-t{i}", "ABC"[i % 3], "ABC"[(i + 1) % 3], 1) for i in range(30)] for b in range(12)]
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        order = batches[:]
        random.Random(seed).shuffle(order)
        try:
            for batch in order:
                ledger.apply(batch)
        except BaseException as error:  # noqa: BLE001 - anything a worker thread raises is reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledger.verify() == []
    # Each transfer moves 1 fen round the circle A -> B -> C -> A, so balances are back.
    assert (ledger.balance("A"), ledger.balance("B"), ledger.balance("C")) == (10_000, 5_000, 0)
    with ledger.engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(cash_transfers)).scalar_one()
    assert count == 2 + 12 * 30


def test_an_id_committed_by_another_batch_meanwhile(
    ledger: CashLedger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: another batch commits the same new id, on accounts we have not locked,
    after we read the ids and before we write. Our insert fails on the key, the batch runs
    again, sees the other body, and is refused as a conflict; nothing of ours is written."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time: there is no window to race into")
    assert isinstance(ledger.store, PostgresStore)
    other = CashLedger(db_url)
    applied(ledger, [deposit("fund-C", "C", 100)])
    copy_transfers = ledger.store.copy_transfers
    raced: list[int] = []

    def copy_after_a_rival(connection, rows):
        if not raced:
            raced.append(other.apply([move("race", "C", FEES, 1)]))
        return copy_transfers(connection, rows)

    monkeypatch.setattr(ledger.store, "copy_transfers", copy_after_a_rival)
    with pytest.raises(IdConflict):
        ledger.apply([move("mine", "A", "B", 5), move("race", "A", "B", 1)])
    assert raced == [1]
    assert ledger.transfer("mine") is None and stored(ledger, "race").transfer.debit_account == "C"
    assert ledger.balance("A") == 10_000
    other.close()


# -- the stateful differential test ------------------------------------------------------------


class Refusal(Exception):
    def __init__(self, kind: type[LedgerError]) -> None:
        self.kind = kind


class NaiveLedger:
    """The rules in their plainest form: dicts, copied whole for every batch."""

    def __init__(self) -> None:
        self.counters = {account: [0, 0, 0, 0] for account in (*HOUSE, *MEMBERS)}  # dp, cp, dpe, cpe
        self.transfers: dict[str, list] = {}  # id -> [Transfer, state]

    def apply(self, operations: list) -> tuple[type[LedgerError] | None, int]:
        for operation in operations:
            if isinstance(operation, Transfer):
                if operation.amount_fen <= 0:
                    return InvalidAmount, 0
                if operation.debit_account == operation.credit_account:
                    return SameAccount, 0
        counters = {account: list(c) for account, c in self.counters.items()}
        transfers = {transfer_id: list(record) for transfer_id, record in self.transfers.items()}
        try:
            changes = sum(self.one(counters, transfers, operation) for operation in operations)
        except Refusal as refusal:
            return refusal.kind, 0
        self.counters, self.transfers = counters, transfers
        return None, changes

    def one(self, counters: dict, transfers: dict, operation) -> int:
        if isinstance(operation, Transfer):
            return self.transfer(counters, transfers, operation)
        wanted = "posted" if isinstance(operation, PostPending) else "voided"
        if operation.transfer_id not in transfers:
            raise Refusal(UnknownTransfer)
        transfer, state = transfers[operation.transfer_id]
        if not transfer.pending:
            raise Refusal(NotPending)
        if state == wanted:
            return 0
        if state != "pending":
            raise Refusal(AlreadyResolved)
        debit, credit = counters[transfer.debit_account], counters[transfer.credit_account]
        debit[2] -= transfer.amount_fen
        credit[3] -= transfer.amount_fen
        if wanted == "posted":
            debit[0] += transfer.amount_fen
            credit[1] += transfer.amount_fen
        transfers[operation.transfer_id][1] = wanted
        return 1

    def transfer(self, counters: dict, transfers: dict, transfer: Transfer) -> int:
        if transfer.transfer_id in transfers:
            if transfers[transfer.transfer_id][0] != transfer:
                raise Refusal(IdConflict)
            return 0
        for account in (transfer.debit_account, transfer.credit_account):
            if account not in counters:
                raise Refusal(UnknownAccount)
        debit, credit = counters[transfer.debit_account], counters[transfer.credit_account]
        if transfer.debit_account not in (BANK, SETTLEMENT) and debit[0] + debit[2] + transfer.amount_fen > debit[1]:
            raise Refusal(InsufficientFunds)
        held = 2 if transfer.pending else 0
        debit[held] += transfer.amount_fen
        credit[held + 1] += transfer.amount_fen
        transfers[transfer.transfer_id] = [transfer, "pending" if transfer.pending else "posted"]
        return 1


ACCOUNT_CHOICES = (*MEMBERS, SETTLEMENT, FEES, BANK, "ghost")
AMOUNTS = st.integers(1, 6_000)
OPERATION_KINDS = (
    ["deposit"] * 3 + ["withdraw"] * 2 + ["transfer"] * 3 + ["post"] * 2 + ["void"] * 2
    + ["post any", "repeat", "conflict", "bad amount", "unknown"]
)


def ledger_machine(engine: sa.Engine) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            metadata.drop_all(engine)
            self.ledger = CashLedger(engine)
            self.ledger.create_schema()
            for member in MEMBERS:
                self.ledger.open_member_account(member)
            self.model = NaiveLedger()
            self.batches: list[list] = []
            self.next_id = 0

        def fresh_id(self) -> str:
            self.next_id += 1
            return f"t{self.next_id}"

        def known_id(self, data: st.DataObject, pending_only: bool) -> str | None:
            transfers = self.model.transfers
            ids = [i for i in sorted(transfers) if transfers[i][0].pending or not pending_only]
            return data.draw(st.sampled_from(ids)) if ids else None

        def operation(self, data: st.DataObject):
            """Mostly operations that may apply; now and then one that is surely refused."""
            kind = data.draw(st.sampled_from(OPERATION_KINDS))
            if kind in ("post", "void", "post any", "repeat", "conflict"):
                known = self.known_id(data, pending_only=kind in ("post", "void"))
                if known is None:
                    kind = "deposit"
            if kind == "deposit":
                member, amount = data.draw(st.tuples(st.sampled_from(MEMBERS), AMOUNTS))
                return Transfer(self.fresh_id(), BANK, member, amount, TransferCode.DEPOSIT)
            if kind == "withdraw":
                member, amount, pending = data.draw(st.tuples(st.sampled_from(MEMBERS), AMOUNTS, st.booleans()))
                return Transfer(self.fresh_id(), member, BANK, amount, TransferCode.WITHDRAWAL, "", pending)
            if kind == "transfer":
                accounts = st.sampled_from(ACCOUNT_CHOICES)
                debit, credit, amount, pending = data.draw(st.tuples(accounts, accounts, AMOUNTS, st.booleans()))
                return move(self.fresh_id(), debit, credit, amount, pending)
            # The kinds below name a known id, drawn above (had there been none, the kind became "deposit").
            if kind in ("post", "post any"):
                assert known is not None
                return PostPending(known)
            if kind == "void":
                assert known is not None
                return VoidPending(known)
            if kind == "repeat":
                assert known is not None
                return self.model.transfers[known][0]
            if kind == "conflict":
                assert known is not None
                original = self.model.transfers[known][0]
                return msgspec.structs.replace(original, amount_fen=original.amount_fen + 1)
            if kind == "bad amount":
                return move(self.fresh_id(), "A", "B", data.draw(st.integers(-1, 0)))
            return data.draw(st.sampled_from([PostPending("never"), VoidPending("never")]))

        def check(self, operations: list) -> None:
            expected_error, expected_changes = self.model.apply(operations)
            event(f"outcome: {expected_error.__name__ if expected_error else 'applied'}")
            if expected_error is None:
                assert self.ledger.apply(operations) == expected_changes
                self.batches.append(operations)
            else:
                with pytest.raises(expected_error):
                    self.ledger.apply(operations)

        @rule(data=st.data())
        def one_operation(self, data: st.DataObject) -> None:
            self.check([self.operation(data)])

        @rule(data=st.data(), size=st.integers(2, 5))
        def batch(self, data: st.DataObject, size: int) -> None:
            self.check([self.operation(data) for _ in range(size)])

        @rule(data=st.data(), reverse=st.booleans())
        def replay_a_batch(self, data: st.DataObject, reverse: bool) -> None:
            if self.batches:
                batch = data.draw(st.sampled_from(self.batches))
                self.check(list(reversed(batch)) if reverse else batch)

        @invariant()
        def every_balance_matches_the_model(self) -> None:
            accounts = self.ledger.accounts()
            kept = {
                a.account_id: [a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending] for a in accounts
            }
            assert kept == self.model.counters
            for account_id, (dp, cp, dpe, _cpe) in self.model.counters.items():
                assert account_id in (BANK, SETTLEMENT) or cp - dp - dpe >= 0
            assert sum(c[0] for c in kept.values()) == sum(c[1] for c in kept.values())
            assert sum(c[2] for c in kept.values()) == sum(c[3] for c in kept.values())
            assert self.ledger.verify() == []

    return LedgerMachine


def test_stateful_against_a_naive_model(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        run_state_machine_as_test(
            ledger_machine(engine),
            settings=settings(
                max_examples=25, stateful_step_count=30, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        engine.dispose()
