"""The cash ledger's refusals. A refused batch leaves the ledger unchanged."""

from __future__ import annotations

from exchange.clearing.ledger.limits import MAX_AMOUNT_FEN, MAX_BALANCE_FEN, MAX_BATCH_OPERATIONS


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
