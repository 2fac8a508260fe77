"""The clearing house's cash ledger: double-entry, two-phase, idempotent, in SQL.

Modelled on TigerBeetle: accounts carry four counters, transfers are rows with a unique id,
a transfer moves an amount from one account (debited) to another (credited), and a pending
transfer reserves its amount until it is posted or voided. Every transfer debits exactly one
account and credits exactly one, so at all times

    sum of debits_posted over all accounts  = sum of credits_posted
    sum of debits_pending over all accounts = sum of credits_pending

and :meth:`CashLedger.verify` recomputes every counter from the transfers to prove it.

Accounts
    One cash account per member (its id is the member id) and five house accounts, made by
    :meth:`CashLedger.create_schema`: ``house:bank`` (the clearing house's omnibus account at
    its bank: deposits come from it, withdrawals go to it), ``house:settlement``,
    ``house:fees``, ``house:auction_proceeds`` and ``house:buyback_fund``. Only the bank
    and the settlement account may go negative; every other account is refused a debit that
    its posted credits do not cover (TigerBeetle's ``debits_must_not_exceed_credits``), and
    the database checks the same rule again (a CHECK constraint). The settlement account is
    the clearing house standing between buyer and seller: inside one settlement batch it pays
    the sellers before it collects from the buyers (who may be paying with the day's sale
    proceeds), so it runs negative *within* the batch; settlement leaves it at zero, and
    reconciliation checks that it does.

Sign conventions
    Every account is read credit-normal, from the clearing house's books: an account's
    balance is ``credits - debits``. A member's balance is what the house owes the member; a
    house account's balance is what sits in that pot. A deposit *debits* the bank account and
    *credits* the member; a withdrawal debits the member and credits the bank; a fee debits
    the member and credits ``house:fees``. The bank account's balance is therefore negative:
    minus the member money the house holds at its bank. Balances over all accounts sum to 0.
    :meth:`CashLedger.balance` is the *available* balance
    ``credits_posted - debits_posted - debits_pending``: money on hold for a pending debit is
    not available, and money arriving by a pending credit is not available yet.

Where things are: ``vocabulary.py`` (accounts, codes, operations, records), ``limits.py``,
``errors.py``, ``schema.py`` (the tables), ``checks.py`` (an operation's fields),
``plan.py`` (a batch worked out in memory: idempotency, two phases), ``store.py`` (the SQL
per database: locking, reading, writing, concurrency) and ``audit.py`` (``verify``).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exchange.clearing.ledger.audit import account_problems, house_account_problems, recompute_counters, sum_problems
from exchange.clearing.ledger.checks import check_id, check_operation, check_transfer
from exchange.clearing.ledger.errors import (
    AlreadyResolved,
    BalanceOverflow,
    BatchTooLarge,
    IdConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    InvalidTransfer,
    LedgerError,
    NotPending,
    SameAccount,
    UnknownAccount,
    UnknownTransfer,
)
from exchange.clearing.ledger.limits import (
    APPLY_ATTEMPTS,
    MAX_ACCOUNT_ID_CHARS,
    MAX_AMOUNT_FEN,
    MAX_BALANCE_FEN,
    MAX_BATCH_OPERATIONS,
    MAX_CODE,
    MAX_MEMBER_ID_CHARS,
    MAX_MEMO_CHARS,
    MAX_TRANSFER_ID_CHARS,
    PG_CHUNK_ROWS,
)
from exchange.clearing.ledger.plan import (
    Balance,
    Known,
    Plan,
    accounts_named,
    body_of,
    collector_paused,
    raise_overflow,
)
from exchange.clearing.ledger.schema import BALANCE_COLUMNS, TRANSFER_COLUMNS, cash_accounts, cash_transfers, metadata
from exchange.clearing.ledger.store import (
    LockSetChanged,
    PostgresStore,
    SqliteStore,
    account_from_row,
    known_from_rows,
    lock_accounts,
    read_accounts,
)
from exchange.clearing.ledger.vocabulary import (
    AUCTION_PROCEEDS,
    BANK,
    BUYBACK_FUND,
    FEES,
    HOUSE_ACCOUNTS,
    HOUSE_PREFIX,
    MAY_GO_NEGATIVE,
    PENDING,
    POSTED,
    SETTLEMENT,
    VOIDED,
    AccountBalance,
    AccountKind,
    Operation,
    PostPending,
    StoredTransfer,
    Transfer,
    TransferCode,
    VoidPending,
)

__all__ = [
    "APPLY_ATTEMPTS", "AUCTION_PROCEEDS", "BALANCE_COLUMNS", "BANK", "BUYBACK_FUND", "FEES", "HOUSE_ACCOUNTS",
    "HOUSE_PREFIX", "MAX_ACCOUNT_ID_CHARS", "MAX_AMOUNT_FEN", "MAX_BALANCE_FEN", "MAX_BATCH_OPERATIONS", "MAX_CODE",
    "MAX_MEMBER_ID_CHARS", "MAX_MEMO_CHARS", "MAX_TRANSFER_ID_CHARS", "MAY_GO_NEGATIVE", "PENDING", "PG_CHUNK_ROWS",
    "POSTED", "SETTLEMENT", "TRANSFER_COLUMNS", "VOIDED",
    "AccountBalance", "AccountKind", "AlreadyResolved", "Balance", "BalanceOverflow", "BatchTooLarge", "CashLedger",
    "IdConflict", "InsufficientFunds", "InvalidAccount", "InvalidAmount", "InvalidTransfer", "Known", "LedgerError",
    "LockSetChanged", "NotPending", "Operation", "Plan", "PostPending", "PostgresStore", "SameAccount", "SqliteStore",
    "StoredTransfer", "Transfer", "TransferCode", "UnknownAccount", "UnknownTransfer", "VoidPending",
    "account_from_row", "account_problems", "accounts_named", "body_of", "cash_accounts", "cash_transfers",
    "check_id", "check_operation", "check_transfer", "collector_paused", "house_account_problems",
    "known_from_rows", "lock_accounts", "metadata", "raise_overflow", "read_accounts", "recompute_counters",
    "sum_problems",
]


class CashLedger:
    """The cash ledger on one database: SQLite, or PostgreSQL through psycopg 3."""

    def __init__(self, url_or_engine: str | sa.Engine, sqlite_timeout_s: int = 60) -> None:
        if isinstance(url_or_engine, str):
            is_sqlite = sa.make_url(url_or_engine).get_backend_name() == "sqlite"
            connect_args = {"timeout": sqlite_timeout_s} if is_sqlite else {}
            self.engine = sa.create_engine(url_or_engine, connect_args=connect_args)
            self.owns_engine = True
        else:
            self.engine, self.owns_engine = url_or_engine, False
        backend, driver = self.engine.dialect.name, self.engine.dialect.driver
        if backend not in ("sqlite", "postgresql") or (backend == "postgresql" and driver != "psycopg"):
            raise ValueError(f"the cash ledger runs on SQLite or on PostgreSQL with psycopg 3, not {backend}+{driver}")
        self.store = SqliteStore(self.engine) if backend == "sqlite" else PostgresStore(self.engine)

    def close(self) -> None:
        if self.owns_engine:
            self.engine.dispose()

    def create_schema(self) -> None:
        """The tables and the house accounts; safe to run again."""
        metadata.create_all(self.engine)
        with self.store.write() as connection:
            for account_id, kind in HOUSE_ACCOUNTS.items():
                self._insert_account(connection, account_id, kind)

    def open_member_account(self, member_id: str) -> None:
        """A member's cash account, its id the member id; opening it again changes nothing."""
        if type(member_id) is not str or not 0 < len(member_id) <= MAX_MEMBER_ID_CHARS:
            raise InvalidAccount(member_id, f"a member id is a str of 1..{MAX_MEMBER_ID_CHARS} characters")
        if member_id.startswith(HOUSE_PREFIX):
            raise InvalidAccount(member_id, f"ids starting {HOUSE_PREFIX!r} are the clearing house's")
        with self.store.write() as connection:
            self._insert_account(connection, member_id, AccountKind.MEMBER)

    def _insert_account(self, connection: sa.Connection, account_id: str, kind: AccountKind) -> None:
        values = dict(account_id=account_id, kind=str(kind), may_go_negative=kind in MAY_GO_NEGATIVE)
        values.update(dict.fromkeys(BALANCE_COLUMNS, 0))
        dialect = sqlite if self.engine.dialect.name == "sqlite" else postgresql
        connection.execute(dialect.insert(cash_accounts).values(values).on_conflict_do_nothing())
        stored_kind = connection.execute(
            sa.select(cash_accounts.c.kind).where(cash_accounts.c.account_id == account_id)
        ).scalar_one()
        if stored_kind != kind:
            raise InvalidAccount(account_id, f"already open as a {stored_kind} account")

    # -- writing -----------------------------------------------------------------------------

    def apply(self, operations: Iterable[Operation]) -> int:
        """Apply every operation, in order, or none. Returns how many changed the ledger
        (0 when the whole batch had been applied before). Raises a :class:`LedgerError`
        naming the first refusal."""
        batch = list(operations)
        if len(batch) > MAX_BATCH_OPERATIONS:
            raise BatchTooLarge(len(batch))
        for operation in batch:
            check_operation(operation)
        if not batch:
            return 0
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            try:
                with collector_paused(), self.store.write() as connection:
                    return self._apply_in(connection, batch)
            except (LockSetChanged, sa.exc.IntegrityError, self.store.driver_integrity_error):
                # Only PostgreSQL lets another batch commit one of our new ids between our
                # read and our write; the next attempt finds it. On SQLite an IntegrityError
                # is a bug and goes straight up.
                if self.store.serializes_writers or attempt == APPLY_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _apply_in(self, connection: sa.Connection, batch: list[Operation]) -> int:
        all_ids = [operation.transfer_id for operation in batch]  # repeats are harmless in the query
        serialized = self.store.serializes_writers
        # Without a global lock, first learn which accounts the stored pending transfers use
        # (their bodies never change), lock them all, and only then read the transfers.
        resolving = all_ids if serialized else [op.transfer_id for op in batch if type(op) is not Transfer]
        prior = self.store.read_transfers(connection, resolving)
        wanted = accounts_named(batch, prior)
        balances = lock_accounts(connection, wanted)
        known = prior if serialized else self.store.read_transfers(connection, all_ids)
        if not serialized and not accounts_named(batch, known) <= wanted:
            raise LockSetChanged()
        plan = Plan(balances, known)
        plan.add_all(batch)
        self.store.write_plan(connection, plan)
        return plan.changes

    def deposit(self, transfer_id: str, member_id: str, amount_fen: int, memo: str = "") -> int:
        """Money the member paid into the house's bank account: debit the bank, credit the member."""
        return self.apply([Transfer(transfer_id, BANK, member_id, amount_fen, TransferCode.DEPOSIT, memo)])

    def withdraw(self, transfer_id: str, member_id: str, amount_fen: int, memo: str = "", pending: bool = False) -> int:
        """Money paid out to the member: debit the member, credit the bank. ``pending`` holds
        it until the bank confirms the payment (post) or returns it (void)."""
        return self.apply([Transfer(transfer_id, member_id, BANK, amount_fen, TransferCode.WITHDRAWAL, memo, pending)])

    def post_pending(self, transfer_id: str) -> int:
        return self.apply([PostPending(transfer_id)])

    def void_pending(self, transfer_id: str) -> int:
        return self.apply([VoidPending(transfer_id)])

    # -- reading -----------------------------------------------------------------------------

    def balance(self, account_id: str) -> int:
        """Available fen: credits_posted - debits_posted - debits_pending (see the module
        docstring for the signs). Raises :class:`UnknownAccount`."""
        return self.account(account_id).available_fen

    def account(self, account_id: str) -> AccountBalance:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(cash_accounts).where(cash_accounts.c.account_id == account_id)).first()
        if row is None:
            raise UnknownAccount(account_id)
        return account_from_row(row)

    def accounts(self) -> list[AccountBalance]:
        """Every account, in id order, from one snapshot."""
        with self.store.read() as connection:
            return read_accounts(connection)

    def transfer(self, transfer_id: str) -> StoredTransfer | None:
        with self.engine.connect() as connection:
            known = self.store.read_transfers(connection, [transfer_id])
        if transfer_id not in known.bodies:
            return None
        debit, credit, amount, code, memo, two_phase = known.bodies[transfer_id]
        transfer = Transfer(transfer_id, debit, credit, int(amount), int(code), memo, bool(two_phase))
        return StoredTransfer(transfer, known.states[transfer_id])

    def verify(self) -> list[str]:
        """Recompute every account's counters from the transfers, in one snapshot, and check
        them and the ledger's invariants. Returns the problems found; [] means sound."""
        with self.store.read() as connection:
            stored = {a.account_id: a for a in read_accounts(connection)}
            recomputed = recompute_counters(connection)
            loose = connection.execute(
                sa.select(sa.func.count()).where(~cash_transfers.c.two_phase, cash_transfers.c.state != POSTED)
            ).scalar_one()
        problems = [f"{loose} single-phase transfers are not posted"] if loose else []
        missing = sorted(recomputed.keys() - stored.keys())
        problems += [f"transfers name account {a!r}, which does not exist" for a in missing]
        problems += account_problems(stored, recomputed)
        problems += house_account_problems(stored)
        problems += sum_problems(stored.values())
        return problems
