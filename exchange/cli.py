"""The ``exchange`` command: the composition root that wires config, engine and journal.

``exchange simulate`` runs a seeded in-process trading session to the close and prints a
summary, then rebuilds the state from the journal alone and checks the state hash matches.
``exchange registry ...`` creates and inspects the reference registry (accounts, caps,
allocations, holdings, history, verification) for operators and demos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from exchange.config import Config, ConfigError, load_config
from exchange.engine import Engine, ExchangeCore, FileJournal, FsyncPolicy
from exchange.model.units import format_fen
from exchange.simulation import SimulatedClock, Simulation, SimulationSummary, describe_rejects
from registry_adapter.admin import add_registry_commands


def build_core(config: Config) -> ExchangeCore:
    return ExchangeCore(config.listed_instruments(), config.market.stp, config.risk.policy())


def open_engine(config: Config, data_dir: Path, clock) -> Engine:
    """Recover the engine from the data directory's snapshots and journal (start-up path)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    journal = FileJournal(
        data_dir / "commands.journal",
        fsync=FsyncPolicy[config.engine.fsync.upper()],
        batch_records=config.engine.fsync_batch_records,
    )
    if journal.torn_tail_bytes:
        print(f"journal: cut a torn last record of {journal.torn_tail_bytes} bytes", file=sys.stderr)
    return Engine.recover(
        build_core(config), journal, clock, data_dir / "snapshots",
        snapshot_every=config.engine.snapshot_every_commands,
        snapshots_kept=config.engine.snapshots_kept,
        gc_freeze_every=config.engine.gc_freeze_every_commands or None,
    )


def simulate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="exchange-sim-") as scratch:
        data_dir = Path(args.data_dir) if args.data_dir else Path(scratch)
        engine = open_engine(config, data_dir, SimulatedClock())
        if engine.last_seq:
            print(f"error: {data_dir} already holds a journal; simulate needs an empty data directory", file=sys.stderr)
            return 2
        started = time.perf_counter()
        simulation = Simulation(engine, args.seed, args.members, date.fromisoformat(args.start), config.calendar.schedule())
        summary = simulation.run(args.days, args.commands)
        elapsed = time.perf_counter() - started
        engine.close()
        replayed = open_engine(config, data_dir, SimulatedClock())
        replay_hash = replayed.core.state_hash()
        replayed.close()
    print_summary(summary, args, elapsed)
    same = replay_hash == summary.state_hash
    print(f"replayed from the journal: state hash {'identical' if same else 'DIFFERENT: ' + replay_hash}")
    return 0 if same else 1


def print_summary(summary: SimulationSummary, args: argparse.Namespace, elapsed_s: float) -> None:
    print(f"simulated {args.days} trading day(s), {args.members} members, seed {args.seed}")
    print(f"commands {summary.commands:,}  orders {summary.orders:,}  accepted {summary.accepted:,}  "
          f"trades {summary.trades:,}  volume {summary.volume_t:,} t  "
          f"({summary.commands / elapsed_s:,.0f} commands/s)")
    print(f"{'instrument':<10} {'open':>9} {'high':>9} {'low':>9} {'close':>9} {'volume t':>13} {'turnover CNY':>18} {'trades':>8}")
    for symbol, item in summary.instruments.items():
        def price(value: int | None) -> str:
            return format_fen(value) if value is not None else "-"
        print(f"{symbol:<10} {price(item.open_fen):>9} {price(item.high_fen):>9} {price(item.low_fen):>9} "
              f"{price(item.close_fen):>9} {item.volume_t:>13,} {format_fen(item.turnover_fen, grouped=True):>18} {item.trades:>8,}")
    print("rejects by reason:")
    for name, count in describe_rejects(summary.rejects) or [("none", 0)]:
        print(f"  {name:<40} {count:>8,}")
    print(f"state hash {summary.state_hash}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exchange", description="The city carbon market's exchange.")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a seeded in-process trading session to the close")
    sim.add_argument("--seed", type=int, default=2026)
    sim.add_argument("--members", type=int, default=200)
    sim.add_argument("--commands", type=int, default=200_000, help="commands per trading day")
    sim.add_argument("--days", type=int, default=1)
    sim.add_argument("--start", default="2026-11-23", help="first trading day (YYYY-MM-DD)")
    sim.add_argument("--config", help="TOML configuration file (defaults: the market rules)")
    sim.add_argument("--data-dir", help="keep the journal here (default: a temporary directory)")
    sim.set_defaults(run=simulate)
    add_registry_commands(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
