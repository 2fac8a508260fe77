"""The cash ledger's vocabulary: transfer states, the house accounts and account kinds,
transfer codes, the operations a batch holds and the records the ledger hands out."""

from __future__ import annotations

import enum

import msgspec

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
