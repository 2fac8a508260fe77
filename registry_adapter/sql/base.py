"""What every part of the registry shares: its engine, its clock and percentages, one
database transaction per operation, and a snapshot to read from.

PostgreSQL (READ COMMITTED): an operation first locks the rows of every account it touches with
``SELECT ... FOR UPDATE``, in account id order (no deadlocks between batches), then reads the
holdings, so two batches on the same accounts run one after the other and can't overdraw. A
unique-violation or deadlock from a race (the same transfer id in two concurrent batches) is
retried from scratch. SQLite: see :mod:`registry_adapter.sql.database`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from registry_adapter.port import RegistryUnavailable
from registry_adapter.sql.database import READ_ONLY_OPTION, is_transient, registry_engine, take_over_sqlite_transactions
from registry_adapter.sql.errors import InvalidInput
from registry_adapter.sql.inputs import check_id
from registry_adapter.sql.schema import metadata
from registry_adapter.sql.transaction import Result, Transaction

RETRIES = 5


class RegistryBase:
    """The engine, the clock (read once per operation) and the rulebook's percentages; running
    an operation (:meth:`_write`) and reading (:meth:`_reading`)."""

    def __init__(
        self, url_or_engine: str | sa.Engine, clock: Callable[[], int] = time.time_ns,
        reserve_percent: int = 5, offset_percent: int = 10,
    ) -> None:
        if isinstance(url_or_engine, str):
            self.engine = registry_engine(url_or_engine)
        else:
            self.engine = url_or_engine
            if self.engine.dialect.name == "sqlite":
                take_over_sqlite_transactions(self.engine)
        self.clock = clock
        self.reserve_percent = reserve_percent
        self.offset_percent = offset_percent

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # running operations

    def _write(self, work: Callable[[Transaction], Result], actor: str, reason: str) -> Result:
        check_id(actor, "actor")
        if not isinstance(reason, str):
            raise InvalidInput(f"reason {reason!r} must be a string")
        at_ns = self.clock()
        for attempt in itertools.count(1):
            try:
                with self.engine.begin() as connection:
                    tx = Transaction(connection, self, at_ns, actor, reason)
                    result = work(tx)
                    tx.finish()
                    return result
            except sa.exc.DBAPIError as error:
                if attempt < RETRIES and is_transient(error):
                    continue
                if isinstance(error, sa.exc.OperationalError):  # lost connection, lock timeout
                    raise RegistryUnavailable(f"the registry database did not answer: {error.orig}") from error
                raise
        raise AssertionError("unreachable")

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.execution_options(**{READ_ONLY_OPTION: True})
            elif connection.dialect.name == "postgresql":
                connection.execution_options(isolation_level="REPEATABLE READ")  # one snapshot for verify
            with connection.begin():
                yield connection
