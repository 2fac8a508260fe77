"""The cash ledger's tables: accounts with their four counters, and transfers."""

from __future__ import annotations

import sqlalchemy as sa

from exchange.clearing.ledger.limits import MAX_ACCOUNT_ID_CHARS, MAX_MEMO_CHARS, MAX_TRANSFER_ID_CHARS

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
