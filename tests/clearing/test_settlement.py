"""End-of-day settlement: every obligation exactly once, zero difference, whatever happens.

Each test trades a real day through the engine into the real stores (SQLite always,
PostgreSQL when EXCHANGE_TEST_PG_URL names it), then settles it: plainly, again, with a
flaky or refusing registry, with tampered records, and killed by SIGKILL after every write.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from settlement_support import DAY, closed_day, legs_posted, open_exchange, written

from exchange.clearing.ledger import SETTLEMENT
from exchange.clearing.settlement import WRITE_POINTS, SettlementStopped
from exchange.clearing.trades import closing_positions, trades
from registry_adapter.port import RegistryUnavailable, Transfer

SUPPORT = Path(__file__).with_name("settlement_support.py")


@pytest.fixture
def day(tmp_path: Path, db_url: str) -> tuple[Path, str]:
    data_dir = tmp_path / "data"
    closed_day(data_dir, db_url)
    return data_dir, db_url


def trade_count(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(trades)).scalar_one()
    engine.dispose()
    return count


def assert_settled_once(data_dir: Path, db_url: str) -> None:
    """Zero difference, both stores' own checks clean, each trade's legs posted exactly once."""
    exchange = open_exchange(data_dir, db_url)
    try:
        report = exchange.settle(DAY)
        assert report.differences == [] and report.trades == trade_count(db_url) > 0
        assert exchange.clearing.ledger.verify() == []
        assert exchange.registry.verify() == []
        assert exchange.clearing.ledger.balance(SETTLEMENT) == 0
        for position in exchange.clearing.store.day_positions(DAY):
            if position.asset == "cash":
                assert exchange.clearing.ledger.balance(position.member_id) == position.settled
            else:
                assert exchange.registry.holdings(position.member_id).get(position.asset, 0) == position.settled
    finally:
        exchange.close()
        exchange.registry.close()
    cash, registry = legs_posted(db_url, DAY)
    assert len(cash) == len(set(cash)) == report.trades
    assert len(registry) == len(set(registry)) == report.trades


# -- the plain day and the day settled again ------------------------------------------------------


def test_a_day_settles_to_zero_difference(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    assert_settled_once(data_dir, db_url)
    statements = sorted((data_dir / "statements" / DAY).iterdir())
    assert [p.name for p in statements][-1] == "settlement-report.json"
    assert len(statements) == 11  # ten members and the report
    header, *rows = statements[0].read_text().splitlines()
    assert header == "record,instrument,trade_id,side,qty_t,price_fen,amount_fen"
    assert rows[-1].startswith("settled_cash,")


def test_a_settled_day_settles_again_without_writing(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    assert_settled_once(data_dir, db_url)
    before = written(db_url, data_dir)
    assert_settled_once(data_dir, db_url)
    assert written(db_url, data_dir) == before


def test_conservation_holds_after_every_write(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)
    seen = []

    def check(point: str) -> None:
        seen.append(point)
        assert exchange.clearing.ledger.verify() == [], point
        assert exchange.registry.verify() == [], point

    exchange.clearing.settlement.checkpoint = check
    exchange.settle(DAY)
    exchange.close()
    assert tuple(seen) == WRITE_POINTS  # the crash tests below kill at exactly these


# -- the registry failing ---------------------------------------------------------------------------


class FlakyRegistry:
    """Times out before applying, then applies and times out: the caller cannot tell which."""

    def __init__(self, registry) -> None:
        self.registry, self.calls = registry, 0

    def __getattr__(self, name: str):
        return getattr(self.registry, name)

    def apply_transfers(self, transfers, actor: str, reason: str) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RegistryUnavailable("timed out before the registry saw the batch")
        self.registry.apply_transfers(transfers, actor, reason)
        if self.calls == 2:
            raise TimeoutError("timed out after the registry applied the batch")


def test_registry_timeouts_are_retried_with_the_same_ids(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)
    flaky = FlakyRegistry(exchange.registry)
    settlement = exchange.clearing.settlement
    settlement.registry, settlement.sleep = flaky, lambda seconds: None
    assert exchange.settle(DAY).differences == []
    exchange.close()
    assert flaky.calls == 3
    assert_settled_once(data_dir, db_url)


def test_a_registry_that_stays_away_stops_settlement_and_a_later_run_finishes(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)
    settlement = exchange.clearing.settlement

    class Away:
        def __getattr__(self, name):
            return getattr(exchange.registry, name)

        def apply_transfers(self, *args):
            raise RegistryUnavailable("connection refused")

    settlement.registry, settlement.sleep = Away(), lambda seconds: None
    with pytest.raises(SettlementStopped, match="did not answer after 5 attempts"):
        exchange.settle(DAY)
    assert settlement.status(DAY)[0] == "held"
    exchange.close()
    assert_settled_once(data_dir, db_url)


def test_a_refusal_stops_with_the_cash_held_until_resolved(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)
    seller = next(row.seller for row in exchange.clearing.store.day_trades(DAY))
    exchange.registry.freeze(seller, "authority:test", "investigation")
    with pytest.raises(SettlementStopped, match=f"{seller}.*frozen") as stopped:
        exchange.settle(DAY)
    assert stopped.value.stage == "deliver"
    stage, why = exchange.clearing.settlement.status(DAY)
    assert stage == "held" and "frozen" in why
    settlement_account = exchange.clearing.ledger.account(SETTLEMENT)
    assert settlement_account.credits_pending > 0  # the buyers' money stays on hold
    assert legs_posted(db_url, DAY) == ([], [])
    exchange.registry.unfreeze(seller, "authority:test", "cleared")
    exchange.close()
    assert_settled_once(data_dir, db_url)


# -- records that do not add up -----------------------------------------------------------------


def test_a_seller_short_in_the_registry_stops_before_anything_posts(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)
    trade = exchange.clearing.store.day_trades(DAY)[0]
    registry = exchange.registry
    held = registry.holdings(trade.seller)[trade.instrument]
    registry.open_account("SINK", "member_holding", actor="authority:test", reason="test")
    registry.apply_transfers([Transfer("away", trade.seller, "SINK", trade.instrument, held)], "test", "test")
    with pytest.raises(SettlementStopped) as stopped:
        exchange.settle(DAY)
    assert stopped.value.stage == "verify"
    assert any(p.startswith(f"{trade.seller}: holds 0 t of {trade.instrument}") for p in stopped.value.problems)
    assert legs_posted(db_url, DAY) == ([], [])
    exchange.close()


def test_trades_that_disagree_with_the_closing_positions_stop_settlement(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        member = connection.execute(
            sa.select(closing_positions.c.member_id).where(closing_positions.c.obligation > 0)
        ).scalars().first()
        assert member is not None
        connection.execute(
            closing_positions.update().where(closing_positions.c.member_id == member).where(closing_positions.c.obligation > 0)
            .values(obligation=closing_positions.c.obligation + 1)
        )
    engine.dispose()
    exchange = open_exchange(data_dir, db_url)
    with pytest.raises(SettlementStopped, match="verify") as stopped:
        exchange.settle(DAY)
    assert any(p.startswith(member) and "the exchange's view" in p for p in stopped.value.problems)
    exchange.close()


def test_a_counterparty_no_store_knows_is_a_problem_reported_not_a_crash(day: tuple[Path, str]) -> None:
    """Counterparties are accounts, not looked up among members: an account the registry and
    the ledger lack (here a reserve no one opened) stops verification with what is missing."""
    data_dir, db_url = day
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(trades.update().where(trades.c.trade_id == 1).values(buyer="RESERVE"))
    engine.dispose()
    exchange = open_exchange(data_dir, db_url)
    with pytest.raises(SettlementStopped) as stopped:
        exchange.settle(DAY)
    assert stopped.value.stage == "verify"
    assert {"RESERVE: no registry account", "RESERVE: no cash account"} <= set(stopped.value.problems)
    assert legs_posted(db_url, DAY) == ([], [])
    exchange.close()


def test_trades_changed_after_the_freeze_stop_settlement(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)

    def crash_after_the_freeze(point: str) -> None:
        if point == "frozen":
            raise KeyboardInterrupt

    exchange.clearing.settlement.checkpoint = crash_after_the_freeze
    with pytest.raises(KeyboardInterrupt):
        exchange.settle(DAY)
    exchange.close()
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        # (A deleted trade would come back: recovery replays the journal into the store.)
        connection.execute(trades.update().where(trades.c.trade_id == 1).values(price_fen=trades.c.price_fen + 1))
    engine.dispose()
    exchange = open_exchange(data_dir, db_url)
    with pytest.raises(SettlementStopped, match="changed since settlement froze them"):
        exchange.settle(DAY)
    exchange.close()


def test_a_day_that_has_not_closed_is_refused(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)
    with pytest.raises(SettlementStopped, match="has not closed"):
        exchange.settle("2026-11-24")
    exchange.close()


# -- SIGKILL after every write -------------------------------------------------------------------


def run_child(data_dir: Path, db_url: str, point: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, str(SUPPORT), str(data_dir), db_url, point], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == b"settling\n"  # recovered and about to settle
    return child


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_killed_after_any_write_the_next_run_finishes_once(day: tuple[Path, str], point: str) -> None:
    data_dir, db_url = day
    child = run_child(data_dir, db_url, point)
    assert child.wait(timeout=120) == -signal.SIGKILL
    assert_settled_once(data_dir, db_url)
    before = written(db_url, data_dir)
    assert_settled_once(data_dir, db_url)
    assert written(db_url, data_dir) == before


def test_killed_at_random_moments_the_next_run_finishes_once(tmp_path: Path) -> None:
    """Kills that land inside a store's transaction, not only between them (SQLite)."""
    rnd = random.Random(11)
    outcomes = []
    for attempt in range(4):
        data_dir, db_url = tmp_path / f"data{attempt}", f"sqlite:///{tmp_path / f'stores{attempt}.db'}"
        closed_day(data_dir, db_url, members=20, commands=6_000, seed=attempt)
        child = run_child(data_dir, db_url, "never")
        time.sleep(rnd.uniform(0.0, 0.25))  # a settlement of this day takes about 0.3 s
        child.send_signal(signal.SIGKILL)
        outcomes.append(child.wait(timeout=120))
        assert_settled_once(data_dir, db_url)
    assert -signal.SIGKILL in outcomes


def test_the_settlement_account_is_checked_by_reconciliation(day: tuple[Path, str]) -> None:
    data_dir, db_url = day
    exchange = open_exchange(data_dir, db_url)
    exchange.clearing.ledger.deposit("stray", SETTLEMENT, 1)  # money the settlement account should not hold
    with pytest.raises(SettlementStopped, match="reconcile") as stopped:
        exchange.settle(DAY)
    assert stopped.value.problems[0] == f"{SETTLEMENT} cash: exchange 0, store 1"
    exchange.close()
