"""The trade store: every trade and the closing positions, in SQL, for settlement and reports.

Each trade is stored as its obligation record (:mod:`exchange.clearing.obligations`), the
same columns whatever the venue: the venue, the two accounts, and what each side's hold backed
(``buy_source``, ``sell_source``; for the book, the order ids). The book's aggressor side is
kept beside it for the regulator's views (null for venues without one). Trade ids are the
primary key: the core numbers every venue's trades from one counter.

It is a durable projection of the event stream (:mod:`exchange.engine.stream`), named
``trades``: it applies each durable record once, buffers the trades and writes them in batches
(``executemany``) together with its position (``last_seq``) in one transaction, so after a
crash the engine replays exactly the records it lacks. Each row keeps the journal sequence
number it came from. The composition root runs it in a worker thread; call ``flush()`` before
settlement and at shutdown.

At ``EndDay`` the core reports every member's closing position (``MemberPosition``): the
exchange's view that settlement posts and reconciles against. The store writes those rows
in the same transaction as the day's last trades, so a day with positions stored has all of
its trades stored: that is how settlement knows a day is complete. A position already
stored is skipped, as a trade is.

The trading day of a trade is the stream record's own (``Applied.trading_day``).
"""

from __future__ import annotations

import msgspec
import sqlalchemy as sa

from exchange.clearing.obligations import CASH, Obligation, Venue, obligation_of
from exchange.clearing.stream_positions import (
    create_positions_table,
    read_position,
    write_position,
)
from exchange.model.events import MemberPosition, OrderFilled
from exchange.model.stream import Applied

metadata = sa.MetaData()

trades = sa.Table(
    "trades",
    metadata,
    sa.Column("trade_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("trading_day", sa.String(10), nullable=False, index=True),
    sa.Column("venue", sa.SmallInteger, nullable=False),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("qty_t", sa.BigInteger, nullable=False),
    sa.Column("price_fen", sa.BigInteger, nullable=False),
    sa.Column("buyer", sa.String(64), nullable=False),  # an account id, a member's or the house's
    sa.Column("seller", sa.String(64), nullable=False),
    sa.Column("buy_source", sa.BigInteger, nullable=True),
    sa.Column("sell_source", sa.BigInteger, nullable=True),
    sa.Column("aggressor", sa.SmallInteger, nullable=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the journal record the trade came from
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
)

# One row per member and asset at the close: ``settled`` is what the registry (tonnes) or
# the cash ledger (fen, asset ``cash``) must show once the day settles; ``obligation`` is
# + to deliver or pay, - to receive.
closing_positions = sa.Table(
    "closing_positions",
    metadata,
    sa.Column("trading_day", sa.String(10), primary_key=True),
    sa.Column("member_id", sa.String(32), primary_key=True),
    sa.Column("asset", sa.String(32), primary_key=True),
    sa.Column("settled", sa.BigInteger, nullable=False),
    sa.Column("obligation", sa.BigInteger, nullable=False),
)


class TradeStore:
    name = "trades"

    def __init__(self, url_or_engine: str | sa.Engine, batch_size: int = 10_000) -> None:
        self.engine = sa.create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.batch_size = batch_size
        self._pending: list[dict[str, object]] = []
        self._positions: list[MemberPosition] = []
        self._applied_seq = 0  # the last record applied (stored, or buffered for the next flush)
        self._stored_seq = 0

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        create_positions_table(self.engine)
        with self.engine.connect() as connection:
            self._stored_seq = self._applied_seq = read_position(connection, self.name)

    @property
    def last_seq(self) -> int:
        return self._applied_seq

    def apply(self, applied: Applied) -> None:
        """Keep the trades and closing positions of one durable record."""
        assert applied.seq > self._applied_seq, f"record {applied.seq} applied twice"
        self._applied_seq = applied.seq
        for event in applied.events:
            if type(event) is OrderFilled:  # exact types, which mypy narrows: the model has no subclasses
                self._pending.append(self._row(applied, event))
            elif type(event) is MemberPosition:
                self._positions.append(event)
        if len(self._pending) >= self.batch_size:
            self.flush()

    @staticmethod
    def _row(applied: Applied, event: OrderFilled) -> dict[str, object]:
        assert applied.trading_day, "a trade before any trading day started"
        row: dict[str, object] = obligation_row(obligation_of(event))
        row.update(trading_day=applied.trading_day, aggressor=int(event.aggressor), seq=applied.seq, ts_ns=applied.ts_ns)
        return row

    def flush(self) -> None:
        """Write the buffered trades and positions, and the position in the stream, in one
        transaction."""
        if self._applied_seq == self._stored_seq:
            return
        rows = [row for position in self._positions for row in position_rows(position)]
        with self.engine.begin() as connection:
            if self._pending:
                connection.execute(trades.insert(), self._pending)
            if rows:
                connection.execute(closing_positions.insert(), rows)
            write_position(connection, self.name, self._applied_seq)
        self._stored_seq = self._applied_seq
        self._pending.clear()
        self._positions.clear()

    def day_trades(self, trading_day: str) -> list[sa.Row]:
        """A day's trades in trade id order."""
        with self.engine.connect() as connection:
            query = sa.select(trades).where(trades.c.trading_day == trading_day).order_by(trades.c.trade_id)
            return list(connection.execute(query))

    def day_obligations(self, trading_day: str) -> list[Obligation]:
        """A day's trades as obligation records for settlement, in trade id order, with the
        venue back as the enum, so each equals the record :func:`obligation_of` made.

        Built positionally while the rows stream past, never holding them: a million rows
        kept at once (``.all()``) are a million objects the garbage collector scans again and
        again, which costs settlement more than reading them; the records are ``gc=False``."""
        columns = [trades.c[name] for name in Obligation.__struct_fields__]
        query = sa.select(*columns).where(trades.c.trading_day == trading_day).order_by(trades.c.trade_id)
        venues = {venue.value: venue for venue in Venue}
        with self.engine.connect() as connection:
            return [
                Obligation(trade, venues[venue], unit, qty, price, buyer, seller, bought, sold)
                for trade, venue, unit, qty, price, buyer, seller, bought, sold in connection.execute(query)
            ]

    def day_positions(self, trading_day: str) -> list[sa.Row]:
        """A day's closing positions by account and asset; empty until the day has closed."""
        with self.engine.connect() as connection:
            query = (
                sa.select(closing_positions).where(closing_positions.c.trading_day == trading_day)
                .order_by(closing_positions.c.member_id, closing_positions.c.asset)
            )
            return list(connection.execute(query))

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(trades)).scalar_one()


def obligation_row(obligation: Obligation) -> dict[str, object]:
    """An obligation's columns of the ``trades`` table (named as the record's fields)."""
    row = msgspec.structs.asdict(obligation)
    row["venue"] = int(obligation.venue)  # a plain int for every driver
    return row


def position_rows(position: MemberPosition) -> list[dict[str, object]]:
    day, member = position.trading_day, position.member_id
    rows = [dict(trading_day=day, member_id=member, asset=CASH,
                 settled=position.settled_cash_fen, obligation=position.cash_obligation_fen)]
    rows.extend(
        dict(trading_day=day, member_id=member, asset=held.instrument, settled=held.settled_t, obligation=held.obligation_t)
        for held in position.holdings
    )
    return rows
