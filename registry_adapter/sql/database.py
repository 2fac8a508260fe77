"""Engines for the registry, and the transaction handling each database needs.

SQLite: SQLAlchemy's documented pysqlite workaround (the driver's own BEGIN switched off, BEGIN
emitted from the ``begin`` event): writers ``BEGIN IMMEDIATE`` and hold the database's write
lock from the first read, so check-then-write is atomic; readers ``BEGIN`` (deferred) and read a
consistent snapshot in WAL mode without blocking the writers.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

READ_ONLY_OPTION = "registry_read_only"


def registry_engine(url: str) -> sa.Engine:
    """An engine for the registry; SQLite engines get the transaction handling described above."""
    is_sqlite = sa.make_url(url).get_backend_name() == "sqlite"
    engine = sa.create_engine(url, connect_args={"timeout": 60} if is_sqlite else {})
    if is_sqlite:
        take_over_sqlite_transactions(engine)
    return engine


def take_over_sqlite_transactions(engine: sa.Engine) -> None:
    """SQLAlchemy's pysqlite workaround: the legacy driver begins no transaction before a
    SELECT, so a read-check-write would not be atomic. Turn its BEGIN off and emit ours."""
    if sa.event.contains(engine, "connect", _on_sqlite_connect):
        return
    sa.event.listen(engine, "connect", _on_sqlite_connect)
    sa.event.listen(engine, "begin", _on_sqlite_begin)
    engine.dispose()  # pooled connections made before the listeners would miss them


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
    cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB: big batches touch many index pages
    cursor.close()


def _on_sqlite_begin(connection: sa.Connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_transient(error: sa.exc.DBAPIError) -> bool:
    """PostgreSQL races that a fresh attempt resolves: a unique id inserted by a concurrent
    batch, a deadlock, a serialization failure."""
    return getattr(error.orig, "sqlstate", None) in {"23505", "40P01", "40001"}
