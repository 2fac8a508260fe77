"""The ledger's audit: every account's counters recomputed from the transfers and checked,
with the ledger's invariants (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from exchange.clearing.ledger.schema import BALANCE_COLUMNS, cash_transfers
from exchange.clearing.ledger.vocabulary import (
    BANK,
    HOUSE_ACCOUNTS,
    MAY_GO_NEGATIVE,
    PENDING,
    POSTED,
    SETTLEMENT,
    VOIDED,
    AccountBalance,
)


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
