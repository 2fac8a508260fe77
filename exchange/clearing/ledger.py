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

Transfers and idempotency
    A transfer's id is its idempotency key (settlement derives it from the trading day and the
    obligation). Its body (accounts, amount, code, memo, whether two-phase) never changes once
    stored. Applying a known id with the same body again changes nothing and succeeds, even
    if the funds have moved since (a retry must not fail for having already worked); the same
    id with a different body is refused with :class:`IdConflict`.

Two phases
    A transfer with ``pending=True`` adds its amount to the debit account's ``debits_pending``
    and the credit account's ``credits_pending`` (it is checked against the funds like a
    posted one, so it holds them). :class:`PostPending` moves the *whole* amount from pending
    to posted; :class:`VoidPending` gives it back. Partial posting, which TigerBeetle allows,
    is deliberately left out: a settlement leg is due in full or not at all, and a smaller
    amount is a void plus a new transfer with its own id. The only column that ever changes
    on a transfer row is its ``state``, and only once: pending -> posted or pending -> voided.
    Posting a posted transfer, or voiding a voided one, changes nothing and succeeds; posting
    a voided one or voiding a posted one is refused (:class:`AlreadyResolved`).

Batches
    :meth:`CashLedger.apply` takes transfers, posts and voids in order, as TigerBeetle does:
    each one sees the balances the earlier ones left, so a batch may create a hold and post it,
    or route money through ``house:settlement`` and out again. The batch is worked out in
    memory against the balances read once, then written in one database transaction with bulk
    statements (executemany on SQLite; COPY and ``unnest`` of arrays on PostgreSQL, through
    psycopg 3, the one PostgreSQL driver the ledger accepts). Any refusal raises
    before anything is written, so a batch is all or nothing.

Concurrency
    SQLite: a write batch starts with ``BEGIN IMMEDIATE``, taking the database's write lock
    before it reads anything, so the balances it works from cannot change under it and
    writers simply queue (each waits up to ``sqlite_timeout_s``).
    PostgreSQL (READ COMMITTED): a batch locks the rows of every account it touches with
    ``SELECT ... FOR UPDATE``, in account-id order so that two batches never wait for each
    other in a cycle, and only then reads the transfers it names, so it sees whatever an
    earlier batch committed. A concurrent batch on other accounts that commits one of our new
    ids between our read and our write makes our insert fail on the primary key; the batch
    then runs again (up to ``APPLY_ATTEMPTS`` times) and finds that id: applied already, or
    taken by a different body (:class:`IdConflict`). Reads that need one consistent picture (``verify``,
    ``accounts``) run in one snapshot (a deferred transaction on SQLite, REPEATABLE READ on
    PostgreSQL).

Limits
    Amounts are ``int`` fen, 0 < amount <= ``MAX_AMOUNT_FEN`` (the largest notional, 1e17);
    every counter stays <= ``MAX_BALANCE_FEN`` (2**62, so even the sum of two fits a BIGINT);
    ids are at most 128 characters, account ids 64 (member ids 32), memos 256; codes are
    1..65535 (``TransferCode`` names the ones the exchange uses); a batch holds at most
    ``MAX_BATCH_OPERATIONS`` operations.

Throughput: one batch of 1,000,000 fresh single-phase transfers among 1,000 members, all of
``apply`` (checks, read of known ids, locks, plan, insert, commit), median of 3 runs on a
shared 2-CPU VM with other benchmarks running (Python 3.11, SQLAlchemy 2.1, psycopg 3.3):
    SQLite 3.40, file database:   6.2 s  ->  ~160,000 transfers/s  (runs: 128k-176k/s)
    PostgreSQL 15, local server:  7.3 s  ->  ~137,000 transfers/s  (runs: 131k-147k/s)
Applying the same batch again (every id known, nothing written) takes 4.5 s on SQLite and
7 s on PostgreSQL; ``verify()`` over those million transfers 1.0 s and 0.5 s.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import json
from typing import Iterable, Iterator, Sequence

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exchange.model.units import MAX_NOTIONAL_FEN

MAX_AMOUNT_FEN = MAX_NOTIONAL_FEN
MAX_BALANCE_FEN = 2**62
MAX_BATCH_OPERATIONS = 2_000_000
MAX_TRANSFER_ID_CHARS = 128
MAX_ACCOUNT_ID_CHARS = 64
MAX_MEMBER_ID_CHARS = 32
MAX_MEMO_CHARS = 256
MAX_CODE = 65_535
APPLY_ATTEMPTS = 3
PG_CHUNK_ROWS = 100_000  # bounds the size of one array parameter

POSTED, PENDING, VOIDED = "posted", "pending", "voided"

BANK = "house:bank"
SETTLEMENT = "house:settlement"
FEES = "house:fees"
AUCTION_PROCEEDS = "house:auction_proceeds"
BUYBACK_FUND = "house:buyback_fund"
HOUSE_PREFIX = "house:"


class AccountKind(enum.StrEnum):
    MEMBER = "member"
    BANK = "bank"
    SETTLEMENT = "settlement"
    FEES = "fees"
    AUCTION_PROCEEDS = "auction_proceeds"
    BUYBACK_FUND = "buyback_fund"


HOUSE_ACCOUNTS = {
    BANK: AccountKind.BANK,
    SETTLEMENT: AccountKind.SETTLEMENT,
    FEES: AccountKind.FEES,
    AUCTION_PROCEEDS: AccountKind.AUCTION_PROCEEDS,
    BUYBACK_FUND: AccountKind.BUYBACK_FUND,
}

MAY_GO_NEGATIVE = (AccountKind.BANK, AccountKind.SETTLEMENT)


class TransferCode(enum.IntEnum):
    """What a transfer is for (stored as its ``code``)."""

    DEPOSIT = 1
    WITHDRAWAL = 2
    SETTLEMENT = 3
    FEE = 4
    AUCTION = 5
    BUYBACK = 6
    ADJUSTMENT = 7


# -- errors ----------------------------------------------------------------------------------


class LedgerError(Exception):
    """Base of the ledger's refusals. A refused batch leaves the ledger unchanged."""


class InvalidTransfer(LedgerError):
    """A field of a transfer is out of its bounds or of the wrong type."""

    def __init__(self, transfer_id: object, field: str, problem: str) -> None:
        super().__init__(f"transfer {transfer_id!r}: {field} {problem}")
        self.transfer_id, self.field, self.problem = transfer_id, field, problem


class InvalidAmount(InvalidTransfer):
    """The amount is not an int in 1..MAX_AMOUNT_FEN."""

    def __init__(self, transfer_id: object, amount_fen: object) -> None:
        super().__init__(transfer_id, "amount_fen", f"must be an int in 1..{MAX_AMOUNT_FEN}, got {amount_fen!r}")
        self.amount_fen = amount_fen


class SameAccount(InvalidTransfer):
    """A transfer that debits and credits the same account."""

    def __init__(self, transfer_id: object, account_id: str) -> None:
        super().__init__(transfer_id, "credit_account", f"is the debit account {account_id!r}")
        self.account_id = account_id


class UnknownAccount(LedgerError):
    def __init__(self, account_id: str, transfer_id: str = "") -> None:
        where = f" (transfer {transfer_id!r})" if transfer_id else ""
        super().__init__(f"unknown cash account {account_id!r}{where}")
        self.account_id, self.transfer_id = account_id, transfer_id


class InvalidAccount(LedgerError):
    """An account id that cannot be opened: malformed, reserved, or taken by another kind."""

    def __init__(self, account_id: object, problem: str) -> None:
        super().__init__(f"cash account {account_id!r}: {problem}")
        self.account_id, self.problem = account_id, problem


class InsufficientFunds(LedgerError):
    def __init__(self, account_id: str, available_fen: int, amount_fen: int, transfer_id: str) -> None:
        super().__init__(
            f"transfer {transfer_id!r}: account {account_id!r} has {available_fen} fen available, {amount_fen} wanted"
        )
        self.account_id, self.available_fen, self.amount_fen = account_id, available_fen, amount_fen
        self.transfer_id = transfer_id


class IdConflict(LedgerError):
    """A transfer id already used (stored, or earlier in the batch) for a different body."""

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"transfer id {transfer_id!r} was already used for a different transfer")
        self.transfer_id = transfer_id


class UnknownTransfer(LedgerError):
    """A post or void of a transfer id the ledger does not hold."""

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"no transfer {transfer_id!r} to post or void")
        self.transfer_id = transfer_id


class NotPending(LedgerError):
    """A post or void of a single-phase transfer: it was posted when it was made."""

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"transfer {transfer_id!r} is single-phase: there is nothing to post or void")
        self.transfer_id = transfer_id


class AlreadyResolved(LedgerError):
    """Posting a voided transfer, or voiding a posted one."""

    def __init__(self, transfer_id: str, state: str, wanted: str) -> None:
        super().__init__(f"transfer {transfer_id!r} is already {state}; it cannot become {wanted}")
        self.transfer_id, self.state, self.wanted = transfer_id, state, wanted


class BalanceOverflow(LedgerError):
    def __init__(self, account_id: str, transfer_id: str) -> None:
        super().__init__(f"transfer {transfer_id!r} would take account {account_id!r} above {MAX_BALANCE_FEN} fen")
        self.account_id, self.transfer_id = account_id, transfer_id


class BatchTooLarge(LedgerError):
    def __init__(self, size: int) -> None:
        super().__init__(f"a batch of {size} operations; at most {MAX_BATCH_OPERATIONS}")
        self.size = size


# -- messages --------------------------------------------------------------------------------


class Transfer(msgspec.Struct, frozen=True, gc=False):
    """Debit ``debit_account`` and credit ``credit_account`` with ``amount_fen``; held as
    pending until posted or voided when ``pending``. ``transfer_id`` is the idempotency key."""

    transfer_id: str
    debit_account: str
    credit_account: str
    amount_fen: int
    code: int
    memo: str = ""
    pending: bool = False


class PostPending(msgspec.Struct, frozen=True, gc=False):
    """Post the whole amount of the pending transfer ``transfer_id``."""

    transfer_id: str


class VoidPending(msgspec.Struct, frozen=True, gc=False):
    """Release the pending transfer ``transfer_id``: nothing moves."""

    transfer_id: str


Operation = Transfer | PostPending | VoidPending


class StoredTransfer(msgspec.Struct, frozen=True):
    transfer: Transfer
    state: str  # POSTED, PENDING or VOIDED


class AccountBalance(msgspec.Struct, frozen=True):
    account_id: str
    kind: str
    may_go_negative: bool
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def available_fen(self) -> int:
        return self.credits_posted - self.debits_posted - self.debits_pending


# -- schema ----------------------------------------------------------------------------------

metadata = sa.MetaData()

cash_accounts = sa.Table(
    "cash_accounts",
    metadata,
    sa.Column("account_id", sa.String(MAX_ACCOUNT_ID_CHARS), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("may_go_negative", sa.Boolean, nullable=False),
    sa.Column("debits_posted", sa.BigInteger, nullable=False),
    sa.Column("credits_posted", sa.BigInteger, nullable=False),
    sa.Column("debits_pending", sa.BigInteger, nullable=False),
    sa.Column("credits_pending", sa.BigInteger, nullable=False),
    sa.CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
        name="cash_accounts_counters_not_negative",
    ),
    sa.CheckConstraint(
        "may_go_negative OR debits_posted + debits_pending <= credits_posted", name="cash_accounts_within_credits"
    ),
)

# No secondary indexes: they would slow the bulk insert, and verify() scans the table anyway.
# No foreign keys to cash_accounts: on PostgreSQL their per-row triggers cost three times the
# insert itself. The ledger checks every account before it writes, accounts are never
# deleted, and verify() reports a transfer that names a missing account.
# WITHOUT ROWID on SQLite: the rows live in the primary-key tree itself, one tree to write.
cash_transfers = sa.Table(
    "cash_transfers",
    metadata,
    sa.Column("transfer_id", sa.String(MAX_TRANSFER_ID_CHARS), primary_key=True),
    sa.Column("debit_account", sa.String(MAX_ACCOUNT_ID_CHARS), nullable=False),
    sa.Column("credit_account", sa.String(MAX_ACCOUNT_ID_CHARS), nullable=False),
    sa.Column("amount_fen", sa.BigInteger, nullable=False),
    sa.Column("code", sa.Integer, nullable=False),
    sa.Column("memo", sa.String(MAX_MEMO_CHARS), nullable=False),
    sa.Column("two_phase", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.CheckConstraint("amount_fen > 0", name="cash_transfers_amount_positive"),
    sa.CheckConstraint("debit_account <> credit_account", name="cash_transfers_two_accounts"),
    # Not "state IN (...)": SQLite evaluates that CHECK at twice the cost of the whole insert.
    sa.CheckConstraint("state = 'posted' OR state = 'pending' OR state = 'voided'", name="cash_transfers_state"),
    sa.CheckConstraint("two_phase OR state = 'posted'", name="cash_transfers_single_phase_posted"),
    sqlite_with_rowid=False,
)

TRANSFER_COLUMNS = (
    "transfer_id", "debit_account", "credit_account", "amount_fen", "code", "memo", "two_phase", "state",
)
BALANCE_COLUMNS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


# -- checks that need no database --------------------------------------------------------------


def check_operation(operation: Operation) -> None:
    """Refuse a malformed operation before the database is touched."""
    kind = type(operation)
    if kind is Transfer:
        check_transfer(operation)
    elif kind is PostPending or kind is VoidPending:
        check_id(operation.transfer_id)
    else:
        raise TypeError(f"not a ledger operation: {operation!r}")


def check_transfer(transfer: Transfer) -> None:
    # msgspec checks types only when decoding, and a Transfer may be built directly.
    transfer_id = transfer.transfer_id
    check_id(transfer_id)
    amount = transfer.amount_fen
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT_FEN:
        raise InvalidAmount(transfer_id, amount)
    debit, credit = transfer.debit_account, transfer.credit_account
    for field, account in (("debit_account", debit), ("credit_account", credit)):
        if type(account) is not str or not 0 < len(account) <= MAX_ACCOUNT_ID_CHARS:
            raise InvalidTransfer(transfer_id, field, f"must be an account id of 1..{MAX_ACCOUNT_ID_CHARS} characters")
    if debit == credit:
        raise SameAccount(transfer_id, debit)
    code = transfer.code
    if not isinstance(code, int) or code is True or code is False or not 0 < code <= MAX_CODE:
        raise InvalidTransfer(transfer_id, "code", f"must be an int in 1..{MAX_CODE}")
    if type(transfer.memo) is not str or len(transfer.memo) > MAX_MEMO_CHARS:
        raise InvalidTransfer(transfer_id, "memo", f"must be a str of at most {MAX_MEMO_CHARS} characters")
    if type(transfer.pending) is not bool:
        raise InvalidTransfer(transfer_id, "pending", "must be a bool")


def check_id(transfer_id: object) -> None:
    if type(transfer_id) is not str or not 0 < len(transfer_id) <= MAX_TRANSFER_ID_CHARS:
        raise InvalidTransfer(transfer_id, "transfer_id", f"must be a str of 1..{MAX_TRANSFER_ID_CHARS} characters")


# -- the batch, worked out in memory -------------------------------------------------------------


class Balance:
    """An account's counters as the batch changes them."""

    __slots__ = (
        "account_id", "may_go_negative", "debits_posted", "credits_posted", "debits_pending", "credits_pending",
        "changed",
    )

    def __init__(self, account_id: str, may_go_negative: bool, counters: Sequence[int]) -> None:
        self.account_id = account_id
        self.may_go_negative = may_go_negative
        self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending = (int(c) for c in counters)
        self.changed = False

    def counters(self) -> tuple[int, int, int, int]:
        return self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending


class Known(msgspec.Struct):
    """Transfers by id, stored or made by this batch: their bodies
    ``(debit_account, credit_account, amount_fen, code, memo, two_phase)`` (plain tuples, as
    the database returns them, so a repeated batch is compared without building objects)
    and their states."""

    bodies: dict[str, tuple]
    states: dict[str, str]


def body_of(transfer: Transfer) -> tuple:
    return (
        transfer.debit_account, transfer.credit_account, transfer.amount_fen, int(transfer.code), transfer.memo,
        transfer.pending,
    )


class Plan:
    """One batch applied, in order, to balances and transfers held in memory; the database
    is written from it only when every operation has been accepted."""

    def __init__(self, balances: dict[str, Balance], known: Known) -> None:
        self.balances = balances
        self.bodies = known.bodies
        self.states = known.states
        self.stored_ids = set(known.bodies)
        self.created: list[str] = []
        self.resolved: list[str] = []  # stored pending transfers this batch resolves
        self.changes = 0

    def add_all(self, operations: Sequence[Operation]) -> None:
        changes, transfer, resolve = 0, self.transfer, self.resolve
        for operation in operations:
            kind = type(operation)
            if kind is Transfer:
                changes += transfer(operation)
            else:
                changes += resolve(operation.transfer_id, POSTED if kind is PostPending else VOIDED)
        self.changes += changes

    def transfer(self, transfer: Transfer) -> bool:
        transfer_id = transfer.transfer_id
        body = body_of(transfer)
        known = self.bodies.setdefault(transfer_id, body)
        if known is not body:
            if known != body:  # 0/1 from SQLite equals False/True, as it should
                raise IdConflict(transfer_id)
            return False
        debit_id, credit_id, amount = body[0], body[1], body[2]
        debit = self.account(debit_id, transfer_id)
        credit = self.account(credit_id, transfer_id)
        if not debit.may_go_negative and debit.debits_posted + debit.debits_pending + amount > debit.credits_posted:
            available = debit.credits_posted - debit.debits_posted - debit.debits_pending
            raise InsufficientFunds(debit_id, available, amount, transfer_id)
        if transfer.pending:
            debit.debits_pending += amount
            credit.credits_pending += amount
            grown = max(debit.debits_pending, credit.credits_pending)
            self.states[transfer_id] = PENDING
        else:
            debit.debits_posted += amount
            credit.credits_posted += amount
            grown = max(debit.debits_posted, credit.credits_posted)
            self.states[transfer_id] = POSTED
        if grown > MAX_BALANCE_FEN:
            raise_overflow(debit, credit, transfer_id)
        debit.changed = credit.changed = True
        self.created.append(transfer_id)
        return True

    def resolve(self, transfer_id: str, wanted: str) -> bool:
        body = self.bodies.get(transfer_id)
        if body is None:
            raise UnknownTransfer(transfer_id)
        debit_id, credit_id, amount, _code, _memo, two_phase = body
        if not two_phase:
            raise NotPending(transfer_id)
        state = self.states[transfer_id]
        if state == wanted:
            return False
        if state != PENDING:
            raise AlreadyResolved(transfer_id, state, wanted)
        debit = self.account(debit_id, transfer_id)
        credit = self.account(credit_id, transfer_id)
        debit.debits_pending -= amount
        credit.credits_pending -= amount
        if wanted == POSTED:
            debit.debits_posted += amount
            credit.credits_posted += amount
            if max(debit.debits_posted, credit.credits_posted) > MAX_BALANCE_FEN:
                raise_overflow(debit, credit, transfer_id)
        debit.changed = credit.changed = True
        self.states[transfer_id] = wanted
        if transfer_id in self.stored_ids:
            self.resolved.append(transfer_id)
        return True

    def account(self, account_id: str, transfer_id: str) -> Balance:
        balance = self.balances.get(account_id)
        if balance is None:
            raise UnknownAccount(account_id, transfer_id)
        return balance

    def transfer_rows(self) -> list[tuple]:
        bodies, states = self.bodies, self.states
        return [(i, *bodies[i], states[i]) for i in self.created]

    def state_rows(self) -> list[tuple[str, str]]:
        return [(self.states[i], i) for i in self.resolved]

    def balance_rows(self) -> list[tuple]:
        return [(*b.counters(), b.account_id) for b in self.balances.values() if b.changed]


def raise_overflow(debit: Balance, credit: Balance, transfer_id: str) -> None:
    above = debit if max(debit.counters()) > MAX_BALANCE_FEN else credit
    raise BalanceOverflow(above.account_id, transfer_id)


def accounts_named(operations: Sequence[Operation], known: Known) -> set[str]:
    """Every account the batch may touch: those its transfers name, and those of the stored
    pending transfers it posts or voids."""
    named = {op.debit_account for op in operations if type(op) is Transfer}
    named |= {op.credit_account for op in operations if type(op) is Transfer}
    for operation in operations:
        body = known.bodies.get(operation.transfer_id) if type(operation) is not Transfer else None
        if body is not None:
            named.update(body[:2])
    return named


class LockSetChanged(Exception):
    """PostgreSQL: a transfer committed while we waited for the locks names an account we did
    not lock. Rare; the batch runs again."""


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """A million-transfer batch allocates millions of small tuples; the cyclic collector
    would scan them again and again (a third of the batch's time) and there are no cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# -- the SQL, per database -------------------------------------------------------------------


def known_from_rows(rows: Iterable[Sequence]) -> Known:
    known = Known({}, {})
    for row in rows:
        known.bodies[row[0]] = tuple(row[1:7])
        known.states[row[0]] = row[7]
    return known


def lock_accounts(connection: sa.Connection, account_ids: Iterable[str]) -> dict[str, Balance]:
    """Read (and on PostgreSQL lock, in id order) the named accounts that exist."""
    ordered = sorted(account_ids)
    balances: dict[str, Balance] = {}
    columns = [cash_accounts.c[c] for c in ("account_id", "may_go_negative", *BALANCE_COLUMNS)]
    for start in range(0, len(ordered), 5_000):  # keep below SQLite's limit on parameters
        query = (
            sa.select(*columns)
            .where(cash_accounts.c.account_id.in_(ordered[start : start + 5_000]))
            .order_by(cash_accounts.c.account_id)
            .with_for_update()  # SQLite has no FOR UPDATE; SQLAlchemy leaves it out there
        )
        for account_id, may_go_negative, *counters in connection.execute(query):
            balances[account_id] = Balance(account_id, bool(may_go_negative), counters)
    return balances


class SqliteStore:
    serializes_writers = True  # BEGIN IMMEDIATE: one writer at a time, from before its first read
    driver_integrity_error = sa.exc.IntegrityError  # every statement goes through SQLAlchemy

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        columns = ", ".join(TRANSFER_COLUMNS)
        self.insert_sql = f"INSERT INTO cash_transfers ({columns}) VALUES ({', '.join('?' * len(TRANSFER_COLUMNS))})"
        self.state_sql = "UPDATE cash_transfers SET state = ? WHERE transfer_id = ? AND state = 'pending'"
        sets = ", ".join(f"{c} = ?" for c in BALANCE_COLUMNS)
        self.balance_sql = f"UPDATE cash_accounts SET {sets} WHERE account_id = ?"
        # One parameter for any number of ids; a join, because "IN (SELECT value FROM
        # json_each(?))" first builds an index of all the ids and costs three times as much.
        self.read_sql = (
            f"SELECT {', '.join('t.' + c for c in TRANSFER_COLUMNS)} FROM json_each(?) AS j "
            "JOIN cash_transfers AS t ON t.transfer_id = j.value"
        )

    @contextlib.contextmanager
    def transaction(self, begin: str) -> Iterator[sa.Connection]:
        # The driver's own transaction handling would start the transaction late (at the first
        # write); in autocommit mode we say exactly when it begins and how.
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql(begin)
            try:
                yield connection
            except BaseException:
                with contextlib.suppress(sa.exc.DBAPIError):  # SQLite may have rolled back already
                    connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")

    def write(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self.transaction("BEGIN IMMEDIATE")

    def read(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self.transaction("BEGIN")

    def read_transfers(self, connection: sa.Connection, transfer_ids: Sequence[str]) -> Known:
        if not transfer_ids:
            return Known({}, {})
        return known_from_rows(connection.exec_driver_sql(self.read_sql, (json.dumps(transfer_ids),)).fetchall())

    def write_plan(self, connection: sa.Connection, plan: Plan) -> None:
        writes = (
            (self.insert_sql, plan.transfer_rows()),
            (self.state_sql, plan.state_rows()),
            (self.balance_sql, plan.balance_rows()),
        )
        for sql, rows in writes:
            if rows:
                connection.exec_driver_sql(sql, rows)


class PostgresStore:
    serializes_writers = False  # row locks on accounts only: batches on other accounts run alongside

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # COPY goes to the driver directly, so SQLAlchemy does not wrap its errors.
        self.driver_integrity_error = engine.dialect.loaded_dbapi.IntegrityError
        columns = ", ".join(TRANSFER_COLUMNS)
        self.copy_sql = f"COPY cash_transfers ({columns}) FROM STDIN"
        self.state_sql = sa.text(
            "UPDATE cash_transfers AS t SET state = u.state "
            "FROM unnest(CAST(:states AS varchar[]), CAST(:ids AS varchar[])) AS u(state, transfer_id) "
            "WHERE t.transfer_id = u.transfer_id AND t.state = 'pending'"
        )
        self.balance_sql = sa.text(
            "UPDATE cash_accounts AS a SET debits_posted = u.dp, credits_posted = u.cp, "
            "debits_pending = u.dpe, credits_pending = u.cpe "
            "FROM unnest(CAST(:dp AS bigint[]), CAST(:cp AS bigint[]), CAST(:dpe AS bigint[]), "
            "CAST(:cpe AS bigint[]), CAST(:ids AS varchar[])) AS u(dp, cp, dpe, cpe, account_id) "
            "WHERE a.account_id = u.account_id"
        )
        # A join, not "transfer_id = ANY(:ids)": right after a bulk load, with no statistics
        # yet, the planner may scan the table testing every row against the whole array.
        self.read_sql = sa.text(
            f"SELECT {', '.join('t.' + c for c in TRANSFER_COLUMNS)} "
            "FROM unnest(CAST(:ids AS varchar[])) AS u(transfer_id) "
            "JOIN cash_transfers AS t ON t.transfer_id = u.transfer_id"
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    def read_transfers(self, connection: sa.Connection, transfer_ids: Sequence[str]) -> Known:
        rows: list = []
        for start in range(0, len(transfer_ids), PG_CHUNK_ROWS):
            chunk = list(transfer_ids[start : start + PG_CHUNK_ROWS])
            rows += connection.execute(self.read_sql, {"ids": chunk}).fetchall()
        return known_from_rows(rows)

    def write_plan(self, connection: sa.Connection, plan: Plan) -> None:
        self.copy_transfers(connection, plan.transfer_rows())
        names = {self.state_sql: ("states", "ids"), self.balance_sql: ("dp", "cp", "dpe", "cpe", "ids")}
        for sql, rows in ((self.state_sql, plan.state_rows()), (self.balance_sql, plan.balance_rows())):
            for start in range(0, len(rows), PG_CHUNK_ROWS):
                columns = zip(*rows[start : start + PG_CHUNK_ROWS])
                connection.execute(sql, dict(zip(names[sql], (list(c) for c in columns))))

    def copy_transfers(self, connection: sa.Connection, rows: list[tuple]) -> None:
        """COPY, in the batch's transaction, through the psycopg connection SQLAlchemy holds:
        four times as fast as the fastest INSERT (unnest of arrays), ten times executemany."""
        if not rows:
            return
        with connection.connection.driver_connection.cursor() as cursor, cursor.copy(self.copy_sql) as copy:
            for row in rows:
                copy.write_row(row)


# -- the ledger ------------------------------------------------------------------------------


class CashLedger:
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


def account_from_row(row: sa.Row) -> AccountBalance:
    return AccountBalance(
        row.account_id, row.kind, bool(row.may_go_negative),
        int(row.debits_posted), int(row.credits_posted), int(row.debits_pending), int(row.credits_pending),
    )


def read_accounts(connection: sa.Connection) -> list[AccountBalance]:
    rows = connection.execute(sa.select(cash_accounts).order_by(cash_accounts.c.account_id))
    return [account_from_row(row) for row in rows]


def recompute_counters(connection: sa.Connection) -> dict[str, list[int]]:
    """account id -> [debits_posted, credits_posted, debits_pending, credits_pending], summed
    from the transfers (voided ones count nowhere)."""
    counters: dict[str, list[int]] = {}
    slot = {("debit", POSTED): 0, ("credit", POSTED): 1, ("debit", PENDING): 2, ("credit", PENDING): 3}
    for side in ("debit", "credit"):
        column = cash_transfers.c[f"{side}_account"]
        query = (
            sa.select(column, cash_transfers.c.state, sa.func.sum(cash_transfers.c.amount_fen))
            .where(cash_transfers.c.state != VOIDED)
            .group_by(column, cash_transfers.c.state)
        )
        for account_id, state, total in connection.execute(query):
            counters.setdefault(account_id, [0, 0, 0, 0])[slot[side, state]] += int(total)
    return counters


def account_problems(stored: dict[str, AccountBalance], recomputed: dict[str, list[int]]) -> list[str]:
    problems = []
    for account_id, account in stored.items():
        kept = [getattr(account, c) for c in BALANCE_COLUMNS]
        expected = recomputed.get(account_id, [0, 0, 0, 0])
        if kept != expected:
            problems.append(f"account {account_id!r} keeps {kept} but its transfers sum to {expected}")
        if min(kept) < 0:
            problems.append(f"account {account_id!r} has a negative counter: {kept}")
        if not account.may_go_negative and account.available_fen < 0:
            problems.append(f"account {account_id!r} may not go negative but has {account.available_fen} available")
    return problems


def house_account_problems(stored: dict[str, AccountBalance]) -> list[str]:
    problems = []
    for account_id, kind in HOUSE_ACCOUNTS.items():
        account = stored.get(account_id)
        if account is None or account.kind != kind or account.may_go_negative != (kind in MAY_GO_NEGATIVE):
            problems.append(f"house account {account_id!r} is missing or not a {kind} account")
    problems += [
        f"account {a.account_id!r} may go negative but is neither the bank nor the settlement account"
        for a in stored.values()
        if a.may_go_negative and a.account_id not in (BANK, SETTLEMENT)
    ]
    return problems


def sum_problems(accounts: Iterable[AccountBalance]) -> list[str]:
    totals = [0, 0, 0, 0]
    for account in accounts:
        for index, column in enumerate(BALANCE_COLUMNS):
            totals[index] += getattr(account, column)
    debits_posted, credits_posted, debits_pending, credits_pending = totals
    problems = []
    if debits_posted != credits_posted:
        problems.append(f"posted debits {debits_posted} != posted credits {credits_posted}")
    if debits_pending != credits_pending:
        problems.append(f"pending debits {debits_pending} != pending credits {credits_pending}")
    return problems
