"""A batch, worked out in memory against the balances read once, before anything is written.

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
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence

import msgspec

from exchange.clearing.ledger.errors import (
    AlreadyResolved,
    BalanceOverflow,
    IdConflict,
    InsufficientFunds,
    NotPending,
    UnknownAccount,
    UnknownTransfer,
)
from exchange.clearing.ledger.limits import MAX_BALANCE_FEN
from exchange.clearing.ledger.vocabulary import PENDING, POSTED, VOIDED, Operation, PostPending, Transfer


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
            if type(operation) is Transfer:  # tested inline, not through a variable, so that mypy narrows
                changes += transfer(operation)
            else:
                changes += resolve(operation.transfer_id, POSTED if type(operation) is PostPending else VOIDED)
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
