"""One operation's transaction: the accounts it locked, the holdings it read and changed,
and the entries it records.

Every operation is one database transaction; a refusal raises before commit, so nothing stays.
Every entry says who (``actor``), when (``at_ns``, read once per operation from the injected
clock) and why (``reason``). Transfers carry idempotency ids, as the port promises; issue,
allocate and correct carry the authority's operation id when given one
(:mod:`registry_adapter.sql.operation_ids`); other operations of the authority are recorded
once per call, or are idempotent by their nature (opening an open account, freezing a frozen
one, setting a cap again).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from registry_adapter.port import AccountFrozen, InsufficientHolding, UnknownAccount
from registry_adapter.sql.errors import AccountNotOpened, CapNotSet, ReserveCapExceeded, WrongAccountType
from registry_adapter.sql.inputs import check_quantity
from registry_adapter.sql.rules import PLAIN_ACCOUNT_TYPES, check_compliance_only_route
from registry_adapter.sql.schema import accounts, caps, entries, holdings
from registry_adapter.sql.vocabulary import AccountType, Operation, vintage_of

CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit

Result = TypeVar("Result")


class ReserveShare(Protocol):
    """What a transaction needs of the registry: the reserve's share of a cap, in percent."""

    reserve_percent: int


def chunks(items: Sequence[Result], size: int = CHUNK) -> Iterator[Sequence[Result]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Transaction:
    """The working state of one operation: locked accounts, holdings read and changed, and
    the entries it records. Holdings are written back by :meth:`finish`."""

    def __init__(self, connection: sa.Connection, registry: ReserveShare, at_ns: int, actor: str, reason: str) -> None:
        self.connection, self.registry = connection, registry
        self.at_ns, self.actor, self.reason = at_ns, actor, reason
        self.accounts: dict[str, sa.Row] = {}
        self.balances: dict[tuple[str, str, bool], int] = {}
        self.stored: set[tuple[str, str, bool]] = set()
        self.before: dict[tuple[str, str, bool], int] = {}
        self.loaded: set[str] = set()

    # accounts

    def lock(self, account_ids: Iterable[str]) -> None:
        """Lock (PostgreSQL: FOR UPDATE) and read the accounts, in id order: call once per operation."""
        wanted = sorted(set(account_ids) - self.accounts.keys())
        for chunk in chunks(wanted):
            query = sa.select(accounts).where(accounts.c.account_id.in_(chunk)).order_by(accounts.c.account_id)
            for row in self.connection.execute(query.with_for_update()):
                self.accounts[row.account_id] = row

    def single(self, account_type: AccountType) -> str:
        query = sa.select(accounts.c.account_id).where(accounts.c.account_type == account_type.value)
        account_id = self.connection.execute(query).scalar()
        if account_id is None:
            raise AccountNotOpened(account_type.value)
        return account_id

    def account(self, account_id: str) -> sa.Row:
        row = self.accounts.get(account_id)
        if row is None:
            raise UnknownAccount(account_id)
        return row

    def usable(self, account_id: str) -> sa.Row:
        row = self.account(account_id)
        if row.frozen:
            raise AccountFrozen(account_id)
        return row

    def require_type(self, account_id: str, allowed: Iterable[AccountType], role: str) -> sa.Row:
        row = self.account(account_id)
        if row.account_type not in allowed:
            raise WrongAccountType(account_id, row.account_type, role)
        return row

    # holdings

    def load_balances(self, account_ids: Iterable[str]) -> None:
        wanted = sorted(set(account_ids) - self.loaded)
        for chunk in chunks(wanted):
            query = sa.select(holdings).where(holdings.c.account_id.in_(chunk))
            for row in self.connection.execute(query):
                key = (row.account_id, row.unit, bool(row.compliance_only))
                self.balances[key] = row.qty_t
                self.stored.add(key)
        self.loaded.update(wanted)

    def balance(self, account_id: str, unit: str, compliance_only: bool) -> int:
        self.load_balances([account_id])
        return self.balances.get((account_id, unit, compliance_only), 0)

    def set_balance(self, key: tuple[str, str, bool], qty_t: int) -> None:
        assert qty_t >= 0, key
        self.before.setdefault(key, self.balances.get(key, 0))
        self.balances[key] = qty_t

    # entries

    def record(self, operation: Operation, **columns: Any) -> int:
        values = {
            "operation": operation.value, "qty_t": 0, "compliance_only": False, "memo": "",
            "actor": self.actor, "at_ns": self.at_ns, "reason": self.reason, **columns,
        }
        key = self.connection.execute(entries.insert().values(values)).inserted_primary_key
        assert key is not None, "an entry insert returns its id"
        return key[0]

    def move(
        self, operation: Operation, from_account: str | None, to_account: str | None, unit: str, qty_t: int,
        compliance_only: bool = False, **columns: Any,
    ) -> int:
        """Record one movement of units and change the holdings it touches."""
        check_quantity(qty_t)
        source = self.usable(from_account) if from_account is not None else None
        target = self.usable(to_account) if to_account is not None else None
        if compliance_only:
            check_compliance_only_route(source, target, unit)
        if source is not None and from_account is not None:  # source is None exactly when from_account is
            key = (from_account, unit, compliance_only and source.account_type not in PLAIN_ACCOUNT_TYPES)
            held = self.balance(*key)
            if held < qty_t:
                raise InsufficientHolding(from_account, unit, held, qty_t)
            self.set_balance(key, held - qty_t)
        if target is not None and to_account is not None:
            key = (to_account, unit, compliance_only and target.account_type not in PLAIN_ACCOUNT_TYPES)
            self.set_balance(key, self.balance(*key) + qty_t)
        return self.record(
            operation, from_account=from_account, to_account=to_account, unit=unit, qty_t=qty_t,
            compliance_only=compliance_only, **columns,
        )

    # the end of an operation

    def finish(self) -> None:
        self.check_reserve()
        self.write_balances()

    def write_balances(self) -> None:
        updates, inserts = [], []
        for key, was in self.before.items():
            now = self.balances[key]
            if now == was:
                continue
            if key in self.stored:
                updates.append({"key_account": key[0], "key_unit": key[1], "key_flag": key[2], "qty_t": now})
            else:
                inserts.append({"account_id": key[0], "unit": key[1], "compliance_only": key[2], "qty_t": now})
        if updates:
            h = holdings.c
            statement = holdings.update().where(
                h.account_id == sa.bindparam("key_account"), h.unit == sa.bindparam("key_unit"),
                h.compliance_only == sa.bindparam("key_flag"),
            )
            self.connection.execute(statement, updates)
        if inserts:
            self.connection.execute(holdings.insert(), inserts)

    def check_reserve(self) -> None:
        """The reserve holds allowances only, up to its share of the cap of their vintage."""
        grown = {
            key[1] for key, was in self.before.items()
            if self.balances[key] > was and self.accounts[key[0]].account_type == AccountType.ADJUSTMENT_RESERVE
        }
        for unit in sorted(grown):
            reserve_id = self.single(AccountType.ADJUSTMENT_RESERVE)
            held = self.balance(reserve_id, unit, False) + self.balance(reserve_id, unit, True)
            limit = self.reserve_limit(unit)
            if held > limit:
                raise ReserveCapExceeded(unit, limit, held)

    def reserve_limit(self, unit: str) -> int:
        year = vintage_of(unit)
        if year is None:
            return 0
        cap = self.connection.execute(sa.select(caps.c.cap_t).where(caps.c.year == year)).scalar()
        if cap is None:
            raise CapNotSet(year)
        return cap * self.registry.reserve_percent // 100
