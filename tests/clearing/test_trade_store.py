"""The trade store: every trade once, as its obligation record with its trading day, fed only
durable records, and a restart catches it up from its own position without writing twice."""

from __future__ import annotations

from datetime import date

from exchange.clearing.obligations import Venue, obligation_of
from exchange.clearing.trades import TradeStore
from exchange.config import Config
from exchange.engine import Applied, Engine, ExchangeCore, MemoryJournal
from exchange.model import OrderFilled
from exchange.sim.in_process import SimulatedClock, Simulation


class Fills:
    """An in-memory projection that keeps every fill it is handed, beside the store."""

    name = "fills"

    def __init__(self) -> None:
        self.fills: list[OrderFilled] = []
        self.last_seq = 0

    def apply(self, applied: Applied) -> None:
        self.last_seq = applied.seq
        self.fills.extend(e for e in applied.events if isinstance(e, OrderFilled))

    def flush(self) -> None:
        pass


def new_core() -> ExchangeCore:
    config = Config()
    return ExchangeCore(config.listed_instruments(), config.market.stp, config.risk.policy())


def new_store(db_url: str, batch_size: int = 10_000) -> TradeStore:
    store = TradeStore(db_url, batch_size=batch_size)
    store.create_schema()
    return store


def test_every_trade_is_stored_once_as_its_obligation_with_its_day(db_url: str) -> None:
    store, fills = new_store(db_url, batch_size=97), Fills()
    engine = Engine(new_core(), MemoryJournal(), SimulatedClock(), projections=[store, fills])
    Simulation(engine, 5, members=10, start_day=date(2026, 11, 23)).run(2, 1_500)
    engine.flush_projections()
    assert store.count() == len(fills.fills) > 0
    assert store.last_seq == engine.last_seq
    first, second = store.day_trades("2026-11-23"), store.day_trades("2026-11-24")
    assert {row.trading_day for row in first} | {row.trading_day for row in second} == {"2026-11-23", "2026-11-24"}
    stored = store.day_obligations("2026-11-23") + store.day_obligations("2026-11-24")
    assert stored == [obligation_of(fill) for fill in fills.fills]  # the same record, venue an enum
    assert {type(ob.venue) for ob in stored} == {Venue}
    row, fill = first[0], fills.fills[0]
    assert (row.buy_source, row.sell_source, row.aggressor) == (fill.buy_order_id, fill.sell_order_id, fill.aggressor)
    store.engine.dispose()


def test_a_restart_feeds_the_store_only_what_it_lacks(db_url: str) -> None:
    """The store stopped part-way (its last flush at some record); recovery from the whole
    journal hands it only the records after its position: every trade once."""
    journal, fills = MemoryJournal(), Fills()
    store = new_store(db_url, batch_size=10**9)  # writes only when flushed
    engine = Engine(new_core(), journal, SimulatedClock(), projections=[store, fills])
    simulation = Simulation(engine, 5, members=10, start_day=date(2026, 11, 23))
    simulation.run(1, 1_000)
    engine.flush_projections()
    stored_at, stored = store.last_seq, store.count()
    store.flush = lambda: None  # type: ignore[method-assign]  # the process dies: nothing more is stored
    simulation.run(1, 1_000)
    engine.flush()
    assert 0 < stored < len(fills.fills) and new_store(db_url).count() == stored

    again = new_store(db_url)
    assert again.last_seq == stored_at
    recovered = Engine.recover(new_core(), journal, SimulatedClock(), projections=[again])
    assert again.count() == len(fills.fills) and again.last_seq == recovered.last_seq
    stored_again = again.day_obligations("2026-11-23") + again.day_obligations("2026-11-24")
    assert stored_again == [obligation_of(fill) for fill in fills.fills]
    again.engine.dispose()
    store.engine.dispose()
