"""Where each SQL projection stands in the event stream.

A durable projection (the trade store, the funds mirror) records the last journal sequence
number it has stored in ``projection_positions``, committed in the same transaction as its
rows wherever it can be, so that after a crash the engine replays exactly what the store
lacks (see :mod:`exchange.engine.stream`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

metadata = sa.MetaData()

projection_positions = sa.Table(
    "projection_positions",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)


def create_positions_table(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def read_position(connection: sa.Connection, name: str) -> int:
    """The projection's stored position; 0 when it has stored nothing."""
    query = sa.select(projection_positions.c.last_seq).where(projection_positions.c.name == name)
    return connection.execute(query).scalar() or 0


def write_position(connection: sa.Connection, name: str, last_seq: int) -> None:
    """Record the projection's position, inside the caller's transaction; it only moves on."""
    dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
    insert = dialect.insert(projection_positions).values(name=name, last_seq=last_seq)
    connection.execute(insert.on_conflict_do_update(
        index_elements=[projection_positions.c.name], set_={"last_seq": last_seq},
    ))
