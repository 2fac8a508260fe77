"""Members' money in the cash ledger follows the journal.

The engine's journal is the record of what the clearing house told the exchange: a member
registered, money arrived at the house's bank (``Deposit``), money was paid out
(``Withdraw``, refused by the core when it is not free). This durable projection of the event
stream (named ``funds``) mirrors those events into the cash ledger: a cash account per
registered member, a deposit as a transfer bank -> member, a withdrawal as member -> bank.

It sees only records the journal has made durable, buffers their transfers and posts them in
one ledger batch per flush (one SQL transaction, however many deposits), then records its
position in the stream. Each transfer's id is the journal sequence number of its command, so
if the process dies between the ledger's commit and the position's, the replay posts the same
ids with the same bodies, which the ledger recognises as done: exactly once, with no id ever
reused for a different deposit (sequence numbers are never reused once durable).

The clearing house's reference of a deposit or withdrawal goes into the transfer's memo
(``reference R-123``), so the ledger can be searched by it. A retried one (``FundsRetried``)
moved nothing in the exchange and posts nothing here: the first's transfer stands for both.
The id stays the sequence number, not the reference: journals from before references hold
deposits without one, and an id must be the same on every replay.

The ledger therefore agrees with the exchange's accounts on every member's money before
settlement; settlement then moves it by the day's trades, and reconciliation checks both
end at the same figure.
"""

from __future__ import annotations

from exchange.clearing.ledger import BANK, MAX_BATCH_OPERATIONS, CashLedger, Transfer, TransferCode
from exchange.clearing.stream_positions import create_positions_table, read_position, write_position
from exchange.model.events import FundsDeposited, FundsWithdrawn, MemberRegistered
from exchange.model.stream import Applied


class FundsMirror:
    name = "funds"

    def __init__(self, ledger: CashLedger) -> None:
        self.ledger = ledger
        self._accounts: list[str] = []  # members to open, in registration order
        self._transfers: list[Transfer] = []
        self._applied_seq = 0
        self._stored_seq = 0

    def create_schema(self) -> None:
        create_positions_table(self.ledger.engine)
        with self.ledger.engine.connect() as connection:
            self._stored_seq = self._applied_seq = read_position(connection, self.name)

    @property
    def last_seq(self) -> int:
        return self._applied_seq

    def apply(self, applied: Applied) -> None:
        """Keep the money movements of one durable record."""
        assert applied.seq > self._applied_seq, f"record {applied.seq} applied twice"
        self._applied_seq = seq = applied.seq
        for event in applied.events:  # exact types, which mypy narrows: the model has no subclasses
            if type(event) is FundsDeposited:
                self._transfers.append(Transfer(
                    f"journal:{seq}:deposit", BANK, event.member_id, event.amount_fen, TransferCode.DEPOSIT, memo(event),
                ))
            elif type(event) is FundsWithdrawn:
                self._transfers.append(Transfer(
                    f"journal:{seq}:withdrawal", event.member_id, BANK, event.amount_fen, TransferCode.WITHDRAWAL, memo(event),
                ))
            elif type(event) is MemberRegistered:
                self._accounts.append(event.member_id)  # opened before the batch's transfers
        if len(self._transfers) >= MAX_BATCH_OPERATIONS:
            self.flush()

    def flush(self) -> None:
        """Open the new accounts, post the transfers in one batch, then record the position."""
        if self._applied_seq == self._stored_seq:
            return
        for member_id in self._accounts:
            self.ledger.open_member_account(member_id)
        if self._transfers:
            self.ledger.apply(self._transfers)
        with self.ledger.engine.begin() as connection:
            write_position(connection, self.name, self._applied_seq)
        self._stored_seq = self._applied_seq
        self._accounts.clear()
        self._transfers.clear()


def memo(event: FundsDeposited | FundsWithdrawn) -> str:
    return f"reference {event.reference}" if event.reference else ""
