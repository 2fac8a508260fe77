"""The clearing stores as durable projections of the event stream.

Each stores its position in the stream (``projection_positions``) with its rows: the trade
store in the very transaction of its rows, the funds mirror right after the ledger's batch
(whose ids make a replay a no-op). A projection re-fed from its stored position writes
nothing twice; and the funds mirror posts a flush's deposits in one ledger transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import msgspec
import pytest
import sqlalchemy as sa

from exchange.clearing import funds as funds_module
from exchange.clearing import trades as trades_module
from exchange.clearing.funds import FundsMirror
from exchange.clearing.ledger import CashLedger, Operation, cash_transfers
from exchange.clearing.stream_positions import read_position
from exchange.clearing.trades import TradeStore, closing_positions, trades
from exchange.config import Config
from exchange.engine import Engine, ExchangeCore, MemoryJournal
from exchange.model import Deposit, MemberKind, RegisterMember
from exchange.sim.in_process import SimulatedClock, Simulation


class Crash(Exception):
    """The process dying between two writes, as far as the projection can tell."""


def new_core() -> ExchangeCore:
    config = Config()
    return ExchangeCore(config.listed_instruments(), config.market.stp, config.risk.policy())


def clearing_stores(db_url: str) -> tuple[TradeStore, FundsMirror]:
    """The trade store and the funds mirror on one database, as the composition root opens them."""
    store = TradeStore(db_url)
    store.create_schema()
    ledger = CashLedger(store.engine)
    ledger.create_schema()
    mirror = FundsMirror(ledger)
    mirror.create_schema()
    return store, mirror


class Written(msgspec.Struct, frozen=True):
    """Everything the two projections write, to compare before and after a replay;
    ``at`` is the stored positions of the trade store and the funds mirror."""

    trades: list[tuple[object, ...]]
    positions: list[tuple[object, ...]]
    cash: list[tuple[object, ...]]
    at: tuple[int, int]


def written(engine: sa.Engine) -> Written:
    with engine.connect() as connection:
        return Written(
            sorted(tuple(row) for row in connection.execute(sa.select(trades))),
            sorted(tuple(row) for row in connection.execute(sa.select(closing_positions))),
            sorted(tuple(row) for row in connection.execute(sa.select(cash_transfers))),
            (read_position(connection, "trades"), read_position(connection, "funds")),
        )


def traded_day(db_url: str) -> tuple[MemoryJournal, TradeStore, FundsMirror]:
    journal = MemoryJournal()
    store, mirror = clearing_stores(db_url)
    engine = Engine(new_core(), journal, SimulatedClock(), projections=[store, mirror])
    Simulation(engine, 3, members=8, start_day=date(2026, 11, 23)).run(1, 1_000)
    engine.flush_projections()
    return journal, store, mirror


def test_each_store_holds_its_position_with_its_rows(db_url: str) -> None:
    journal, store, mirror = traded_day(db_url)
    state = written(store.engine)
    assert state.at == (journal.last_seq, journal.last_seq) == (store.last_seq, mirror.last_seq)
    assert state.trades and state.positions and state.cash
    with store.engine.connect() as connection:
        assert max(connection.execute(sa.select(trades.c.seq)).scalars()) <= journal.last_seq
    store.engine.dispose()


def test_re_fed_from_its_position_a_projection_writes_nothing_twice(db_url: str) -> None:
    journal, store, _ = traded_day(db_url)
    before = written(store.engine)
    store.engine.dispose()
    again, mirror = clearing_stores(db_url)
    assert (again.last_seq, mirror.last_seq) == before.at
    Engine.recover(new_core(), journal, SimulatedClock(), projections=[again, mirror])
    assert written(again.engine) == before
    again.engine.dispose()


def test_the_trade_store_commits_its_rows_and_position_together(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure as the position is written takes the rows with it; the restart stores them."""
    journal = MemoryJournal()
    store, _ = clearing_stores(db_url)
    engine = Engine(new_core(), journal, SimulatedClock(), projections=[store])
    Simulation(engine, 3, members=8, start_day=date(2026, 11, 23)).run(1, 1_000)

    def crash(*args: object) -> None:
        raise Crash

    monkeypatch.setattr(trades_module, "write_position", crash)
    with pytest.raises(Crash):
        engine.flush_projections()
    assert written(store.engine).trades == [] and written(store.engine).at[0] == 0
    monkeypatch.undo()
    store.engine.dispose()
    again, _ = clearing_stores(db_url)
    Engine.recover(new_core(), journal, SimulatedClock(), projections=[again])
    state = written(again.engine)
    assert state.at[0] == journal.last_seq and state.trades
    again.engine.dispose()


def test_the_funds_mirror_killed_before_its_position_posts_nothing_twice(
    db_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ledger's batch committed, the position did not: the replay posts the same ids
    with the same bodies, which the ledger knows, and only the position moves."""
    journal = MemoryJournal()
    store, mirror = clearing_stores(db_url)
    engine = Engine(new_core(), journal, SimulatedClock(), projections=[mirror])
    Simulation(engine, 3, members=8, start_day=date(2026, 11, 23)).run(1, 1_000)

    def crash(*args: object) -> None:
        raise Crash

    monkeypatch.setattr(funds_module, "write_position", crash)
    with pytest.raises(Crash):
        engine.flush_projections()
    monkeypatch.undo()
    before = written(store.engine)
    assert before.cash and before.at[1] == 0
    store.engine.dispose()
    _, again = clearing_stores(db_url)
    Engine.recover(new_core(), journal, SimulatedClock(), projections=[again])
    after = written(again.ledger.engine)
    assert after.cash == before.cash and after.at[1] == journal.last_seq
    again.ledger.engine.dispose()


def test_the_funds_mirror_posts_a_flushes_deposits_in_one_ledger_transaction(db_url: str) -> None:
    """500 deposits journalled, one flush: one ``CashLedger.apply`` (a batch is one
    transaction, applied whole or not at all), not one per deposit."""
    store, mirror = clearing_stores(db_url)
    engine = Engine(new_core(), MemoryJournal(), SimulatedClock(), projections=[mirror])
    members = [f"M{n:03d}" for n in range(20)]
    for member in members:
        engine.execute(RegisterMember(member, MemberKind.VOLUNTARY))
    engine.flush_projections()  # the accounts are open
    for round_ in range(1, 26):
        for member in members:
            engine.execute(Deposit(member, round_ * 100))
    batches: list[int] = []
    apply = mirror.ledger.apply

    def counted(operations: Iterable[Operation]) -> int:
        batch = list(operations)
        batches.append(len(batch))
        return apply(batch)

    mirror.ledger.apply = counted  # type: ignore[method-assign]
    engine.flush_projections()
    assert batches == [500]  # one ledger batch: one transaction, all or nothing
    assert all(mirror.ledger.balance(member) == sum(r * 100 for r in range(1, 26)) for member in members)
    assert written(store.engine).at[1] == engine.last_seq
    store.engine.dispose()
