"""The trade store: every trade once, with its trading day, however often events replay."""

from __future__ import annotations

from datetime import date

from exchange.clearing.trades import TradeStore
from exchange.config import Config
from exchange.engine import Engine, ExchangeCore, MemoryJournal
from exchange.engine.engine import replay
from exchange.model import OrderFilled
from exchange.simulation import SimulatedClock, Simulation


class SinkEngine(Engine):
    """An engine with the store as its event sink, as the shell wires it; it keeps the fills."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fills: list[OrderFilled] = []

    def execute(self, command):
        events = super().execute(command)
        self.fills.extend(e for e in events if isinstance(e, OrderFilled))
        return events


def new_core() -> ExchangeCore:
    config = Config()
    return ExchangeCore(config.listed_instruments(), config.market.stp, config.risk.policy())


def test_every_trade_is_stored_once_with_its_day(db_url: str) -> None:
    store = TradeStore(db_url, batch_size=97)
    store.create_schema()
    engine = SinkEngine(new_core(), MemoryJournal(), SimulatedClock(), sink=store)
    Simulation(engine, 5, members=10, start_day=date(2026, 11, 23)).run(2, 1_500)
    store.flush()
    assert store.count() == len(engine.fills) > 0
    days = {row.trading_day for row in store.day_trades("2026-11-23")} | {row.trading_day for row in store.day_trades("2026-11-24")}
    assert days == {"2026-11-23", "2026-11-24"}
    first = store.day_trades("2026-11-23")[0]
    fill = engine.fills[0]
    assert (first.trade_id, first.price_fen, first.qty_t, first.buy_member_id, first.sell_member_id) == (
        fill.trade_id, fill.price_fen, fill.qty_t, fill.buy_member_id, fill.sell_member_id,
    )

    # A restart replays the whole journal into the same store: nothing is written twice.
    again = TradeStore(db_url)
    again.create_schema()
    for seq, ts_ns, events in replay(new_core(), engine.journal.records()):
        again(seq, ts_ns, events)
    again.flush()
    assert again.count() == len(engine.fills)
    again.engine.dispose()
    store.engine.dispose()
