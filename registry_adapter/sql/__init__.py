"""The reference allowance registry (登记簿) in SQL: SQLite by default, PostgreSQL in production.

It implements the port (:mod:`registry_adapter.port`) and the registry's own rulebook from the
city's measures. Everything is SQLAlchemy Core; quantities are ``int`` tonnes stored as BIGINT.

Where things are:

``registry.py``            :class:`SqlRegistry`, put together from the parts below.
``base.py``                its engine, clock and percentages; one transaction per operation.
``database.py``            engines, and SQLite's transaction handling.
``schema.py``              the tables.
``vocabulary.py``          units, account types, operations, and the records handed out.
``errors.py``              refusals beyond the port's.
``inputs.py``              checks of an operation's arguments.
``rules.py``               the city's measures, as pure checks.
``transaction.py``         one operation's working state: locks, holdings, entries.
``account_operations.py``  opening, freezing and unfreezing accounts.
``authority.py``           caps, issuance, CCER projects, allocation, verified emissions.
``operation_ids.py``       the authority's operation ids: a retried issue or allocation is found.
``holders.py``             surrender, offset, bank, cancel.
``transfers.py``           the port: tradable holdings and settlement's batches of transfers.
``batch.py``               how a batch of transfers is staged and journaled in bulk.
``queries.py``             reads.
``audit.py``               ``verify()``: the journal recomputed and compared.
"""

from __future__ import annotations

from registry_adapter.port import (
    AccountFrozen,
    IdConflict,
    InsufficientHolding,
    NotTradable,
    OperationIdConflict,
    RegistryError,
    RegistryUnavailable,
    Transfer,
    UnknownAccount,
)
from registry_adapter.sql.audit import unindexed
from registry_adapter.sql.base import RETRIES
from registry_adapter.sql.batch import (
    PreparedBatch,
    copy_rows,
    drop_repeats,
    first_position,
    forget_known,
    journal_staged,
    known_transfers,
    prepare_batch,
    stage_transfers,
)
from registry_adapter.sql.database import READ_ONLY_OPTION, registry_engine, take_over_sqlite_transactions
from registry_adapter.sql.errors import (
    AccountExists,
    AccountNotOpened,
    CapExceeded,
    CapNotSet,
    CapTooLow,
    EmissionsCorrectionRefused,
    ExceedsObligation,
    ExcludedProject,
    InvalidInput,
    InvalidQuantity,
    NoObligation,
    NotAnAllocation,
    OffsetCapExceeded,
    ProjectExists,
    ReserveCapExceeded,
    ShortfallOutstanding,
    UnknownProject,
    UnknownUnit,
    WrongAccountType,
)
from registry_adapter.sql.inputs import (
    check_allowance,
    check_id,
    check_operation_id,
    check_quantity,
    check_unit,
    check_year,
    parse_enum,
)
from registry_adapter.sql.operation_ids import Identified
from registry_adapter.sql.registry import SqlRegistry
from registry_adapter.sql.rules import (
    AUTHORITY_ACCOUNT_TYPES,
    LOCALLY_EXCLUDED_KINDS,
    PLAIN_ACCOUNT_TYPES,
    SINGLE_ACCOUNT_TYPES,
    TRANSFER_ACCOUNT_TYPES,
)
from registry_adapter.sql.schema import (
    STAGED_COLUMNS,
    Seq,
    Text,
    accounts,
    caps,
    compliance_records,
    entries,
    holdings,
    metadata,
    operation_ids,
    projects,
    staged,
    staging_metadata,
)
from registry_adapter.sql.transaction import CHUNK, Result, chunks
from registry_adapter.sql.vocabulary import (
    ALLOWANCE_UNIT,
    CCER,
    CREATIONS,
    FIRST_YEAR,
    LAST_YEAR,
    MAX_QTY_T,
    MOVEMENTS,
    AccountType,
    ComplianceStatus,
    Entry,
    Holding,
    Operation,
    OperationRecord,
    ReductionKind,
    UnitTotals,
    allowance_unit,
    vintage_of,
)

__all__ = [
    "ALLOWANCE_UNIT", "AUTHORITY_ACCOUNT_TYPES", "CCER", "CHUNK", "CREATIONS", "FIRST_YEAR", "LAST_YEAR",
    "LOCALLY_EXCLUDED_KINDS", "MAX_QTY_T", "MOVEMENTS", "PLAIN_ACCOUNT_TYPES", "READ_ONLY_OPTION", "RETRIES",
    "SINGLE_ACCOUNT_TYPES", "STAGED_COLUMNS", "TRANSFER_ACCOUNT_TYPES",
    "AccountExists", "AccountFrozen", "AccountNotOpened", "AccountType", "CapExceeded", "CapNotSet", "CapTooLow",
    "ComplianceStatus", "EmissionsCorrectionRefused", "Entry", "ExceedsObligation", "ExcludedProject", "Holding",
    "IdConflict", "Identified", "InsufficientHolding", "InvalidInput", "InvalidQuantity", "NoObligation", "NotAnAllocation",
    "NotTradable", "OffsetCapExceeded", "Operation", "OperationIdConflict", "OperationRecord", "PreparedBatch", "ProjectExists", "ReductionKind",
    "RegistryError", "RegistryUnavailable", "ReserveCapExceeded", "Result", "Seq", "ShortfallOutstanding",
    "SqlRegistry", "Text", "Transfer", "UnitTotals", "UnknownAccount", "UnknownProject", "UnknownUnit",
    "WrongAccountType",
    "accounts", "allowance_unit", "caps", "check_allowance", "check_id", "check_quantity", "check_unit",
    "check_operation_id", "check_year", "chunks", "compliance_records", "copy_rows", "drop_repeats", "entries", "first_position",
    "forget_known", "holdings", "journal_staged", "known_transfers", "metadata", "operation_ids", "parse_enum",
    "prepare_batch",
    "projects", "registry_engine", "stage_transfers", "staged", "staging_metadata", "take_over_sqlite_transactions",
    "unindexed", "vintage_of",
]
