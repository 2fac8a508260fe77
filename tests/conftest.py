"""Shared fixtures. ``db_url``: every database test runs against SQLite, and against
PostgreSQL when ``EXCHANGE_TEST_PG_URL`` names a server (``.ci/run`` sets it to the local
one); without it the PostgreSQL case is skipped, saying why. Each PostgreSQL test gets a
schema of its own, dropped afterwards, so tests never see each other's tables."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL = os.environ.get("EXCHANGE_TEST_PG_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not PG_URL:
        pytest.skip("EXCHANGE_TEST_PG_URL is not set: the PostgreSQL run of this test needs a server")
    import sqlalchemy

    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sqlalchemy.create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
