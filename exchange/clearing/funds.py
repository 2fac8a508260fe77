"""Members' money in the cash ledger follows the journal.

The engine's journal is the record of what the clearing house told the exchange: a member
registered, money arrived at the house's bank (``Deposit``), money was paid out
(``Withdraw``, refused by the core when it is not free). This event sink mirrors those
events into the cash ledger: a cash account per registered member, a deposit as a transfer
bank -> member, a withdrawal as member -> bank. Each transfer's id is the journal sequence
number of its command, so a replay after a crash, which hands the same events out again,
posts nothing twice, and a deposit the ledger missed because the process died between the
journal and the ledger is posted by the replay.

The ledger therefore agrees with the exchange's accounts on every member's money before
settlement; settlement then moves it by the day's trades, and reconciliation checks both
end at the same figure.
"""

from __future__ import annotations

from exchange.clearing.ledger import CashLedger
from exchange.model.events import FundsDeposited, FundsWithdrawn, MemberRegistered


class FundsMirror:
    def __init__(self, ledger: CashLedger) -> None:
        self.ledger = ledger

    def __call__(self, seq: int, ts_ns: int, events: list) -> None:
        """The event sink: one command's events."""
        for event in events:
            kind = type(event)
            if kind is FundsDeposited:
                self.ledger.deposit(f"journal:{seq}:deposit", event.member_id, event.amount_fen)
            elif kind is FundsWithdrawn:
                self.ledger.withdraw(f"journal:{seq}:withdrawal", event.member_id, event.amount_fen)
            elif kind is MemberRegistered:
                self.ledger.open_member_account(event.member_id)
