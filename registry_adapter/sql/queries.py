"""Reading the registry: accounts, holdings, history, caps, compliance and totals, each from
one snapshot; and the small reads the operations and the audit share."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from registry_adapter.port import UnknownAccount
from registry_adapter.sql.base import RegistryBase
from registry_adapter.sql.rules import compliance_status
from registry_adapter.sql.schema import accounts, caps, compliance_records, entries, holdings, operation_ids
from registry_adapter.sql.vocabulary import (
    MOVEMENTS,
    AccountSummary,
    AccountType,
    ComplianceStatus,
    Entry,
    Holding,
    OperationRecord,
    UnitTotals,
)


class Queries(RegistryBase):
    def account_type(self, account_id: str) -> AccountType:
        with self._reading() as connection:
            kind = connection.execute(
                sa.select(accounts.c.account_type).where(accounts.c.account_id == account_id)
            ).scalar()
        if kind is None:
            raise UnknownAccount(account_id)
        return AccountType(kind)

    def accounts(self) -> list[AccountSummary]:
        """Every account, by id, with its type, frozen flag, opening time and tonnes held."""
        a, h = accounts.c, holdings.c
        with self._reading() as connection:
            held: Counter[tuple[str, bool]] = Counter()
            for account_id, compliance_only, qty in connection.execute(sa.select(h.account_id, h.compliance_only, h.qty_t)):
                held[(account_id, bool(compliance_only))] += qty
            rows = connection.execute(sa.select(a.account_id, a.account_type, a.frozen, a.opened_at_ns).order_by(a.account_id))
            return [
                AccountSummary(row.account_id, AccountType(row.account_type), bool(row.frozen), row.opened_at_ns,
                               held[(row.account_id, False)], held[(row.account_id, True)])
                for row in rows
            ]

    def is_frozen(self, account_id: str) -> bool:
        with self._reading() as connection:
            frozen = connection.execute(sa.select(accounts.c.frozen).where(accounts.c.account_id == account_id)).scalar()
        if frozen is None:
            raise UnknownAccount(account_id)
        return bool(frozen)

    def holdings_detail(self, account_id: str) -> list[Holding]:
        """Every unit an account holds, tradable and compliance-only, zero rows left out."""
        h = holdings.c
        with self._reading() as connection:
            self._require_account(connection, account_id)
            rows = connection.execute(
                sa.select(h.unit, h.compliance_only, h.qty_t)
                .where(h.account_id == account_id, h.qty_t > 0)
                .order_by(h.unit, h.compliance_only)
            )
            return [Holding(row.unit, bool(row.compliance_only), row.qty_t) for row in rows]

    def history(self, account_id: str, limit: int | None = None) -> list[Entry]:
        """The entries touching an account in journal order (with ``limit``, the latest ones)."""
        e = entries.c
        with self._reading() as connection:
            self._require_account(connection, account_id)
            query = sa.select(entries).where(sa.or_(e.from_account == account_id, e.to_account == account_id))
            if limit is not None:
                query = query.order_by(e.seq.desc()).limit(limit)
            rows = sorted(connection.execute(query), key=lambda row: row.seq)
        return [self._entry(row) for row in rows]

    def entries_between(self, first_seq: int = 1, last_seq: int | None = None) -> list[Entry]:
        query = sa.select(entries).where(entries.c.seq >= first_seq).order_by(entries.c.seq)
        if last_seq is not None:
            query = query.where(entries.c.seq <= last_seq)
        with self._reading() as connection:
            return [self._entry(row) for row in connection.execute(query)]

    @staticmethod
    def _entry(row: sa.Row) -> Entry:
        values = row._asdict()
        values["compliance_only"] = bool(values["compliance_only"])
        return Entry(**values)

    @staticmethod
    def _require_account(connection: sa.Connection, account_id: str) -> None:
        query = sa.select(accounts.c.account_id).where(accounts.c.account_id == account_id)
        if connection.execute(query).scalar() is None:
            raise UnknownAccount(account_id)

    def operation(self, operation_id: str) -> OperationRecord | None:
        """What an authority's operation id was used for, or None if it is unknown."""
        with self._reading() as connection:
            row = connection.execute(sa.select(operation_ids).where(operation_ids.c.operation_id == operation_id)).first()
        return OperationRecord(**row._asdict()) if row else None

    def annual_cap(self, year: int) -> tuple[int, int] | None:
        """``(cap_t, issued_t)`` for a year, or ``None`` when no cap is set."""
        with self._reading() as connection:
            row = connection.execute(sa.select(caps.c.cap_t, caps.c.issued_t).where(caps.c.year == year)).first()
        return (row.cap_t, row.issued_t) if row else None

    def compliance(self, account_id: str, year: int) -> ComplianceStatus | None:
        with self._reading() as connection:
            record = compliance_row(connection, account_id, year)
        return compliance_status(record, self.offset_percent) if record else None

    def compliance_report(self, year: int) -> list[ComplianceStatus]:
        c = compliance_records.c
        with self._reading() as connection:
            rows = connection.execute(sa.select(compliance_records).where(c.year == year).order_by(c.account_id))
            return [compliance_status(row, self.offset_percent) for row in rows]

    def totals(self) -> dict[str, UnitTotals]:
        """Per unit: created, retired (in the cancellation account) and outstanding."""
        with self._reading() as connection:
            created = created_by_unit(connection)
            cancellation = single_or_none(connection, AccountType.CANCELLATION)
            held: Counter[tuple[str, bool]] = Counter()
            h = holdings.c
            for unit, account_id, qty in connection.execute(sa.select(h.unit, h.account_id, h.qty_t)):
                held[(unit, account_id == cancellation)] += qty
        units = sorted(set(created) | {unit for unit, _ in held})
        return {
            unit: UnitTotals(created.get(unit, 0), held[(unit, True)], held[(unit, False)]) for unit in units
        }


def compliance_row(connection: sa.Connection, account_id: str, year: int) -> sa.Row | None:
    c = compliance_records.c
    return connection.execute(
        sa.select(compliance_records).where(c.account_id == account_id, c.year == year)
    ).first()


def compliance_update(account_id: str, year: int) -> sa.Update:
    c = compliance_records.c
    return compliance_records.update().where(c.account_id == account_id, c.year == year)


def created_by_unit(connection: sa.Connection) -> dict[str, int]:
    e = entries.c
    query = sa.select(e.unit, sa.func.sum(e.qty_t)).where(
        e.from_account.is_(None), e.operation.in_(sorted(MOVEMENTS))
    ).group_by(e.unit)
    return {unit: int(total) for unit, total in connection.execute(query)}


def single_or_none(connection: sa.Connection, account_type: AccountType) -> str | None:
    query = sa.select(accounts.c.account_id).where(accounts.c.account_type == account_type.value)
    return connection.execute(query).scalar()
