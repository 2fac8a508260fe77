"""The trade store: every trade and the closing positions, in SQL, for settlement and reports.

It is an event sink (``store(seq, ts_ns, events)``), fed by live trading and by replay alike.
Trades are buffered and written in batches (``executemany``), and a trade id already stored
is skipped, so replaying a journal after a crash, which hands the same events out again,
never writes a trade twice. Call ``flush()`` at least before settlement and at shutdown.

At ``EndDay`` the core reports every member's closing position (``MemberPosition``): the
exchange's view that settlement posts and reconciles against. The store writes those rows
in the same transaction as the day's last trades, so a day with positions stored has all of
its trades stored: that is how settlement knows a day is complete. A position already
stored is skipped, as a trade is.

The trading day of a trade comes from the ``DayStarted`` events that open each day; after a
recovery from a snapshot taken mid-day, ``resume`` tells the store where it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exchange.clearing.obligations import CASH
from exchange.model.events import DayStarted, MemberPosition, OrderFilled

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
    def __init__(self, url_or_engine: str | sa.Engine, batch_size: int = 10_000) -> None:
        self.engine = sa.create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.batch_size = batch_size
        self.trading_day = ""
        self._pending: list[dict] = []
        self._positions: list[dict] = []
        self._last_stored_id = 0

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        with self.engine.connect() as connection:
            self._last_stored_id = connection.execute(sa.select(sa.func.max(trades.c.trade_id))).scalar() or 0

    def set_trading_day(self, trading_day: str) -> None:
        self.trading_day = trading_day

    def resume(self, core) -> None:
        """Recovery loaded a snapshot (the engine's sink protocol): trades that follow belong
        to the core's trading day, whose ``DayStarted`` came before the snapshot."""
        self.trading_day = core.trading_day

    def __call__(self, seq: int, ts_ns: int, events: list) -> None:
        """The event sink: keep the trades of one command's events."""
        for event in events:
            kind = type(event)
            if kind is OrderFilled:
                if event.trade_id > self._last_stored_id:  # replayed trades are already stored
                    self._pending.append(self._row(seq, ts_ns, event))
            elif kind is DayStarted:
                self.trading_day = event.trading_day
            elif kind is MemberPosition:
                self._positions.extend(position_rows(event))
        if self._positions or len(self._pending) >= self.batch_size:
            self.flush()

    def _row(self, seq: int, ts_ns: int, event: OrderFilled) -> dict:
        assert self.trading_day, "a trade before any trading day started"
        return {
            "trade_id": event.trade_id, "trading_day": self.trading_day, "instrument": event.instrument,
            "price_fen": event.price_fen, "qty_t": event.qty_t, "aggressor": int(event.aggressor),
            "buy_order_id": event.buy_order_id, "buy_member_id": event.buy_member_id,
            "sell_order_id": event.sell_order_id, "sell_member_id": event.sell_member_id,
            "seq": seq, "ts_ns": ts_ns,
        }

    def flush(self) -> None:
        """Write the buffered trades and positions in one transaction."""
        if not self._pending and not self._positions:
            return
        with self.engine.begin() as connection:
            if self._pending:
                connection.execute(trades.insert(), self._pending)
            if self._positions:
                dialect = sqlite if self.engine.dialect.name == "sqlite" else postgresql
                connection.execute(dialect.insert(closing_positions).on_conflict_do_nothing(), self._positions)
        if self._pending:
            self._last_stored_id = self._pending[-1]["trade_id"]
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
