"""The reference allowance registry (登记簿) in SQL: SQLite by default, PostgreSQL in production.

It implements the port (:mod:`registry_adapter.port`) and the registry's own rulebook from the
city's measures. Everything is SQLAlchemy Core; quantities are ``int`` tonnes stored as BIGINT.

Schema
------
``registry_accounts``      account id, type (:class:`AccountType`), frozen flag, opening time.
``registry_entries``       the append-only journal: one immutable row per recorded fact, in
                           ``seq`` order: operation, idempotency id (transfers), from/to account,
                           unit, qty_t, compliance_only, compliance_year, corrects_seq,
                           project_id, actor (who), at_ns (when), reason (why), memo. Movements
                           of units and the authority's records (caps, verified emissions,
                           freezes, openings) share it, so an account's history reads in order.
``registry_holdings``      (account, unit, compliance_only) -> qty_t, kept in the same
                           transaction as the entries; :meth:`SqlRegistry.verify` rebuilds it.
``registry_caps``          year -> annual cap and allowances issued against it.
``registry_compliance``    (member, year) -> verified emissions, surrendered, offset.
``registry_ccer_projects`` CCER projects: reduction kind, at a covered facility, excluded.

Operations and rules (decisions where the measures are silent are marked *decision*)
-----------------------------------------------------------------------------------
- Units: allowances by vintage ``CEA-YYYY`` and ``CCER``. A *compliance-only* flag rides on
  holdings: the authority gives it when it allocates to a member (``allocate(...,
  compliance_only=True)``, also the way to deliver compliance-only units sold at auction from
  the reserve); such units may then be surrendered, offset, banked, cancelled or taken back by a
  correction, but never move between two holders: :class:`NotTradable`. The government and
  reserve accounts hold plain units only (*decision*), so an entry's flag describes the
  holder's side. The port's ``holdings`` and ``apply_transfers`` see tradable units only; a
  transfer that only compliance-only units could cover is refused with ``NotTradable``.
- One government allocation, one adjustment reserve and one cancellation account (*decision*:
  operations find them by type). Settlement (``apply_transfers``) may move units between member
  holding, exchange settlement, auction and reserve accounts, never out of the government
  account or into or out of the cancellation account: those move only by the operations below.
- ``issue``: the authority creates allowances of vintage Y in the government account, never more
  than the annual cap of Y (``set_annual_cap``; a cap can't drop below what is issued or 20 times
  the reserve). ``allocate``: government account (or the reserve) -> member or reserve.
- ``change`` = ``correct_allocation(seq, qty_t)`` (*decision*): an allocation entry is never
  edited; a correcting entry moves the difference between the allocation's source and its
  recipient (who must still hold the units, else InsufficientHolding), pointing at the original
  by ``corrects_seq``; the effective allocation is the original plus its corrections.
- CCER enter with ``issue_ccer(project, account, qty)``, the project registered beforehand with
  its reduction kind and whether it sits at one of the city's covered facilities. *Decision*:
  a project whose reductions come from fossil combustion, industrial process or electricity use
  at a covered facility is excluded by the measures, and its CCER are refused *at entry*
  (:class:`ExcludedProject`). Every CCER in this registry is then usable, so ``CCER`` stays one
  fungible unit the exchange can trade, with no lot tracking through transfers.
- ``set_verified_emissions`` opens the compliance record of a member for a year. ``surrender``
  retires allowances of vintage Y (*decision*: only vintage Y counts for year Y: older units are
  banked forward first, later ones can't be borrowed), ``offset`` retires CCER, at most
  ``offset_percent`` (10 %) of the year's verified emissions, 1 tCO2e for 1 tCO2. Both take
  compliance-only units first, go to the cancellation account, and may not exceed what is still
  owed (*decision*: no over-surrender). ``compliance`` reports the shortfall.
- ``bank(account, year, qty)`` (*decision*): vintage Y becomes vintage Y+1, one for one, in member
  holding accounts, keeping the compliance-only flag; refused while the member's record for Y
  shows a shortfall. Recorded as a retirement of CEA-Y and a creation of CEA-(Y+1) (operation
  ``bank``); banked units don't count against the cap of Y+1.
- ``cancel``: voluntary retirement into the cancellation account.
- ``freeze``/``unfreeze``: nothing moves into or out of a frozen account, by any operation.
- The adjustment reserve holds allowances only, never more than ``reserve_percent`` (5 %) of the
  cap of their vintage, and never less than zero (holdings are never negative).
- Conservation: per unit, the holdings of all accounts (the cancellation account included) sum
  to what was created (issue, issue_ccer, the creating half of bank); outside the cancellation
  account the total changes only by creation and retirement (cancel, surrender, offset, the
  retiring half of bank). ``verify()`` checks this, the holdings against the entries, caps,
  reserve, compliance records and flows.
- Every entry says who (``actor``), when (``at_ns``, read once per operation from the injected
  clock) and why (``reason``). Only transfers carry idempotency ids, as the port promises; an
  operation of the authority is recorded once per call (*decision*: a retried operator command
  is checked against ``history``, not deduplicated).

Transactions and locking
------------------------
Every operation is one database transaction; a refusal raises before commit, so nothing stays.
PostgreSQL (READ COMMITTED): an operation first locks the rows of every account it touches with
``SELECT ... FOR UPDATE``, in account id order (no deadlocks between batches), then reads the
holdings, so two batches on the same accounts run one after the other and can't overdraw. A
unique-violation or deadlock from a race (the same transfer id in two concurrent batches) is
retried from scratch. SQLite: SQLAlchemy's documented pysqlite workaround (the driver's own BEGIN
switched off, BEGIN emitted from the ``begin`` event): writers ``BEGIN IMMEDIATE`` and hold the
database's write lock from the first read, so check-then-write is atomic; readers ``BEGIN``
(deferred) and read a consistent snapshot in WAL mode without blocking the writers.

Transfers within a batch apply in order, as the in-memory fake does: an account may pass on
units it received earlier in the batch, not later; a refusal names the first failing transfer.

Throughput of ``apply_transfers`` (medians of 3 runs of a 2,000,000-transfer batch among 2,000
member accounts; a shared 2-core VM; SQLite 3.40 file in WAL mode, local PostgreSQL 15):

==========  ================  ===========================  =================
            empty journal     journal of 2M entries        replay (all known)
==========  ================  ===========================  =================
SQLite      121,000 /s        110,000 /s                   248,000 /s
PostgreSQL   96,000 /s         76,000 /s                   193,000 /s
==========  ================  ===========================  =================

The batch is staged into a temporary table in one bulk write (executemany on SQLite, COPY on
PostgreSQL), joined once against the journal for known ids, checked in one Python pass, and
copied into the journal with one INSERT ... SELECT. Most of the time is index upkeep of that
insert (idempotency id, from and to account): a bare INSERT ... SELECT of 1M rows into the same
PostgreSQL table takes 7-10 s on that box. ``verify()`` of a 4M-entry journal: SQLite 13 s,
PostgreSQL 5 s.
"""

from __future__ import annotations

import enum
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import msgspec
import msgspec.structs
import sqlalchemy as sa

from registry_adapter.port import (
    AccountFrozen,
    IdConflict,
    InsufficientHolding,
    NotTradable,
    RegistryError,
    RegistryUnavailable,
    Transfer,
    UnknownAccount,
)

MAX_QTY_T = 2**63 - 1
CCER = "CCER"
ALLOWANCE_UNIT = re.compile(r"CEA-(\d{4})")
FIRST_YEAR, LAST_YEAR = 1990, 9998  # four digits, and room to bank into the next year
CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit
RETRIES = 5
READ_ONLY_OPTION = "registry_read_only"

Result = TypeVar("Result")


class AccountType(enum.StrEnum):
    MEMBER_HOLDING = "member_holding"
    EXCHANGE_SETTLEMENT = "exchange_settlement"
    GOVERNMENT_ALLOCATION = "government_allocation"
    ADJUSTMENT_RESERVE = "adjustment_reserve"
    AUCTION = "auction"
    CANCELLATION = "cancellation"


SINGLE_ACCOUNT_TYPES = frozenset(
    {AccountType.GOVERNMENT_ALLOCATION, AccountType.ADJUSTMENT_RESERVE, AccountType.CANCELLATION}
)
# Compliance-only units may move only if one side is one of these.
AUTHORITY_ACCOUNT_TYPES = SINGLE_ACCOUNT_TYPES
# These hold plain units only: the compliance-only flag is given by an allocation from them and
# taken back by a correction into them, so an entry's flag describes the holder's side.
PLAIN_ACCOUNT_TYPES = frozenset({AccountType.GOVERNMENT_ALLOCATION, AccountType.ADJUSTMENT_RESERVE})
TRANSFER_ACCOUNT_TYPES = frozenset(
    {AccountType.MEMBER_HOLDING, AccountType.EXCHANGE_SETTLEMENT, AccountType.AUCTION, AccountType.ADJUSTMENT_RESERVE}
)


class Operation(enum.StrEnum):
    OPEN_ACCOUNT = "open_account"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    SET_CAP = "set_cap"
    REGISTER_PROJECT = "register_project"
    SET_EMISSIONS = "set_emissions"
    ISSUE = "issue"
    ISSUE_CCER = "issue_ccer"
    ALLOCATE = "allocate"
    CHANGE = "change"
    TRANSFER = "transfer"
    SURRENDER = "surrender"
    OFFSET = "offset"
    BANK = "bank"
    CANCEL = "cancel"


MOVEMENTS = frozenset({
    Operation.ISSUE, Operation.ISSUE_CCER, Operation.ALLOCATE, Operation.CHANGE, Operation.TRANSFER,
    Operation.SURRENDER, Operation.OFFSET, Operation.BANK, Operation.CANCEL,
})
CREATIONS = frozenset({Operation.ISSUE, Operation.ISSUE_CCER, Operation.BANK})


class ReductionKind(enum.StrEnum):
    FOSSIL_COMBUSTION = "fossil_combustion"
    INDUSTRIAL_PROCESS = "industrial_process"
    ELECTRICITY_USE = "electricity_use"
    RENEWABLE_ENERGY = "renewable_energy"
    FORESTRY = "forestry"
    METHANE_RECOVERY = "methane_recovery"
    OTHER = "other"


# Reductions of these kinds at the city's own covered facilities are already inside the cap.
LOCALLY_EXCLUDED_KINDS = frozenset(
    {ReductionKind.FOSSIL_COMBUSTION, ReductionKind.INDUSTRIAL_PROCESS, ReductionKind.ELECTRICITY_USE}
)


# ---------------------------------------------------------------------------------------------
# Errors beyond the port's


class InvalidQuantity(RegistryError):
    def __init__(self, qty_t: object) -> None:
        super().__init__(f"quantity {qty_t!r} is not a whole number of tonnes between 1 and {MAX_QTY_T}")
        self.qty_t = qty_t


class InvalidInput(RegistryError):
    """A malformed argument: an empty id, a year out of range, an unknown type name."""


class UnknownUnit(RegistryError):
    def __init__(self, unit: str, expected: str = "CEA-YYYY or CCER") -> None:
        super().__init__(f"unit {unit!r} is not valid here: expected {expected}")
        self.unit = unit


class AccountExists(RegistryError):
    def __init__(self, account_id: str, account_type: str) -> None:
        super().__init__(f"registry account {account_id!r} already exists as {account_type}")
        self.account_id, self.account_type = account_id, account_type


class AccountNotOpened(RegistryError):
    def __init__(self, account_type: str) -> None:
        super().__init__(f"no {account_type} account is open in the registry")
        self.account_type = account_type


class WrongAccountType(RegistryError):
    def __init__(self, account_id: str, account_type: str, role: str) -> None:
        super().__init__(f"registry account {account_id!r} ({account_type}) cannot {role}")
        self.account_id, self.account_type, self.role = account_id, account_type, role


class CapNotSet(RegistryError):
    def __init__(self, year: int) -> None:
        super().__init__(f"no annual cap is set for {year}")
        self.year = year


class CapExceeded(RegistryError):
    def __init__(self, year: int, cap_t: int, issued_t: int, wanted_t: int) -> None:
        super().__init__(f"issuing {wanted_t} t would exceed the {year} cap of {cap_t} t ({issued_t} t issued)")
        self.year, self.cap_t, self.issued_t, self.wanted_t = year, cap_t, issued_t, wanted_t


class CapTooLow(RegistryError):
    def __init__(self, year: int, cap_t: int, why: str) -> None:
        super().__init__(f"a {year} cap of {cap_t} t is too low: {why}")
        self.year, self.cap_t = year, cap_t


class ReserveCapExceeded(RegistryError):
    def __init__(self, unit: str, limit_t: int, would_hold_t: int) -> None:
        super().__init__(f"the adjustment reserve would hold {would_hold_t} t of {unit}, above its limit of {limit_t} t")
        self.unit, self.limit_t, self.would_hold_t = unit, limit_t, would_hold_t


class UnknownProject(RegistryError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"unknown CCER project {project_id!r}")
        self.project_id = project_id


class ProjectExists(RegistryError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"CCER project {project_id!r} is already registered with other attributes")
        self.project_id = project_id


class ExcludedProject(RegistryError):
    def __init__(self, project_id: str, reduction_kind: str) -> None:
        super().__init__(
            f"CCER project {project_id!r} reduces {reduction_kind} at a covered facility of the city: "
            "its reductions may not be used here"
        )
        self.project_id, self.reduction_kind = project_id, reduction_kind


class NoObligation(RegistryError):
    def __init__(self, account_id: str, year: int) -> None:
        super().__init__(f"no verified emissions are recorded for {account_id!r} in {year}")
        self.account_id, self.year = account_id, year


class ExceedsObligation(RegistryError):
    def __init__(self, account_id: str, year: int, remaining_t: int, wanted_t: int) -> None:
        super().__init__(f"{account_id!r} owes {remaining_t} t for {year}; {wanted_t} t offered")
        self.account_id, self.year, self.remaining_t, self.wanted_t = account_id, year, remaining_t, wanted_t


class OffsetCapExceeded(RegistryError):
    def __init__(self, account_id: str, year: int, limit_t: int, used_t: int, wanted_t: int) -> None:
        super().__init__(
            f"{account_id!r} may offset at most {limit_t} t of CCER for {year}: {used_t} t used, {wanted_t} t more asked"
        )
        self.account_id, self.year, self.limit_t, self.used_t, self.wanted_t = account_id, year, limit_t, used_t, wanted_t


class ShortfallOutstanding(RegistryError):
    def __init__(self, account_id: str, year: int, shortfall_t: int) -> None:
        super().__init__(f"{account_id!r} still owes {shortfall_t} t for {year}: its allowances can't be banked")
        self.account_id, self.year, self.shortfall_t = account_id, year, shortfall_t


class NotAnAllocation(RegistryError):
    def __init__(self, seq: int) -> None:
        super().__init__(f"registry entry {seq} is not an allocation")
        self.seq = seq


class EmissionsCorrectionRefused(RegistryError):
    def __init__(self, account_id: str, year: int, why: str) -> None:
        super().__init__(f"verified emissions of {account_id!r} for {year} can't be set: {why}")
        self.account_id, self.year = account_id, year


# ---------------------------------------------------------------------------------------------
# What the registry hands out


class Entry(msgspec.Struct, frozen=True):
    seq: int
    operation: str
    idempotency_id: str | None
    from_account: str | None
    to_account: str | None
    unit: str | None
    qty_t: int
    compliance_only: bool
    compliance_year: int | None
    corrects_seq: int | None
    project_id: str | None
    actor: str
    at_ns: int
    reason: str
    memo: str


class Holding(msgspec.Struct, frozen=True):
    unit: str
    compliance_only: bool
    qty_t: int


class ComplianceStatus(msgspec.Struct, frozen=True):
    account_id: str
    year: int
    verified_emissions_t: int
    surrendered_t: int
    offset_t: int
    offset_limit_t: int

    @property
    def shortfall_t(self) -> int:
        return max(0, self.verified_emissions_t - self.surrendered_t - self.offset_t)


class UnitTotals(msgspec.Struct, frozen=True):
    created_t: int  # issued, entered or banked into existence
    retired_t: int  # held by the cancellation account
    outstanding_t: int  # held everywhere else


# ---------------------------------------------------------------------------------------------
# Schema

metadata = sa.MetaData()
Text = sa.String()
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid

accounts = sa.Table(
    "registry_accounts", metadata,
    sa.Column("account_id", Text, primary_key=True),
    sa.Column("account_type", Text, nullable=False),
    sa.Column("frozen", sa.Boolean, nullable=False),
    sa.Column("opened_at_ns", sa.BigInteger, nullable=False),
    sa.CheckConstraint(
        "account_type IN (" + ", ".join(f"'{kind.value}'" for kind in AccountType) + ")", name="registry_account_type"
    ),
)
# One account of each singular type, even when two operators open one at the same moment.
sa.Index(
    "registry_one_account_per_single_type", accounts.c.account_type, unique=True,
    sqlite_where=accounts.c.account_type.in_(sorted(SINGLE_ACCOUNT_TYPES)),
    postgresql_where=accounts.c.account_type.in_(sorted(SINGLE_ACCOUNT_TYPES)),
)

entries = sa.Table(
    "registry_entries", metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("operation", Text, nullable=False),
    sa.Column("idempotency_id", Text, unique=True),
    # No foreign keys: every operation checks its accounts under lock, verify() checks the
    # journal, and a per-row key check would cost a fifth of a settlement batch's insert.
    sa.Column("from_account", Text),
    sa.Column("to_account", Text),
    sa.Column("unit", Text),
    sa.Column("qty_t", sa.BigInteger, nullable=False),
    sa.Column("compliance_only", sa.Boolean, nullable=False),
    sa.Column("compliance_year", sa.Integer),
    sa.Column("corrects_seq", sa.BigInteger),
    sa.Column("project_id", Text),
    sa.Column("actor", Text, nullable=False),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("reason", Text, nullable=False),
    sa.Column("memo", Text, nullable=False),
)
# An account's history. One column each: SQLite's index entries end in the rowid (= seq), and
# PostgreSQL deduplicates repeated keys, so the indexes stay small; they are most of the cost of
# a settlement batch's insert.
sa.Index("registry_entries_from", entries.c.from_account)
sa.Index("registry_entries_to", entries.c.to_account)

holdings = sa.Table(
    "registry_holdings", metadata,
    sa.Column("account_id", Text, sa.ForeignKey("registry_accounts.account_id"), primary_key=True),
    sa.Column("unit", Text, primary_key=True),
    sa.Column("compliance_only", sa.Boolean, primary_key=True),
    sa.Column("qty_t", sa.BigInteger, nullable=False),
    sa.CheckConstraint("qty_t >= 0", name="registry_holding_not_negative"),
)

caps = sa.Table(
    "registry_caps", metadata,
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("cap_t", sa.BigInteger, nullable=False),
    sa.Column("issued_t", sa.BigInteger, nullable=False),
)

compliance_records = sa.Table(
    "registry_compliance", metadata,
    sa.Column("account_id", Text, sa.ForeignKey("registry_accounts.account_id"), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("verified_emissions_t", sa.BigInteger, nullable=False),
    sa.Column("surrendered_t", sa.BigInteger, nullable=False),
    sa.Column("offset_t", sa.BigInteger, nullable=False),
)

projects = sa.Table(
    "registry_ccer_projects", metadata,
    sa.Column("project_id", Text, primary_key=True),
    sa.Column("reduction_kind", Text, nullable=False),
    sa.Column("at_covered_facility", sa.Boolean, nullable=False),
    sa.Column("excluded", sa.Boolean, nullable=False),
)

# A batch of transfers is staged here, in the transaction's own connection, then joined
# against the journal and copied into it.
staging_metadata = sa.MetaData()
staged = sa.Table(
    "registry_staged_transfers", staging_metadata,
    sa.Column("idx", Seq, primary_key=True, autoincrement=True),  # batch order
    sa.Column("transfer_id", Text, nullable=False),
    sa.Column("from_account", Text, nullable=False),
    sa.Column("to_account", Text, nullable=False),
    sa.Column("unit", Text, nullable=False),
    sa.Column("qty_t", sa.BigInteger, nullable=False),
    sa.Column("memo", Text, nullable=False),
    prefixes=["TEMPORARY"],
)
STAGED_COLUMNS = [column.name for column in staged.columns if column.name != "idx"]
assert tuple(STAGED_COLUMNS) == Transfer.__struct_fields__  # rows are msgspec.structs.astuple(transfer)


# ---------------------------------------------------------------------------------------------
# Small checks


def allowance_unit(year: int) -> str:
    return f"CEA-{year}"


def vintage_of(unit: str) -> int | None:
    match = ALLOWANCE_UNIT.fullmatch(unit) if isinstance(unit, str) else None
    return int(match[1]) if match else None


def check_unit(unit: str) -> str:
    if unit != CCER and vintage_of(unit) is None:
        raise UnknownUnit(unit)
    return unit


def check_allowance(unit: str) -> int:
    year = vintage_of(unit)
    if year is None:
        raise UnknownUnit(unit, "an allowance unit CEA-YYYY")
    return year


def check_quantity(qty_t: object, allow_zero: bool = False) -> int:
    if type(qty_t) is not int or not (0 if allow_zero else 1) <= qty_t <= MAX_QTY_T:
        raise InvalidQuantity(qty_t)
    return qty_t


def check_year(year: object) -> int:
    if type(year) is not int or not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInput(f"year {year!r} is not between {FIRST_YEAR} and {LAST_YEAR}")
    return year


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInput(f"{what} {value!r} must be a non-empty string of at most 200 characters")
    return value


def parse_enum(kind: type[enum.StrEnum], value: str, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise InvalidInput(f"{what} {value!r} is not one of: {choices}") from None


def unindexed(column: sa.ColumnElement) -> sa.ColumnElement:
    """The column as an expression no index serves: grouping the whole journal by account
    then reads it in one sequential scan, not row by row through the account index."""
    return sa.func.coalesce(column, "").label(column.name)


def chunks(items: Sequence[Result], size: int = CHUNK) -> Iterator[Sequence[Result]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class PreparedBatch(msgspec.Struct):
    transfers: list[Transfer]  # without repeated ids, in order
    rows: list[tuple]  # the same, as rows to stage
    conflict_at: int | None  # position of the first id repeated with another body


def prepare_batch(transfers: Sequence[Transfer]) -> PreparedBatch:
    """Drop repeated ids, check quantities, make the rows to stage. The checks run in C (set,
    map, min, max) for the common case of a clean batch: a settlement holds millions."""
    batch = list(transfers)
    ids = [transfer.transfer_id for transfer in batch]
    conflict_at = None
    if len(set(ids)) != len(ids):
        batch, conflict_at = drop_repeats(batch)
    quantities = [transfer.qty_t for transfer in batch]
    if batch and (set(map(type, quantities)) != {int} or min(quantities) < 1 or max(quantities) > MAX_QTY_T):
        for qty_t in quantities:
            check_quantity(qty_t)
    return PreparedBatch(batch, list(map(msgspec.structs.astuple, batch)), conflict_at)


def drop_repeats(batch: list[Transfer]) -> tuple[list[Transfer], int | None]:
    """Keep the first transfer of each id, and find where an id first comes with another body."""
    seen: dict[str, Transfer] = {}
    conflict_at = None
    for position, transfer in enumerate(batch):
        first = seen.setdefault(transfer.transfer_id, transfer)
        if first != transfer and conflict_at is None:
            conflict_at = position
    return list(seen.values()), conflict_at


def first_position(transfers: Sequence[Transfer], transfer_id: str) -> int:
    return next(position for position, transfer in enumerate(transfers) if transfer.transfer_id == transfer_id)


# ---------------------------------------------------------------------------------------------
# Engines


def registry_engine(url: str) -> sa.Engine:
    """An engine for the registry; SQLite engines get the transaction handling described above."""
    is_sqlite = sa.make_url(url).get_backend_name() == "sqlite"
    engine = sa.create_engine(url, connect_args={"timeout": 60} if is_sqlite else {})
    if is_sqlite:
        take_over_sqlite_transactions(engine)
    return engine


def take_over_sqlite_transactions(engine: sa.Engine) -> None:
    """SQLAlchemy's pysqlite workaround: the legacy driver begins no transaction before a
    SELECT, so a read-check-write would not be atomic. Turn its BEGIN off and emit ours."""
    if sa.event.contains(engine, "connect", _on_sqlite_connect):
        return
    sa.event.listen(engine, "connect", _on_sqlite_connect)
    sa.event.listen(engine, "begin", _on_sqlite_begin)
    engine.dispose()  # pooled connections made before the listeners would miss them


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
    cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB: big batches touch many index pages
    cursor.close()


def _on_sqlite_begin(connection: sa.Connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _is_transient(error: sa.exc.DBAPIError) -> bool:
    """PostgreSQL races that a fresh attempt resolves: a unique id inserted by a concurrent
    batch, a deadlock, a serialization failure."""
    return getattr(error.orig, "sqlstate", None) in {"23505", "40P01", "40001"}


# ---------------------------------------------------------------------------------------------
# One operation's transaction


class _Transaction:
    """The working state of one operation: locked accounts, holdings read and changed, and
    the entries it records. Holdings are written back by :meth:`finish`."""

    def __init__(self, connection: sa.Connection, registry: SqlRegistry, at_ns: int, actor: str, reason: str) -> None:
        self.connection, self.registry = connection, registry
        self.at_ns, self.actor, self.reason = at_ns, actor, reason
        self.accounts: dict[str, sa.Row] = {}
        self.balances: dict[tuple[str, str, bool], int] = {}
        self.stored: set[tuple[str, str, bool]] = set()
        self.before: dict[tuple[str, str, bool], int] = {}
        self.loaded: set[str] = set()

    # accounts

    def lock(self, account_ids: Iterable[str]) -> None:
        """Lock (PostgreSQL: FOR UPDATE) and read the accounts, in id order: call once per operation."""
        wanted = sorted(set(account_ids) - self.accounts.keys())
        for chunk in chunks(wanted):
            query = sa.select(accounts).where(accounts.c.account_id.in_(chunk)).order_by(accounts.c.account_id)
            for row in self.connection.execute(query.with_for_update()):
                self.accounts[row.account_id] = row

    def single(self, account_type: AccountType) -> str:
        query = sa.select(accounts.c.account_id).where(accounts.c.account_type == account_type.value)
        account_id = self.connection.execute(query).scalar()
        if account_id is None:
            raise AccountNotOpened(account_type.value)
        return account_id

    def account(self, account_id: str) -> sa.Row:
        row = self.accounts.get(account_id)
        if row is None:
            raise UnknownAccount(account_id)
        return row

    def usable(self, account_id: str) -> sa.Row:
        row = self.account(account_id)
        if row.frozen:
            raise AccountFrozen(account_id)
        return row

    def require_type(self, account_id: str, allowed: Iterable[AccountType], role: str) -> sa.Row:
        row = self.account(account_id)
        if row.account_type not in allowed:
            raise WrongAccountType(account_id, row.account_type, role)
        return row

    # holdings

    def load_balances(self, account_ids: Iterable[str]) -> None:
        wanted = sorted(set(account_ids) - self.loaded)
        for chunk in chunks(wanted):
            query = sa.select(holdings).where(holdings.c.account_id.in_(chunk))
            for row in self.connection.execute(query):
                key = (row.account_id, row.unit, bool(row.compliance_only))
                self.balances[key] = row.qty_t
                self.stored.add(key)
        self.loaded.update(wanted)

    def balance(self, account_id: str, unit: str, compliance_only: bool) -> int:
        self.load_balances([account_id])
        return self.balances.get((account_id, unit, compliance_only), 0)

    def set_balance(self, key: tuple[str, str, bool], qty_t: int) -> None:
        assert qty_t >= 0, key
        self.before.setdefault(key, self.balances.get(key, 0))
        self.balances[key] = qty_t

    # entries

    def record(self, operation: Operation, **columns: Any) -> int:
        values = {
            "operation": operation.value, "qty_t": 0, "compliance_only": False, "memo": "",
            "actor": self.actor, "at_ns": self.at_ns, "reason": self.reason, **columns,
        }
        return self.connection.execute(entries.insert().values(values)).inserted_primary_key[0]

    def move(
        self, operation: Operation, from_account: str | None, to_account: str | None, unit: str, qty_t: int,
        compliance_only: bool = False, **columns: Any,
    ) -> int:
        """Record one movement of units and change the holdings it touches."""
        check_quantity(qty_t)
        source = self.usable(from_account) if from_account is not None else None
        target = self.usable(to_account) if to_account is not None else None
        if compliance_only:
            self.check_compliance_only_route(source, target, unit)
        if source is not None:
            key = (from_account, unit, compliance_only and source.account_type not in PLAIN_ACCOUNT_TYPES)
            held = self.balance(*key)
            if held < qty_t:
                raise InsufficientHolding(from_account, unit, held, qty_t)
            self.set_balance(key, held - qty_t)
        if target is not None:
            key = (to_account, unit, compliance_only and target.account_type not in PLAIN_ACCOUNT_TYPES)
            self.set_balance(key, self.balance(*key) + qty_t)
        return self.record(
            operation, from_account=from_account, to_account=to_account, unit=unit, qty_t=qty_t,
            compliance_only=compliance_only, **columns,
        )

    @staticmethod
    def check_compliance_only_route(source: sa.Row | None, target: sa.Row | None, unit: str) -> None:
        """Compliance-only units go from the authority to a member, and from a holder back to
        the authority or into retirement; never from holder to holder."""
        if source is not None and target is not None:
            if source.account_type not in AUTHORITY_ACCOUNT_TYPES and target.account_type not in AUTHORITY_ACCOUNT_TYPES:
                raise NotTradable(unit)
        plain_source = source is None or source.account_type in PLAIN_ACCOUNT_TYPES
        if plain_source and (target is None or target.account_type != AccountType.MEMBER_HOLDING):
            row = target if target is not None else source
            raise WrongAccountType(row.account_id, row.account_type, "receive compliance-only units")

    # the end of an operation

    def finish(self) -> None:
        self.check_reserve()
        self.write_balances()

    def write_balances(self) -> None:
        updates, inserts = [], []
        for key, was in self.before.items():
            now = self.balances[key]
            if now == was:
                continue
            if key in self.stored:
                updates.append({"key_account": key[0], "key_unit": key[1], "key_flag": key[2], "qty_t": now})
            else:
                inserts.append({"account_id": key[0], "unit": key[1], "compliance_only": key[2], "qty_t": now})
        if updates:
            h = holdings.c
            statement = holdings.update().where(
                h.account_id == sa.bindparam("key_account"), h.unit == sa.bindparam("key_unit"),
                h.compliance_only == sa.bindparam("key_flag"),
            )
            self.connection.execute(statement, updates)
        if inserts:
            self.connection.execute(holdings.insert(), inserts)

    def check_reserve(self) -> None:
        """The reserve holds allowances only, up to its share of the cap of their vintage."""
        grown = {
            key[1] for key, was in self.before.items()
            if self.balances[key] > was and self.accounts[key[0]].account_type == AccountType.ADJUSTMENT_RESERVE
        }
        for unit in sorted(grown):
            reserve_id = self.single(AccountType.ADJUSTMENT_RESERVE)
            held = self.balance(reserve_id, unit, False) + self.balance(reserve_id, unit, True)
            limit = self.reserve_limit(unit)
            if held > limit:
                raise ReserveCapExceeded(unit, limit, held)

    def reserve_limit(self, unit: str) -> int:
        year = vintage_of(unit)
        if year is None:
            return 0
        cap = self.connection.execute(sa.select(caps.c.cap_t).where(caps.c.year == year)).scalar()
        if cap is None:
            raise CapNotSet(year)
        return cap * self.registry.reserve_percent // 100


# ---------------------------------------------------------------------------------------------
# Bulk transfers


def stage_transfers(connection: sa.Connection, rows: list[tuple]) -> None:
    staged.create(connection, checkfirst=True)
    connection.execute(staged.delete())
    if connection.dialect.name == "postgresql":
        copy_rows(connection, rows)
    elif connection.dialect.name == "sqlite":
        # Plain tuples straight to the driver's executemany: the per-row cost is the driver's.
        placeholders = ", ".join("?" * len(STAGED_COLUMNS))
        connection.exec_driver_sql(f"INSERT INTO {staged.name} ({', '.join(STAGED_COLUMNS)}) VALUES ({placeholders})", rows)
    else:
        connection.execute(staged.insert(), [dict(zip(STAGED_COLUMNS, row)) for row in rows])


def copy_rows(connection: sa.Connection, rows: list[tuple]) -> None:
    """PostgreSQL COPY through psycopg, in the transaction's own connection."""
    driver = connection.connection.driver_connection
    statement = f"COPY {staged.name} ({', '.join(STAGED_COLUMNS)}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def known_transfers(connection: sa.Connection) -> tuple[set[str], str | None]:
    """Ids of the staged transfers already in the journal, and the first of them (in batch
    order) that the journal holds with another body. One join: a full replay is 2M rows."""
    s, e = staged.c, entries.c
    same_body = sa.and_(
        e.operation == Operation.TRANSFER.value, e.from_account == s.from_account, e.to_account == s.to_account,
        e.unit == s.unit, e.qty_t == s.qty_t, e.memo == s.memo,
    )
    query = sa.select(s.idx, s.transfer_id, sa.case((same_body, True), else_=False)).join_from(
        staged, entries, e.idempotency_id == s.transfer_id
    )
    known: set[str] = set()
    conflict: tuple[int, str] | None = None
    for idx, transfer_id, same in connection.execute(query):
        known.add(transfer_id)
        if not same and (conflict is None or idx < conflict[0]):
            conflict = (idx, transfer_id)
    return known, conflict[1] if conflict else None


def forget_known(connection: sa.Connection) -> None:
    s, e = staged.c, entries.c
    connection.execute(staged.delete().where(sa.exists().where(e.idempotency_id == s.transfer_id)))


def journal_staged(tx: _Transaction) -> None:
    """Copy the staged transfers into the journal, in batch order, in one statement."""
    s = staged.c
    source = sa.select(
        sa.literal(Operation.TRANSFER.value), s.transfer_id, s.from_account, s.to_account, s.unit, s.qty_t,
        sa.false(), sa.literal(tx.actor), sa.literal(tx.at_ns, sa.BigInteger), sa.literal(tx.reason), s.memo,
    ).order_by(s.idx)
    names = [
        "operation", "idempotency_id", "from_account", "to_account", "unit", "qty_t",
        "compliance_only", "actor", "at_ns", "reason", "memo",
    ]
    tx.connection.execute(entries.insert().from_select(names, source))


# ---------------------------------------------------------------------------------------------
# The registry


class SqlRegistry:
    """The reference registry. ``clock`` gives the time of each operation in ns since the
    epoch; it is read once per operation, outside the rules."""

    def __init__(
        self, url_or_engine: str | sa.Engine, clock: Callable[[], int] = time.time_ns,
        reserve_percent: int = 5, offset_percent: int = 10,
    ) -> None:
        if isinstance(url_or_engine, str):
            self.engine = registry_engine(url_or_engine)
        else:
            self.engine = url_or_engine
            if self.engine.dialect.name == "sqlite":
                take_over_sqlite_transactions(self.engine)
        self.clock = clock
        self.reserve_percent = reserve_percent
        self.offset_percent = offset_percent

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # running operations

    def _write(self, work: Callable[[_Transaction], Result], actor: str, reason: str) -> Result:
        check_id(actor, "actor")
        if not isinstance(reason, str):
            raise InvalidInput(f"reason {reason!r} must be a string")
        at_ns = self.clock()
        for attempt in itertools.count(1):
            try:
                with self.engine.begin() as connection:
                    tx = _Transaction(connection, self, at_ns, actor, reason)
                    result = work(tx)
                    tx.finish()
                    return result
            except sa.exc.DBAPIError as error:
                if attempt < RETRIES and _is_transient(error):
                    continue
                if isinstance(error, sa.exc.OperationalError):  # lost connection, lock timeout
                    raise RegistryUnavailable(f"the registry database did not answer: {error.orig}") from error
                raise
        raise AssertionError("unreachable")

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.execution_options(**{READ_ONLY_OPTION: True})
            elif connection.dialect.name == "postgresql":
                connection.execution_options(isolation_level="REPEATABLE READ")  # one snapshot for verify
            with connection.begin():
                yield connection

    # accounts

    def open_account(self, account_id: str, account_type: str, *, actor: str, reason: str) -> bool:
        """Open an account; ``False`` if it is already open with that type."""
        check_id(account_id, "account id")
        kind = parse_enum(AccountType, account_type, "account type")

        def work(tx: _Transaction) -> bool:
            tx.lock([account_id])
            existing = tx.accounts.get(account_id)
            if existing is not None:
                if existing.account_type == kind:
                    return False
                raise AccountExists(account_id, existing.account_type)
            if kind in SINGLE_ACCOUNT_TYPES:
                other = tx.connection.execute(
                    sa.select(accounts.c.account_id).where(accounts.c.account_type == kind.value)
                ).scalar()
                if other is not None:
                    raise AccountExists(other, kind.value)
            tx.connection.execute(
                accounts.insert().values(account_id=account_id, account_type=kind.value, frozen=False, opened_at_ns=tx.at_ns)
            )
            tx.record(Operation.OPEN_ACCOUNT, to_account=account_id, memo=kind.value)
            return True

        return self._write(work, actor, reason)

    def freeze(self, account_id: str, actor: str, reason: str) -> None:
        self._set_frozen(account_id, True, actor, reason)

    def unfreeze(self, account_id: str, actor: str, reason: str) -> None:
        self._set_frozen(account_id, False, actor, reason)

    def _set_frozen(self, account_id: str, frozen: bool, actor: str, reason: str) -> None:
        def work(tx: _Transaction) -> None:
            tx.lock([account_id])
            if bool(tx.account(account_id).frozen) == frozen:
                return  # already so: nothing to record
            tx.connection.execute(accounts.update().where(accounts.c.account_id == account_id).values(frozen=frozen))
            tx.record(Operation.FREEZE if frozen else Operation.UNFREEZE, to_account=account_id)

        self._write(work, actor, reason)

    # the port

    def holdings(self, account_id: str) -> Mapping[str, int]:
        """Tradable holdings (compliance-only units left out), units held at zero left out."""
        return {h.unit: h.qty_t for h in self.holdings_detail(account_id) if not h.compliance_only}

    def apply_transfers(self, transfers: Sequence[Transfer], actor: str, reason: str) -> None:
        prepared = prepare_batch(transfers)
        if prepared.transfers:
            self._write(lambda tx: self._apply_batch(tx, transfers, prepared), actor, reason)

    def _apply_batch(self, tx: _Transaction, transfers: Sequence[Transfer], prepared: PreparedBatch) -> None:
        batch = prepared.transfers
        account_ids = {t.from_account for t in batch} | {t.to_account for t in batch}
        tx.lock(account_ids)
        stage_transfers(tx.connection, prepared.rows)
        known, known_conflict = known_transfers(tx.connection)
        self._raise_first_conflict(transfers, prepared.conflict_at, known_conflict)
        if known:  # a retry: what was applied before is the same transfer, and stays applied once
            batch = [transfer for transfer in batch if transfer.transfer_id not in known]
            if batch:
                forget_known(tx.connection)
        if batch:
            tx.load_balances(account_ids & tx.accounts.keys())
            self._check_batch(tx, batch)
            journal_staged(tx)
        staged.drop(tx.connection)

    @staticmethod
    def _raise_first_conflict(transfers: Sequence[Transfer], conflict_at: int | None, known_conflict: str | None) -> None:
        """Name the first conflicting transfer of the batch, in the batch's order, whether its id
        repeats within the batch or is known from before."""
        positions = [] if conflict_at is None else [conflict_at]
        if known_conflict is not None:
            positions.append(first_position(transfers, known_conflict))
        if positions:
            raise IdConflict(transfers[min(positions)].transfer_id)

    def _check_batch(self, tx: _Transaction, fresh: list[Transfer]) -> None:
        """Apply the batch, in order, to running tradable balances; refuse at the first
        transfer that breaks a rule, as the port asks. Tight: it runs once per transfer."""
        ready: set[str] = set()
        running: dict[tuple[str, str], int] = {}
        stored = tx.balances
        for transfer in fresh:
            source, target, unit, qty_t = transfer.from_account, transfer.to_account, transfer.unit, transfer.qty_t
            if source not in ready:
                ready.add(self._transfer_account(tx, source))
            if target not in ready:
                ready.add(self._transfer_account(tx, target))
            held = running.get((source, unit))
            if held is None:
                held = stored.get((source, unit, False), 0)
            if held < qty_t:
                raise self._shortage(tx, transfer, held)
            running[source, unit] = held - qty_t
            got = running.get((target, unit))
            if got is None:
                got = stored.get((target, unit, False), 0)
            running[target, unit] = got + qty_t
        for (account_id, unit), qty_t in running.items():
            tx.set_balance((account_id, unit, False), qty_t)

    @staticmethod
    def _transfer_account(tx: _Transaction, account_id: str) -> str:
        tx.usable(account_id)
        tx.require_type(account_id, TRANSFER_ACCOUNT_TYPES, "take part in transfers")
        return account_id

    @staticmethod
    def _shortage(tx: _Transaction, transfer: Transfer, held: int) -> RegistryError:
        locked_up = tx.balances.get((transfer.from_account, transfer.unit, True), 0)
        if held + locked_up >= transfer.qty_t:
            return NotTradable(transfer.unit)
        return InsufficientHolding(transfer.from_account, transfer.unit, held, transfer.qty_t)

    # the authority

    def set_annual_cap(self, year: int, qty_t: int, *, actor: str, reason: str) -> None:
        check_year(year)
        check_quantity(qty_t)

        def work(tx: _Transaction) -> None:
            singles = tx.connection.execute(
                sa.select(accounts.c.account_id).where(accounts.c.account_type.in_(sorted(SINGLE_ACCOUNT_TYPES)))
            ).scalars()
            tx.lock(singles)  # the government account serialises issuance, the reserve its limit
            row = tx.connection.execute(sa.select(caps).where(caps.c.year == year).with_for_update()).first()
            issued = row.issued_t if row else 0
            if qty_t < issued:
                raise CapTooLow(year, qty_t, f"{issued} t are already issued")
            self._check_reserve_fits(tx, year, qty_t)
            if row:
                tx.connection.execute(caps.update().where(caps.c.year == year).values(cap_t=qty_t))
            else:
                tx.connection.execute(caps.insert().values(year=year, cap_t=qty_t, issued_t=0))
            tx.record(Operation.SET_CAP, unit=allowance_unit(year), qty_t=qty_t, compliance_year=year)

        self._write(work, actor, reason)

    def _check_reserve_fits(self, tx: _Transaction, year: int, cap_t: int) -> None:
        reserve = [a for a, row in tx.accounts.items() if row.account_type == AccountType.ADJUSTMENT_RESERVE]
        unit = allowance_unit(year)
        held = sum(tx.balance(reserve_id, unit, flag) for reserve_id in reserve for flag in (False, True))
        if held > cap_t * self.reserve_percent // 100:
            raise CapTooLow(year, cap_t, f"the adjustment reserve holds {held} t of {unit}")

    def issue(self, unit: str, qty_t: int, *, actor: str, reason: str) -> int:
        """Create allowances of a vintage in the government allocation account, within the cap."""
        year = check_allowance(unit)
        check_quantity(qty_t)

        def work(tx: _Transaction) -> int:
            government = tx.single(AccountType.GOVERNMENT_ALLOCATION)
            tx.lock([government])
            row = tx.connection.execute(sa.select(caps).where(caps.c.year == year).with_for_update()).first()
            if row is None:
                raise CapNotSet(year)
            if row.issued_t + qty_t > row.cap_t:
                raise CapExceeded(year, row.cap_t, row.issued_t, qty_t)
            tx.connection.execute(caps.update().where(caps.c.year == year).values(issued_t=row.issued_t + qty_t))
            return tx.move(Operation.ISSUE, None, government, unit, qty_t)

        return self._write(work, actor, reason)

    def register_ccer_project(
        self, project_id: str, reduction_kind: str, at_covered_facility: bool, *, actor: str, reason: str,
    ) -> bool:
        """Register a CCER project; returns whether the measures exclude its reductions."""
        check_id(project_id, "project id")
        kind = parse_enum(ReductionKind, reduction_kind, "reduction kind")
        excluded = bool(at_covered_facility) and kind in LOCALLY_EXCLUDED_KINDS

        def work(tx: _Transaction) -> bool:
            row = tx.connection.execute(sa.select(projects).where(projects.c.project_id == project_id)).first()
            if row is not None:
                if (row.reduction_kind, bool(row.at_covered_facility)) != (kind.value, bool(at_covered_facility)):
                    raise ProjectExists(project_id)
                return excluded
            tx.connection.execute(projects.insert().values(
                project_id=project_id, reduction_kind=kind.value, at_covered_facility=bool(at_covered_facility),
                excluded=excluded,
            ))
            where = "at a covered facility" if at_covered_facility else "elsewhere"
            tx.record(Operation.REGISTER_PROJECT, project_id=project_id, memo=f"{kind.value} {where}")
            return excluded

        return self._write(work, actor, reason)

    def issue_ccer(
        self, project_id: str, account_id: str, qty_t: int, *, actor: str, reason: str, compliance_only: bool = False,
    ) -> int:
        """CCER of a registered project enter a member's account; excluded projects are refused."""
        check_quantity(qty_t)

        def work(tx: _Transaction) -> int:
            project = tx.connection.execute(sa.select(projects).where(projects.c.project_id == project_id)).first()
            if project is None:
                raise UnknownProject(project_id)
            if project.excluded:
                raise ExcludedProject(project_id, project.reduction_kind)
            tx.lock([account_id])
            tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "receive CCER")
            return tx.move(Operation.ISSUE_CCER, None, account_id, CCER, qty_t, compliance_only, project_id=project_id)

        return self._write(work, actor, reason)

    def allocate(
        self, account_id: str, unit: str, qty_t: int, *, actor: str, reason: str,
        compliance_only: bool = False, from_reserve: bool = False,
    ) -> int:
        """Allocate allowances from the government account (or the reserve) to a member or the reserve."""
        check_allowance(unit)
        check_quantity(qty_t)

        def work(tx: _Transaction) -> int:
            source = tx.single(AccountType.ADJUSTMENT_RESERVE if from_reserve else AccountType.GOVERNMENT_ALLOCATION)
            tx.lock([source, account_id])
            receivers = {AccountType.MEMBER_HOLDING, AccountType.ADJUSTMENT_RESERVE} - {tx.account(source).account_type}
            tx.require_type(account_id, receivers, "receive an allocation from " + source)
            return tx.move(Operation.ALLOCATE, source, account_id, unit, qty_t, compliance_only)

        return self._write(work, actor, reason)

    def correct_allocation(self, seq: int, qty_t: int, *, actor: str, reason: str) -> int | None:
        """Set what allocation ``seq`` amounts to, by an entry moving the difference."""
        check_quantity(qty_t, allow_zero=True)

        def work(tx: _Transaction) -> int | None:
            original = tx.connection.execute(sa.select(entries).where(entries.c.seq == seq)).first()
            if original is None or original.operation != Operation.ALLOCATE:
                raise NotAnAllocation(seq)
            source, receiver = original.from_account, original.to_account
            tx.lock([source, receiver])
            difference = qty_t - self._effective_allocation(tx, original)
            if difference == 0:
                return None
            moving = (source, receiver) if difference > 0 else (receiver, source)
            return tx.move(
                Operation.CHANGE, *moving, original.unit, abs(difference), bool(original.compliance_only), corrects_seq=seq,
            )

        return self._write(work, actor, reason)

    @staticmethod
    def _effective_allocation(tx: _Transaction, original: sa.Row) -> int:
        e = entries.c
        corrections = tx.connection.execute(
            sa.select(e.from_account, e.qty_t).where(
                sa.or_(e.to_account == original.to_account, e.from_account == original.to_account),
                e.corrects_seq == original.seq,
            )
        )
        return original.qty_t + sum(
            qty if from_account == original.from_account else -qty for from_account, qty in corrections
        )

    def set_verified_emissions(self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str) -> None:
        """Record (or correct) a member's verified emissions for a year: its obligation."""
        check_year(year)
        check_quantity(qty_t, allow_zero=True)

        def work(tx: _Transaction) -> None:
            tx.lock([account_id])
            tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "carry a compliance obligation")
            record = self._compliance_row(tx.connection, account_id, year)
            if record is None:
                tx.connection.execute(compliance_records.insert().values(
                    account_id=account_id, year=year, verified_emissions_t=qty_t, surrendered_t=0, offset_t=0,
                ))
            else:
                self._check_correction(record, qty_t)
                tx.connection.execute(self._record_update(account_id, year).values(verified_emissions_t=qty_t))
            tx.record(Operation.SET_EMISSIONS, to_account=account_id, qty_t=qty_t, compliance_year=year)

        self._write(work, actor, reason)

    def _check_correction(self, record: sa.Row, qty_t: int) -> None:
        used = record.surrendered_t + record.offset_t
        if qty_t < used:
            raise EmissionsCorrectionRefused(record.account_id, record.year, f"{used} t are already surrendered")
        if record.offset_t > qty_t * self.offset_percent // 100:
            raise EmissionsCorrectionRefused(record.account_id, record.year, f"{record.offset_t} t are already offset")

    @staticmethod
    def _compliance_row(connection: sa.Connection, account_id: str, year: int) -> sa.Row | None:
        c = compliance_records.c
        return connection.execute(
            sa.select(compliance_records).where(c.account_id == account_id, c.year == year)
        ).first()

    @staticmethod
    def _record_update(account_id: str, year: int) -> sa.Update:
        c = compliance_records.c
        return compliance_records.update().where(c.account_id == account_id, c.year == year)

    # holders

    def surrender(self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str) -> list[int]:
        """Surrender allowances of vintage ``year`` against that year's verified emissions."""
        check_year(year)
        check_quantity(qty_t)
        return self._write(
            lambda tx: self._retire_for_compliance(tx, Operation.SURRENDER, account_id, year, qty_t), actor, reason
        )

    def offset(self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str) -> list[int]:
        """Surrender CCER against that year's verified emissions, within the offset limit."""
        check_year(year)
        check_quantity(qty_t)
        return self._write(
            lambda tx: self._retire_for_compliance(tx, Operation.OFFSET, account_id, year, qty_t), actor, reason
        )

    def _retire_for_compliance(
        self, tx: _Transaction, operation: Operation, account_id: str, year: int, qty_t: int,
    ) -> list[int]:
        cancellation = tx.single(AccountType.CANCELLATION)
        tx.lock([account_id, cancellation])
        tx.usable(account_id)  # a frozen account is refused before any rule is weighed
        tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "surrender")
        record = self._compliance_row(tx.connection, account_id, year)
        if record is None:
            raise NoObligation(account_id, year)
        remaining = record.verified_emissions_t - record.surrendered_t - record.offset_t
        if qty_t > remaining:
            raise ExceedsObligation(account_id, year, remaining, qty_t)
        if operation == Operation.OFFSET:
            limit = record.verified_emissions_t * self.offset_percent // 100
            if record.offset_t + qty_t > limit:
                raise OffsetCapExceeded(account_id, year, limit, record.offset_t, qty_t)
        unit = CCER if operation == Operation.OFFSET else allowance_unit(year)
        seqs = self._take_compliance_only_first(tx, operation, account_id, cancellation, unit, qty_t, year)
        column = "offset_t" if operation == Operation.OFFSET else "surrendered_t"
        tx.connection.execute(self._record_update(account_id, year).values({column: getattr(record, column) + qty_t}))
        return seqs

    @staticmethod
    def _take_compliance_only_first(
        tx: _Transaction, operation: Operation, account_id: str, cancellation: str, unit: str, qty_t: int, year: int,
    ) -> list[int]:
        locked_up = tx.balance(account_id, unit, True)
        tradable = tx.balance(account_id, unit, False)
        if locked_up + tradable < qty_t:
            raise InsufficientHolding(account_id, unit, locked_up + tradable, qty_t)
        from_locked = min(locked_up, qty_t)
        parts = [(True, from_locked), (False, qty_t - from_locked)]
        return [
            tx.move(operation, account_id, cancellation, unit, part, flag, compliance_year=year)
            for flag, part in parts if part
        ]

    def bank(
        self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str, compliance_only: bool = False,
    ) -> list[int]:
        """Carry allowances of vintage ``year`` into vintage ``year + 1``, one for one."""
        check_year(year)
        check_quantity(qty_t)

        def work(tx: _Transaction) -> list[int]:
            cancellation = tx.single(AccountType.CANCELLATION)
            tx.lock([account_id, cancellation])
            tx.usable(account_id)
            tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "bank allowances")
            record = self._compliance_row(tx.connection, account_id, year)
            if record is not None:
                status = self._status(record)
                if status.shortfall_t:
                    raise ShortfallOutstanding(account_id, year, status.shortfall_t)
            memo = f"{allowance_unit(year)} to {allowance_unit(year + 1)}"
            retired = tx.move(Operation.BANK, account_id, cancellation, allowance_unit(year), qty_t, compliance_only,
                              compliance_year=year, memo=memo)
            created = tx.move(Operation.BANK, None, account_id, allowance_unit(year + 1), qty_t, compliance_only,
                              compliance_year=year, memo=memo)
            return [retired, created]

        return self._write(work, actor, reason)

    def cancel(
        self, account_id: str, unit: str, qty_t: int, *, actor: str, reason: str, compliance_only: bool = False,
    ) -> int:
        """Retire units voluntarily into the cancellation account."""
        check_unit(unit)
        check_quantity(qty_t)

        def work(tx: _Transaction) -> int:
            cancellation = tx.single(AccountType.CANCELLATION)
            tx.lock([account_id, cancellation])
            others = set(AccountType) - {AccountType.CANCELLATION}
            tx.require_type(account_id, others, "cancel units")
            return tx.move(Operation.CANCEL, account_id, cancellation, unit, qty_t, compliance_only)

        return self._write(work, actor, reason)

    # reading

    def account_type(self, account_id: str) -> AccountType:
        with self._reading() as connection:
            kind = connection.execute(
                sa.select(accounts.c.account_type).where(accounts.c.account_id == account_id)
            ).scalar()
        if kind is None:
            raise UnknownAccount(account_id)
        return AccountType(kind)

    def is_frozen(self, account_id: str) -> bool:
        with self._reading() as connection:
            frozen = connection.execute(sa.select(accounts.c.frozen).where(accounts.c.account_id == account_id)).scalar()
        if frozen is None:
            raise UnknownAccount(account_id)
        return bool(frozen)

    def holdings_detail(self, account_id: str) -> list[Holding]:
        """Every unit an account holds, tradable and compliance-only, zero rows left out."""
        h = holdings.c
        with self._reading() as connection:
            self._require_account(connection, account_id)
            rows = connection.execute(
                sa.select(h.unit, h.compliance_only, h.qty_t)
                .where(h.account_id == account_id, h.qty_t > 0)
                .order_by(h.unit, h.compliance_only)
            )
            return [Holding(row.unit, bool(row.compliance_only), row.qty_t) for row in rows]

    def history(self, account_id: str, limit: int | None = None) -> list[Entry]:
        """The entries touching an account in journal order (with ``limit``, the latest ones)."""
        e = entries.c
        with self._reading() as connection:
            self._require_account(connection, account_id)
            query = sa.select(entries).where(sa.or_(e.from_account == account_id, e.to_account == account_id))
            if limit is not None:
                query = query.order_by(e.seq.desc()).limit(limit)
            rows = sorted(connection.execute(query), key=lambda row: row.seq)
        return [self._entry(row) for row in rows]

    def entries_between(self, first_seq: int = 1, last_seq: int | None = None) -> list[Entry]:
        query = sa.select(entries).where(entries.c.seq >= first_seq).order_by(entries.c.seq)
        if last_seq is not None:
            query = query.where(entries.c.seq <= last_seq)
        with self._reading() as connection:
            return [self._entry(row) for row in connection.execute(query)]

    @staticmethod
    def _entry(row: sa.Row) -> Entry:
        values = row._asdict()
        values["compliance_only"] = bool(values["compliance_only"])
        return Entry(**values)

    @staticmethod
    def _require_account(connection: sa.Connection, account_id: str) -> None:
        query = sa.select(accounts.c.account_id).where(accounts.c.account_id == account_id)
        if connection.execute(query).scalar() is None:
            raise UnknownAccount(account_id)

    def annual_cap(self, year: int) -> tuple[int, int] | None:
        """``(cap_t, issued_t)`` for a year, or ``None`` when no cap is set."""
        with self._reading() as connection:
            row = connection.execute(sa.select(caps.c.cap_t, caps.c.issued_t).where(caps.c.year == year)).first()
        return (row.cap_t, row.issued_t) if row else None

    def compliance(self, account_id: str, year: int) -> ComplianceStatus | None:
        with self._reading() as connection:
            record = self._compliance_row(connection, account_id, year)
        return self._status(record) if record else None

    def compliance_report(self, year: int) -> list[ComplianceStatus]:
        c = compliance_records.c
        with self._reading() as connection:
            rows = connection.execute(sa.select(compliance_records).where(c.year == year).order_by(c.account_id))
            return [self._status(row) for row in rows]

    def _status(self, record: sa.Row) -> ComplianceStatus:
        return ComplianceStatus(
            record.account_id, record.year, record.verified_emissions_t, record.surrendered_t, record.offset_t,
            record.verified_emissions_t * self.offset_percent // 100,
        )

    def totals(self) -> dict[str, UnitTotals]:
        """Per unit: created, retired (in the cancellation account) and outstanding."""
        with self._reading() as connection:
            created = self._created(connection)
            cancellation = self._single_or_none(connection, AccountType.CANCELLATION)
            held: Counter[tuple[str, bool]] = Counter()
            h = holdings.c
            for unit, account_id, qty in connection.execute(sa.select(h.unit, h.account_id, h.qty_t)):
                held[(unit, account_id == cancellation)] += qty
        units = sorted(set(created) | {unit for unit, _ in held})
        return {
            unit: UnitTotals(created.get(unit, 0), held[(unit, True)], held[(unit, False)]) for unit in units
        }

    @staticmethod
    def _created(connection: sa.Connection) -> dict[str, int]:
        e = entries.c
        query = sa.select(e.unit, sa.func.sum(e.qty_t)).where(
            e.from_account.is_(None), e.operation.in_(sorted(MOVEMENTS))
        ).group_by(e.unit)
        return {unit: int(total) for unit, total in connection.execute(query)}

    @staticmethod
    def _single_or_none(connection: sa.Connection, account_type: AccountType) -> str | None:
        query = sa.select(accounts.c.account_id).where(accounts.c.account_type == account_type.value)
        return connection.execute(query).scalar()

    # verification

    def verify(self) -> list[str]:
        """Recompute what follows from the journal and compare; an empty list means all holds."""
        with self._reading() as connection:
            return [
                *self._verify_holdings(connection),
                *self._verify_conservation(connection),
                *self._verify_caps_and_reserve(connection),
                *self._verify_compliance(connection),
                *self._verify_flows(connection),
            ]

    @staticmethod
    def _rebuilt_holdings(connection: sa.Connection) -> Counter[tuple[str, str, bool]]:
        e, a = entries.c, accounts.c
        plain = set(connection.execute(
            sa.select(a.account_id).where(a.account_type.in_(sorted(PLAIN_ACCOUNT_TYPES)))
        ).scalars())
        rebuilt: Counter[tuple[str, str, bool]] = Counter()
        for side, sign in ((e.to_account, 1), (e.from_account, -1)):
            account = unindexed(side)
            query = sa.select(account, e.unit, e.compliance_only, sa.func.sum(e.qty_t)).where(
                side.is_not(None), e.operation.in_(sorted(MOVEMENTS))
            ).group_by(account, e.unit, e.compliance_only)
            for account_id, unit, flag, total in connection.execute(query):
                rebuilt[(account_id, unit, bool(flag) and account_id not in plain)] += sign * int(total)
        return rebuilt

    def _verify_holdings(self, connection: sa.Connection) -> list[str]:
        rebuilt = self._rebuilt_holdings(connection)
        stored = {
            (row.account_id, row.unit, bool(row.compliance_only)): row.qty_t
            for row in connection.execute(sa.select(holdings))
        }
        problems = [f"holding {key} is negative by the journal: {qty}" for key, qty in sorted(rebuilt.items()) if qty < 0]
        opened = set(connection.execute(sa.select(accounts.c.account_id)).scalars())
        problems += [f"the journal moves units of unknown account {account_id!r}"
                     for account_id in sorted({key[0] for key in rebuilt} - opened)]
        for key in sorted(set(rebuilt) | set(stored)):
            if rebuilt.get(key, 0) != stored.get(key, 0):
                problems.append(f"holding {key}: table {stored.get(key, 0)}, journal {rebuilt.get(key, 0)}")
        return problems

    def _verify_conservation(self, connection: sa.Connection) -> list[str]:
        e, h = entries.c, holdings.c
        created = self._created(connection)
        held = {
            unit: int(total)
            for unit, total in connection.execute(sa.select(h.unit, sa.func.sum(h.qty_t)).group_by(h.unit))
        }
        problems = [
            f"{unit}: {held.get(unit, 0)} t held in all accounts, {created.get(unit, 0)} t created"
            for unit in sorted(set(created) | set(held)) if held.get(unit, 0) != created.get(unit, 0)
        ]
        odd = connection.execute(sa.select(e.seq).where(
            e.operation.in_(sorted(MOVEMENTS)),
            sa.or_(e.to_account.is_(None), sa.and_(e.from_account.is_(None), e.operation.not_in(sorted(CREATIONS)))),
        )).scalars().all()
        problems += [f"entry {seq} creates or destroys units outside issuance and cancellation" for seq in odd]
        return problems

    def _verify_caps_and_reserve(self, connection: sa.Connection) -> list[str]:
        e, h = entries.c, holdings.c
        issued = dict(connection.execute(
            sa.select(e.unit, sa.func.sum(e.qty_t)).where(e.operation == Operation.ISSUE.value).group_by(e.unit)
        ).all())
        problems = []
        cap_rows = {row.year: row for row in connection.execute(sa.select(caps))}
        for year, row in sorted(cap_rows.items()):
            journal = int(issued.pop(allowance_unit(year), 0))
            if row.issued_t != journal or row.issued_t > row.cap_t:
                problems.append(f"cap {year}: {row.cap_t} t, issued {row.issued_t} t, journal issued {journal} t")
        problems += [f"{unit}: {total} t issued without a cap" for unit, total in sorted(issued.items())]
        reserve = self._single_or_none(connection, AccountType.ADJUSTMENT_RESERVE)
        in_reserve = connection.execute(
            sa.select(h.unit, sa.func.sum(h.qty_t)).where(h.account_id == reserve).group_by(h.unit)
        ).all()
        for unit, total in in_reserve:
            year = vintage_of(unit)
            cap = cap_rows[year].cap_t if year in cap_rows else 0
            if not 0 <= total <= cap * self.reserve_percent // 100:
                problems.append(f"the adjustment reserve holds {total} t of {unit}, limit {cap * self.reserve_percent // 100} t")
        return problems

    def _verify_compliance(self, connection: sa.Connection) -> list[str]:
        e = entries.c
        retired: Counter[tuple[str, int, str]] = Counter()
        account = unindexed(e.from_account)
        query = sa.select(account, e.compliance_year, e.operation, sa.func.sum(e.qty_t)).where(
            e.operation.in_([Operation.SURRENDER.value, Operation.OFFSET.value])
        ).group_by(account, e.compliance_year, e.operation)
        for account_id, year, operation, total in connection.execute(query):
            retired[(account_id, year, operation)] = int(total)
        problems = []
        for record in connection.execute(sa.select(compliance_records)):
            key = (record.account_id, record.year)
            surrendered, offset = retired.pop((*key, "surrender"), 0), retired.pop((*key, "offset"), 0)
            status = self._status(record)
            if (surrendered, offset) != (record.surrendered_t, record.offset_t):
                problems.append(f"compliance {key}: record {record.surrendered_t}/{record.offset_t}, journal {surrendered}/{offset}")
            if status.surrendered_t + status.offset_t > status.verified_emissions_t or status.offset_t > status.offset_limit_t:
                problems.append(f"compliance {key}: more surrendered or offset than the rules allow")
            if record.verified_emissions_t != self._last_verified(connection, *key):
                problems.append(f"compliance {key}: verified emissions differ from the journal")
        problems += [f"compliance {key}: {qty} t retired without a record" for key, qty in sorted(retired.items())]
        return problems

    @staticmethod
    def _last_verified(connection: sa.Connection, account_id: str, year: int) -> int | None:
        e = entries.c
        return connection.execute(
            sa.select(e.qty_t).where(
                e.operation == Operation.SET_EMISSIONS.value, e.to_account == account_id, e.compliance_year == year
            ).order_by(e.seq.desc()).limit(1)
        ).scalar()

    def _verify_flows(self, connection: sa.Connection) -> list[str]:
        e = entries.c
        problems = []
        cancellation = self._single_or_none(connection, AccountType.CANCELLATION)
        if cancellation is not None:
            out = connection.execute(sa.select(sa.func.count()).where(e.from_account == cancellation)).scalar_one()
            if out:
                problems.append(f"{out} entries take units out of the cancellation account")
        source, target = accounts.alias("source"), accounts.alias("target")
        authority = sorted(AUTHORITY_ACCOUNT_TYPES)
        traded = connection.execute(
            sa.select(e.seq)
            .join(source, source.c.account_id == e.from_account)
            .join(target, target.c.account_id == e.to_account)
            .where(e.compliance_only.is_(True), source.c.account_type.not_in(authority), target.c.account_type.not_in(authority))
        ).scalars().all()
        problems += [f"entry {seq} moves compliance-only units between holders" for seq in traded]
        return problems
