"""The registry's tables (SQLAlchemy Core).

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
``registry_operation_ids`` the authority's operation ids: operation, request (its arguments,
                           canonical JSON), the entry it recorded (NULL for a correction that
                           changed nothing), who and when. The entry carries the id too, in
                           ``idempotency_id``, which transfers and operations share.
"""

from __future__ import annotations

import sqlalchemy as sa

from registry_adapter.port import Transfer
from registry_adapter.sql.rules import SINGLE_ACCOUNT_TYPES
from registry_adapter.sql.vocabulary import AccountType

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

operation_ids = sa.Table(
    "registry_operation_ids", metadata,
    sa.Column("operation_id", Text, primary_key=True),
    sa.Column("operation", Text, nullable=False),
    sa.Column("request", Text, nullable=False),
    sa.Column("entry_seq", sa.BigInteger),
    sa.Column("actor", Text, nullable=False),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
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
