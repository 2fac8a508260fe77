"""The authority's operations: annual caps, issuance, CCER projects and their entry,
allocation and its corrections, verified emissions.

- ``issue``: the authority creates allowances of vintage Y in the government account, never more
  than the annual cap of Y (``set_annual_cap``; a cap can't drop below what is issued or 20 times
  the reserve). ``allocate``: government account (or the reserve) -> member or reserve.
- ``change`` = ``correct_allocation(seq, qty_t)`` (*decision*): an allocation entry is never
  edited; a correcting entry moves the difference between the allocation's source and its
  recipient (who must still hold the units, else InsufficientHolding), pointing at the original
  by ``corrects_seq``; the effective allocation is the original plus its corrections.
- CCER enter with ``issue_ccer(project, account, qty)``, the project registered beforehand with
  its reduction kind and whether it sits at one of the city's covered facilities. *Decision*:
  a project whose reductions come from fossil combustion, industrial process or electricity use
  at a covered facility is excluded by the measures, and its CCER are refused *at entry*
  (:class:`ExcludedProject`). Every CCER in this registry is then usable, so ``CCER`` stays one
  fungible unit the exchange can trade, with no lot tracking through transfers.
- ``set_verified_emissions`` opens the compliance record of a member for a year.
- ``issue``, ``allocate`` and ``correct_allocation`` take an ``operation_id``: run again with
  the same id they return the first result and change nothing; the id with another request is
  refused (:mod:`registry_adapter.sql.operation_ids`). Without one (``None``: set-ups and
  tests) every call records anew; the ``exchange registry`` commands always give one.
"""

from __future__ import annotations

import sqlalchemy as sa

from registry_adapter.sql.base import RegistryBase
from registry_adapter.sql.errors import CapTooLow, ExcludedProject, NotAnAllocation, ProjectExists, UnknownProject
from registry_adapter.sql.inputs import check_allowance, check_id, check_quantity, check_year, parse_enum
from registry_adapter.sql.operation_ids import Identified
from registry_adapter.sql.queries import compliance_row, compliance_update
from registry_adapter.sql.rules import (
    SINGLE_ACCOUNT_TYPES,
    check_cap_room,
    check_emissions_correction,
    excluded_by_measures,
)
from registry_adapter.sql.schema import accounts, caps, compliance_records, entries, projects
from registry_adapter.sql.transaction import Transaction
from registry_adapter.sql.vocabulary import CCER, AccountType, Operation, ReductionKind, allowance_unit


class AuthorityOperations(RegistryBase):
    def set_annual_cap(self, year: int, qty_t: int, *, actor: str, reason: str) -> None:
        check_year(year)
        check_quantity(qty_t)

        def work(tx: Transaction) -> None:
            singles = tx.connection.execute(
                sa.select(accounts.c.account_id).where(accounts.c.account_type.in_(sorted(SINGLE_ACCOUNT_TYPES)))
            ).scalars()
            tx.lock(singles)  # the government account serialises issuance, the reserve its limit
            row = tx.connection.execute(sa.select(caps).where(caps.c.year == year).with_for_update()).first()
            issued = row.issued_t if row else 0
            if qty_t < issued:
                raise CapTooLow(year, qty_t, f"{issued} t are already issued")
            self._check_reserve_fits(tx, year, qty_t)
            if row:
                tx.connection.execute(caps.update().where(caps.c.year == year).values(cap_t=qty_t))
            else:
                tx.connection.execute(caps.insert().values(year=year, cap_t=qty_t, issued_t=0))
            tx.record(Operation.SET_CAP, unit=allowance_unit(year), qty_t=qty_t, compliance_year=year)

        self._write(work, actor, reason)

    def _check_reserve_fits(self, tx: Transaction, year: int, cap_t: int) -> None:
        reserve = [a for a, row in tx.accounts.items() if row.account_type == AccountType.ADJUSTMENT_RESERVE]
        unit = allowance_unit(year)
        held = sum(tx.balance(reserve_id, unit, flag) for reserve_id in reserve for flag in (False, True))
        if held > cap_t * self.reserve_percent // 100:
            raise CapTooLow(year, cap_t, f"the adjustment reserve holds {held} t of {unit}")

    def issue(self, unit: str, qty_t: int, *, actor: str, reason: str, operation_id: str | None = None) -> int:
        """Create allowances of a vintage in the government allocation account, within the cap."""
        year = check_allowance(unit)
        check_quantity(qty_t)
        identified = Identified(operation_id, Operation.ISSUE, unit, qty_t)

        def work(tx: Transaction) -> int:
            government = tx.single(AccountType.GOVERNMENT_ALLOCATION)
            tx.lock([government])
            first = identified.first(tx)
            if first is not None:
                assert first.entry_seq is not None, "an issue always records an entry"
                return first.entry_seq
            found = tx.connection.execute(sa.select(caps).where(caps.c.year == year).with_for_update()).first()
            row = check_cap_room(year, found, qty_t)
            tx.connection.execute(caps.update().where(caps.c.year == year).values(issued_t=row.issued_t + qty_t))
            seq = tx.move(Operation.ISSUE, None, government, unit, qty_t, **identified.columns())
            identified.remember(tx, seq)
            return seq

        return self._write(work, actor, reason)

    def register_ccer_project(
        self, project_id: str, reduction_kind: str, at_covered_facility: bool, *, actor: str, reason: str,
    ) -> bool:
        """Register a CCER project; returns whether the measures exclude its reductions."""
        check_id(project_id, "project id")
        kind = parse_enum(ReductionKind, reduction_kind, "reduction kind")
        excluded = excluded_by_measures(kind, at_covered_facility)

        def work(tx: Transaction) -> bool:
            row = tx.connection.execute(sa.select(projects).where(projects.c.project_id == project_id)).first()
            if row is not None:
                if (row.reduction_kind, bool(row.at_covered_facility)) != (kind.value, bool(at_covered_facility)):
                    raise ProjectExists(project_id)
                return excluded
            tx.connection.execute(projects.insert().values(
                project_id=project_id, reduction_kind=kind.value, at_covered_facility=bool(at_covered_facility),
                excluded=excluded,
            ))
            where = "at a covered facility" if at_covered_facility else "elsewhere"
            tx.record(Operation.REGISTER_PROJECT, project_id=project_id, memo=f"{kind.value} {where}")
            return excluded

        return self._write(work, actor, reason)

    def issue_ccer(
        self, project_id: str, account_id: str, qty_t: int, *, actor: str, reason: str, compliance_only: bool = False,
    ) -> int:
        """CCER of a registered project enter a member's account; excluded projects are refused."""
        check_quantity(qty_t)

        def work(tx: Transaction) -> int:
            project = tx.connection.execute(sa.select(projects).where(projects.c.project_id == project_id)).first()
            if project is None:
                raise UnknownProject(project_id)
            if project.excluded:
                raise ExcludedProject(project_id, project.reduction_kind)
            tx.lock([account_id])
            tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "receive CCER")
            return tx.move(Operation.ISSUE_CCER, None, account_id, CCER, qty_t, compliance_only, project_id=project_id)

        return self._write(work, actor, reason)

    def allocate(
        self, account_id: str, unit: str, qty_t: int, *, actor: str, reason: str,
        compliance_only: bool = False, from_reserve: bool = False, operation_id: str | None = None,
    ) -> int:
        """Allocate allowances from the government account (or the reserve) to a member or the reserve."""
        check_allowance(unit)
        check_quantity(qty_t)
        identified = Identified(operation_id, Operation.ALLOCATE, account_id, unit, qty_t, compliance_only, from_reserve)

        def work(tx: Transaction) -> int:
            source = tx.single(AccountType.ADJUSTMENT_RESERVE if from_reserve else AccountType.GOVERNMENT_ALLOCATION)
            tx.lock([source, account_id])
            first = identified.first(tx)
            if first is not None:
                assert first.entry_seq is not None, "an allocation always records an entry"
                return first.entry_seq
            receivers = {AccountType.MEMBER_HOLDING, AccountType.ADJUSTMENT_RESERVE} - {tx.account(source).account_type}
            tx.require_type(account_id, receivers, "receive an allocation from " + source)
            seq = tx.move(Operation.ALLOCATE, source, account_id, unit, qty_t, compliance_only, **identified.columns())
            identified.remember(tx, seq)
            return seq

        return self._write(work, actor, reason)

    def correct_allocation(
        self, seq: int, qty_t: int, *, actor: str, reason: str, operation_id: str | None = None,
    ) -> int | None:
        """Set what allocation ``seq`` amounts to, by an entry moving the difference."""
        check_quantity(qty_t, allow_zero=True)
        identified = Identified(operation_id, Operation.CHANGE, seq, qty_t)

        def work(tx: Transaction) -> int | None:
            original = tx.connection.execute(sa.select(entries).where(entries.c.seq == seq)).first()
            if original is None or original.operation != Operation.ALLOCATE:
                raise NotAnAllocation(seq)
            source, receiver = original.from_account, original.to_account
            tx.lock([source, receiver])
            first = identified.first(tx)
            if first is not None:
                return first.entry_seq
            difference = qty_t - self._effective_allocation(tx, original)
            correction = self._move_difference(tx, original, difference, **identified.columns())
            identified.remember(tx, correction)
            return correction

        return self._write(work, actor, reason)

    @staticmethod
    def _move_difference(tx: Transaction, original: sa.Row, difference: int, **columns: str) -> int | None:
        if difference == 0:
            return None
        source, receiver = original.from_account, original.to_account
        moving = (source, receiver) if difference > 0 else (receiver, source)
        return tx.move(
            Operation.CHANGE, *moving, original.unit, abs(difference), bool(original.compliance_only),
            corrects_seq=original.seq, **columns,
        )

    @staticmethod
    def _effective_allocation(tx: Transaction, original: sa.Row) -> int:
        e = entries.c
        corrections = tx.connection.execute(
            sa.select(e.from_account, e.qty_t).where(
                sa.or_(e.to_account == original.to_account, e.from_account == original.to_account),
                e.corrects_seq == original.seq,
            )
        )
        return original.qty_t + sum(
            qty if from_account == original.from_account else -qty for from_account, qty in corrections
        )

    def set_verified_emissions(self, account_id: str, year: int, qty_t: int, *, actor: str, reason: str) -> None:
        """Record (or correct) a member's verified emissions for a year: its obligation."""
        check_year(year)
        check_quantity(qty_t, allow_zero=True)

        def work(tx: Transaction) -> None:
            tx.lock([account_id])
            tx.require_type(account_id, {AccountType.MEMBER_HOLDING}, "carry a compliance obligation")
            record = compliance_row(tx.connection, account_id, year)
            if record is None:
                tx.connection.execute(compliance_records.insert().values(
                    account_id=account_id, year=year, verified_emissions_t=qty_t, surrendered_t=0, offset_t=0,
                ))
            else:
                check_emissions_correction(record, qty_t, self.offset_percent)
                tx.connection.execute(compliance_update(account_id, year).values(verified_emissions_t=qty_t))
            tx.record(Operation.SET_EMISSIONS, to_account=account_id, qty_t=qty_t, compliance_year=year)

        self._write(work, actor, reason)
