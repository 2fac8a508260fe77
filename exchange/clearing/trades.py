"""The trade store: every trade from the engine's events, in SQL, for settlement and reports.

It is an event sink (``store(seq, ts_ns, events)``), fed by live trading and by replay alike.
Trades are buffered and written in batches (``executemany``), and a trade id already stored
is skipped, so replaying a journal after a crash, which hands the same events out again,
never writes a trade twice. Call ``flush()`` at least before settlement and at shutdown.

The trading day of a trade comes from the ``DayStarted`` events that open each day; after a
recovery from a snapshot taken mid-day, ``set_trading_day`` tells the store where it is.
"""

from __future__ import annotations

import sqlalchemy as sa

from exchange.model.events import DayStarted, OrderFilled

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


class TradeStore:
    def __init__(self, url_or_engine: str | sa.Engine, batch_size: int = 10_000) -> None:
        self.engine = sa.create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.batch_size = batch_size
        self.trading_day = ""
        self._pending: list[dict] = []
        self._last_stored_id = 0

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        with self.engine.connect() as connection:
            self._last_stored_id = connection.execute(sa.select(sa.func.max(trades.c.trade_id))).scalar() or 0

    def set_trading_day(self, trading_day: str) -> None:
        self.trading_day = trading_day

    def __call__(self, seq: int, ts_ns: int, events: list) -> None:
        """The event sink: keep the trades of one command's events."""
        for event in events:
            kind = type(event)
            if kind is OrderFilled:
                if event.trade_id > self._last_stored_id:  # replayed trades are already stored
                    self._pending.append(self._row(seq, ts_ns, event))
            elif kind is DayStarted:
                self.trading_day = event.trading_day
        if len(self._pending) >= self.batch_size:
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
        """Write the buffered trades in one transaction."""
        if not self._pending:
            return
        with self.engine.begin() as connection:
            connection.execute(trades.insert(), self._pending)
        self._last_stored_id = self._pending[-1]["trade_id"]
        self._pending.clear()

    def day_trades(self, trading_day: str) -> list[sa.Row]:
        """A day's trades in trade id order."""
        with self.engine.connect() as connection:
            query = sa.select(trades).where(trades.c.trading_day == trading_day).order_by(trades.c.trade_id)
            return list(connection.execute(query))

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(trades)).scalar_one()
