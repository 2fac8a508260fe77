"""Shared set-up for the settlement tests: a closed trading day on real stores, and counters of
what settlement wrote. Also the child process of the crash tests (``python -m`` this file)."""

from __future__ import annotations

import os
import signal
import sys
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from exchange.app import Exchange
from exchange.clearing.ledger import cash_transfers
from exchange.clearing.settlement import settlement_days
from exchange.config import Config
from exchange.sim.in_process import SimulatedClock, Simulation
from registry_adapter.sql import SqlRegistry, entries

DAY = "2026-11-23"


def open_exchange(data_dir: Path, db_url: str) -> Exchange:
    """The exchange on ``data_dir``, with its trades, ledger and registry in ``db_url``."""
    registry = SqlRegistry(db_url)
    registry.create_schema()
    return Exchange.open(Config(), data_dir, SimulatedClock(), clearing_url=db_url, registry=registry)


def closed_day(data_dir: Path, db_url: str, members: int = 10, commands: int = 1_500, seed: int = 7) -> None:
    """Trade one day to its close, unsettled, and shut down."""
    exchange = open_exchange(data_dir, db_url)
    Simulation(exchange, seed, members, date.fromisoformat(DAY)).run(1, commands, settle=False)
    exchange.close()
    exchange.registry.close()  # type: ignore[union-attr]


def written(db_url: str, data_dir: Path) -> dict:
    """Everything settlement may write, to compare one run with the next."""
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        counts = {
            "cash": connection.execute(sa.select(sa.func.count()).select_from(cash_transfers)).scalar_one(),
            "cash_states": sorted(connection.execute(sa.select(cash_transfers.c.transfer_id, cash_transfers.c.state))),
            "registry": connection.execute(sa.select(sa.func.count()).select_from(entries)).scalar_one(),
            "days": sorted(tuple(row) for row in connection.execute(sa.select(settlement_days))),
        }
    engine.dispose()
    statements = data_dir / "statements"
    counts["statements"] = sorted(
        (str(path.relative_to(statements)), path.stat().st_mtime_ns) for path in statements.rglob("*")
    ) if statements.exists() else []
    return counts


def legs_posted(db_url: str, trading_day: str) -> tuple[list[str], list[str]]:
    """The ids of the day's trade legs in the ledger and in the registry, repeats included."""
    engine = sa.create_engine(db_url)
    prefix = f"settle:{trading_day}:T"
    with engine.connect() as connection:
        cash = list(connection.execute(
            sa.select(cash_transfers.c.transfer_id).where(cash_transfers.c.transfer_id.startswith(prefix))
        ).scalars())
        registry = list(connection.execute(
            sa.select(entries.c.idempotency_id).where(entries.c.idempotency_id.startswith(prefix))
        ).scalars())
    engine.dispose()
    return cash, registry


def settle_and_die_at(data_dir: Path, db_url: str, point: str) -> None:
    """Settle the day, killing this process with SIGKILL right after the write ``point``."""
    exchange = open_exchange(data_dir, db_url)

    def checkpoint(reached: str) -> None:
        if reached == point:
            os.kill(os.getpid(), signal.SIGKILL)

    exchange.clearing.settlement.checkpoint = checkpoint  # type: ignore[union-attr]
    print("settling", flush=True)
    exchange.settle(DAY)


if __name__ == "__main__":
    settle_and_die_at(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
