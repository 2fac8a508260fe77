"""What holders do with their units: surrender and offset against their obligation, bank
into the next vintage, cancel.

- ``surrender`` retires allowances of vintage Y (*decision*: only vintage Y counts for year Y:
  older units are banked forward first, later ones can't be borrowed), ``offset`` retires CCER,
  at most ``offset_percent`` (10 %) of the year's verified emissions, 1 tCO2e for 1 tCO2. Both
  take compliance-only units first, go to the cancellation account, and may not exceed what is
  still owed (*decision*: no over-surrender). ``compliance`` reports the shortfall.
- ``bank(account, year, qty)`` (*decision*): vintage Y becomes vintage Y+1, one for one, in member
  holding accounts, keeping the compliance-only flag; refused while the member's record for Y
  shows a shortfall. Recorded as a retirement of CEA-Y and a creation of CEA-(Y+1) (operation
  ``bank``); banked units don't count against the cap of Y+1.
- ``cancel``: voluntary retirement into the cancellation account.
"""

from __future__ import annotations

from registry_adapter.port import InsufficientHolding
from registry_adapter.sql.base import RegistryBase
from registry_adapter.sql.inputs import check_quantity, check_unit, check_year
from registry_adapter.sql.queries import compliance_row, compliance_update
from registry_adapter.sql.rules import check_bankable, check_retirement
from registry_adapter.sql.transaction import Transaction
from registry_adapter.sql.vocabulary import CCER, AccountType, Operation, allowance_unit


class HolderOperations(RegistryBase):
    def surrender(self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str) -> list[int]:
        """Surrender allowances of vintage ``year`` against that year's verified emissions."""
        check_year(year)
        check_quantity(qty_t)
        return self._write(
            lambda tx: self._retire_for_compliance(tx, Operation.SURRENDER, account_id, year, qty_t), actor, reason
        )

    def offset(self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str) -> list[int]:
        """Surrender CCER against that year's verified emissions, within the offset limit."""
        check_year(year)
        check_quantity(qty_t)
        return self._write(
            lambda tx: self._retire_for_compliance(tx, Operation.OFFSET, account_id, year, qty_t), actor, reason
        )

    def _retire_for_compliance(
        self, tx: Transaction, operation: Operation, account_id: str, year: int, qty_t: int,
    ) -> list[int]:
        cancellation = tx.single(AccountType.CANCELLATION)
        tx.lock([account_id, cancellation])
        tx.usable(account_id)  # a frozen account is refused before any rule is weighed
        tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "surrender")
        record = check_retirement(
            compliance_row(tx.connection, account_id, year), operation, account_id, year, qty_t, self.offset_percent,
        )
        unit = CCER if operation == Operation.OFFSET else allowance_unit(year)
        seqs = self._take_compliance_only_first(tx, operation, account_id, cancellation, unit, qty_t, year)
        column = "offset_t" if operation == Operation.OFFSET else "surrendered_t"
        tx.connection.execute(compliance_update(account_id, year).values({column: getattr(record, column) + qty_t}))
        return seqs

    @staticmethod
    def _take_compliance_only_first(
        tx: Transaction, operation: Operation, account_id: str, cancellation: str, unit: str, qty_t: int, year: int,
    ) -> list[int]:
        locked_up = tx.balance(account_id, unit, True)
        tradable = tx.balance(account_id, unit, False)
        if locked_up + tradable < qty_t:
            raise InsufficientHolding(account_id, unit, locked_up + tradable, qty_t)
        from_locked = min(locked_up, qty_t)
        parts = [(True, from_locked), (False, qty_t - from_locked)]
        return [
            tx.move(operation, account_id, cancellation, unit, part, flag, compliance_year=year)
            for flag, part in parts if part
        ]

    def bank(
        self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str, compliance_only: bool = False,
    ) -> list[int]:
        """Carry allowances of vintage ``year`` into vintage ``year + 1``, one for one."""
        check_year(year)
        check_quantity(qty_t)

        def work(tx: Transaction) -> list[int]:
            cancellation = tx.single(AccountType.CANCELLATION)
            tx.lock([account_id, cancellation])
            tx.usable(account_id)
            tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "bank allowances")
            check_bankable(compliance_row(tx.connection, account_id, year), account_id, year, self.offset_percent)
            memo = f"{allowance_unit(year)} to {allowance_unit(year + 1)}"
            retired = tx.move(Operation.BANK, account_id, cancellation, allowance_unit(year), qty_t, compliance_only,
                              compliance_year=year, memo=memo)
            created = tx.move(Operation.BANK, None, account_id, allowance_unit(year + 1), qty_t, compliance_only,
                              compliance_year=year, memo=memo)
            return [retired, created]

        return self._write(work, actor, reason)

    def cancel(
        self, account_id: str, unit: str, qty_t: int, *, actor: str, reason: str, compliance_only: bool = False,
    ) -> int:
        """Retire units voluntarily into the cancellation account."""
        check_unit(unit)
        check_quantity(qty_t)

        def work(tx: Transaction) -> int:
            cancellation = tx.single(AccountType.CANCELLATION)
            tx.lock([account_id, cancellation])
            others = set(AccountType) - {AccountType.CANCELLATION}
            tx.require_type(account_id, others, "cancel units")
            return tx.move(Operation.CANCEL, account_id, cancellation, unit, qty_t, compliance_only)

        return self._write(work, actor, reason)
