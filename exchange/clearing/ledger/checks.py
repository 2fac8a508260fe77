"""Checks that need no database: a malformed operation is refused before anything is read."""

from __future__ import annotations

from exchange.clearing.ledger.errors import InvalidAmount, InvalidTransfer, SameAccount
from exchange.clearing.ledger.limits import (
    MAX_ACCOUNT_ID_CHARS,
    MAX_AMOUNT_FEN,
    MAX_CODE,
    MAX_MEMO_CHARS,
    MAX_TRANSFER_ID_CHARS,
)
from exchange.clearing.ledger.vocabulary import Operation, PostPending, Transfer, VoidPending


def check_operation(operation: Operation) -> None:
    """Refuse a malformed operation before the database is touched."""
    kind = type(operation)
    if kind is Transfer:
        assert isinstance(operation, Transfer)  # for mypy, which does not narrow through ``kind``
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
