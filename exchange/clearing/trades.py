"""The trade store: every trade and the closing positions, in SQL, for settlement and reports.

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

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exchange.clearing.obligations import CASH
from exchange.clearing.stream_positions import create_positions_table, read_position, write_position
from exchange.model.stream import Applied
from exchange.model.events import MemberPosition, OrderFilled

metadata = sa.MetaData()

trades = sa.Table(
    "trades",
    metadata,
    sa.Column("trade_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("trading_day", sa.String(10), nullable=False, index=True),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("price_fen", sa.BigInteger, nullable=False),
    sa.Column("qty_t", sa.BigInteger, nullable=False),
    sa.Column("aggressor", sa.SmallInteger, nullable=False),
    sa.Column("buy_order_id", sa.BigInteger, nullable=False),
    sa.Column("buy_member_id", sa.String(32), nullable=False),
    sa.Column("sell_order_id", sa.BigInteger, nullable=False),
    sa.Column("sell_member_id", sa.String(32), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
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
        self._pending: list[dict] = []
        self._positions: list[dict] = []
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
            kind = type(event)
            if kind is OrderFilled:
                self._pending.append(self._row(applied, event))
            elif kind is MemberPosition:
                self._positions.append(event)
        if len(self._pending) >= self.batch_size:
            self.flush()

    @staticmethod
    def _row(applied: Applied, event: OrderFilled) -> dict:
        assert applied.trading_day, "a trade before any trading day started"
        return {
            "trade_id": event.trade_id, "trading_day": applied.trading_day, "instrument": event.instrument,
            "price_fen": event.price_fen, "qty_t": event.qty_t, "aggressor": int(event.aggressor),
            "buy_order_id": event.buy_order_id, "buy_member_id": event.buy_member_id,
            "sell_order_id": event.sell_order_id, "sell_member_id": event.sell_member_id,
            "seq": applied.seq, "ts_ns": applied.ts_ns,
        }

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

    def day_trade_legs(self, trading_day: str) -> list[tuple]:
        """A day's trades as plain tuples for settlement, in trade id order: (trade id,
        instrument, price, quantity, buyer, seller). Lighter than rows for a million trades."""
        columns = (trades.c.trade_id, trades.c.instrument, trades.c.price_fen, trades.c.qty_t,
                   trades.c.buy_member_id, trades.c.sell_member_id)
        with self.engine.connect() as connection:
            query = sa.select(*columns).where(trades.c.trading_day == trading_day).order_by(trades.c.trade_id)
            return [tuple(row) for row in connection.execute(query)]

    def day_positions(self, trading_day: str) -> list[sa.Row]:
        """A day's closing positions by member and asset; empty until the day has closed."""
        with self.engine.connect() as connection:
            query = (
                sa.select(closing_positions).where(closing_positions.c.trading_day == trading_day)
                .order_by(closing_positions.c.member_id, closing_positions.c.asset)
            )
            return list(connection.execute(query))

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(trades)).scalar_one()


def position_rows(position: MemberPosition) -> list[dict]:
    day, member = position.trading_day, position.member_id
    rows = [dict(trading_day=day, member_id=member, asset=CASH,
                 settled=position.settled_cash_fen, obligation=position.cash_obligation_fen)]
    rows.extend(
        dict(trading_day=day, member_id=member, asset=held.instrument, settled=held.settled_t, obligation=held.obligation_t)
        for held in position.holdings
    )
    return rows
