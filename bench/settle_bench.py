"""Settlement benchmarks: a day of 1,000,000 trades among 1,000 members, settled end to end.

The day is generated straight into the stores (simulating a million trades through the
engine would take minutes and measure the engine, not settlement): members' registry
accounts with their allowances and CCER, their cash in the ledger, the trades, and the
closing positions the core would report (opening holding and cash plus the day's net).
Settlement then runs in a child process (so that its peak memory is its own) over those
stores: freeze, verify, hold, one registry batch, one ledger batch, reconciliation and the
statements. Reported: ``seconds`` (wall time of ``Settlement.settle``), ``trades_per_s`` and
``peak_rss_mb`` (the child's maximum resident set).

``settle.postgres`` needs ``EXCHANGE_BENCH_PG_URL`` (or ``EXCHANGE_TEST_PG_URL``) naming a
PostgreSQL database; it works in a schema of its own and drops it afterwards.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from bench.registry import Context, register

DAY = "2026-11-23"
UNITS = ("CCER", "CEA-2024", "CEA-2025")
OPENING_T = 10_000_000  # each member's opening holding of each unit
OPENING_FEN = 10**13  # each member's opening cash (100 billion CNY): every buyer can pay


def generate_day(url: str, members: int, trade_count: int, seed: int) -> None:
    from exchange.clearing.ledger import BANK, CashLedger, Transfer, TransferCode
    from exchange.clearing.settlement import Settlement
    from exchange.clearing.trades import TradeStore, closing_positions, trades
    from registry_adapter.demo import allocate_holdings
    from registry_adapter.sql import SqlRegistry

    ids = [f"M{n:04d}" for n in range(1, members + 1)]
    registry = SqlRegistry(url)
    registry.create_schema()
    allocate_holdings(registry, {member: dict.fromkeys(UNITS, OPENING_T) for member in ids})
    registry.close()
    store = TradeStore(url)
    store.create_schema()
    ledger = CashLedger(store.engine)
    ledger.create_schema()
    Settlement(store, ledger, registry).create_schema()
    for member in ids:
        ledger.open_member_account(member)
    ledger.apply(Transfer(f"deposit:{m}", BANK, m, OPENING_FEN, TransferCode.DEPOSIT) for m in ids)
    rows, net = trade_rows(ids, trade_count, seed)
    with store.engine.begin() as connection:
        for start in range(0, len(rows), 100_000):
            connection.execute(trades.insert(), rows[start:start + 100_000])
        connection.execute(closing_positions.insert(), position_rows(ids, net))
    store.engine.dispose()


def trade_rows(ids: list[str], trade_count: int, seed: int) -> tuple[list[dict[str, object]], dict[tuple[str, str], int]]:
    from exchange.clearing.obligations import Venue

    rnd = random.Random(seed)
    net: dict[tuple[str, str], int] = {}  # (member, asset) -> + to deliver / pay
    rows = []
    for trade_id in range(1, trade_count + 1):
        buyer, seller = rnd.sample(ids, 2)
        unit, price, qty = rnd.choice(UNITS), rnd.randrange(5_000, 6_500), rnd.randrange(1, 200)
        rows.append(dict(
            trade_id=trade_id, trading_day=DAY, venue=int(Venue.BOOK), instrument=unit, qty_t=qty, price_fen=price,
            buyer=buyer, seller=seller, buy_source=2 * trade_id, sell_source=2 * trade_id + 1, aggressor=1,
            seq=trade_id, ts_ns=trade_id,
        ))
        net[seller, unit] = net.get((seller, unit), 0) + qty
        net[buyer, unit] = net.get((buyer, unit), 0) - qty
        net[buyer, "cash"] = net.get((buyer, "cash"), 0) + price * qty
        net[seller, "cash"] = net.get((seller, "cash"), 0) - price * qty
    return rows, net


def position_rows(ids: list[str], net: dict[tuple[str, str], int]) -> list[dict[str, object]]:
    """The exchange's view at the close: opening plus the day, minus what is owed."""
    rows = []
    for member in ids:
        for asset, opening in (("cash", OPENING_FEN), *((unit, OPENING_T) for unit in UNITS)):
            owed = net.get((member, asset), 0)
            rows.append(dict(trading_day=DAY, member_id=member, asset=asset, settled=opening - owed, obligation=owed))
    return rows


def settle_in_child(url: str, statements: Path) -> dict:
    """Run settlement in a fresh process; returns its seconds, trades and peak RSS."""
    output = subprocess.run(
        [sys.executable, "-m", "bench.settle_bench", url, str(statements)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def child_main(url: str, statements: str) -> None:
    import resource

    from exchange.clearing.ledger import CashLedger
    from exchange.clearing.settlement import Settlement
    from exchange.clearing.trades import TradeStore
    from registry_adapter.sql import SqlRegistry

    store = TradeStore(url)
    settlement = Settlement(store, CashLedger(store.engine), SqlRegistry(url), Path(statements))
    started = time.perf_counter()
    report = settlement.settle(DAY)
    seconds = time.perf_counter() - started
    assert report.differences == [], report.differences
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "trades": report.trades, "peak_rss_mb": peak_mb}))


def run_settlement(ctx: Context, bench: str, url: str) -> None:
    members, trade_count = (100, 20_000) if ctx.small else (1_000, 1_000_000)
    ctx.note(f"{bench}: generating {trade_count:,} trades among {members:,} members")
    started = time.perf_counter()
    generate_day(url, members, trade_count, ctx.seed)
    ctx.note(f"{bench}: generated in {time.perf_counter() - started:.1f} s; settling")
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as statements:
        result = settle_in_child(url, Path(statements))
    ctx.report(bench, "seconds", round(result["seconds"], 2), "s", runs=1)
    ctx.report(bench, "trades_per_s", round(result["trades"] / result["seconds"]), "trades/s", runs=1)
    ctx.report(bench, "peak_rss_mb", round(result["peak_rss_mb"]), "MB", runs=1)


@register("settle.sqlite", "settle a day of 1M trades among 1,000 members on SQLite")
def settle_sqlite(ctx: Context) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-settle-") as scratch:
        run_settlement(ctx, "settle.sqlite", f"sqlite:///{Path(scratch) / 'stores.db'}")


@register("settle.postgres", "settle a day of 1M trades among 1,000 members on PostgreSQL")
def settle_postgres(ctx: Context) -> None:
    base = os.environ.get("EXCHANGE_BENCH_PG_URL") or os.environ.get("EXCHANGE_TEST_PG_URL")
    if not base:
        ctx.note("settle.postgres skipped: set EXCHANGE_BENCH_PG_URL (or EXCHANGE_TEST_PG_URL) to a PostgreSQL URL")
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        separator = "&" if "?" in base else "?"
        run_settlement(ctx, "settle.postgres", f"{base}{separator}options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2])
