"""The ``exchange`` command, on the composition root (:mod:`exchange.app`).

``exchange simulate`` starts the served exchange and drives it the way members would: seeded
members over real WebSockets, each trading day to the close, then its settlement, with a
progress bar and a checked summary (:mod:`exchange.sim.served`). ``--in-process`` runs
the seeded in-process session instead: each day to the close, then its settlement against the
reference registry and the cash ledger with a reconciliation; it prints a summary, then
rebuilds the state from the journal alone and checks the state hash.
``exchange settle --date D`` settles (or finishes settling) a closed trading day for the
clearing house. ``exchange registry ...`` creates and inspects the reference registry
(accounts, caps, allocations, holdings, history, verification) for operators and demos.

Every command runs with umask 077 (:func:`exchange.app.keep_files_private`): what it writes
is the service account's alone. ``serve`` also warns about a data directory, or anything in
it, that group or others may use (:mod:`exchange.serve`); ``settle`` does not: what it
prints is the settlement's summary or its one-line refusal.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from exchange.app import Exchange, keep_files_private, open_engine
from exchange.clearing.settlement import SettlementReport, SettlementStopped
from exchange.config import ConfigError, load_config
from exchange.engine import ProjectionAhead
from exchange.model.units import format_fen, parse_trading_day
from exchange.serve import add_serve_command
from exchange.sim.in_process import SimulatedClock, Simulation, SimulationSummary, describe_rejects
from exchange.sim.served import add_served_arguments, run_served
from registry_adapter.admin import add_registry_commands


def simulate(args: argparse.Namespace) -> int:
    if not args.in_process:
        return run_served(args)
    args.members = 200 if args.members is None else args.members
    args.commands = 200_000 if args.commands is None else args.commands
    config = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="exchange-sim-") as scratch:
        data_dir = Path(args.data_dir) if args.data_dir else Path(scratch)
        if (data_dir / "commands.journal").exists():
            print(f"error: {data_dir} already holds a journal; simulate needs an empty data directory", file=sys.stderr)
            return 2
        exchange = Exchange.open(config, data_dir, SimulatedClock(), clearing_url=args.clearing_db)
        started = time.perf_counter()
        simulation = Simulation(exchange, args.seed, args.members, date.fromisoformat(args.start), config.calendar.schedule())
        try:
            summary = simulation.run(args.days, args.commands)
        except SettlementStopped as stop:
            print(stop, file=sys.stderr)
            return 1
        finally:
            exchange.close()
        elapsed = time.perf_counter() - started
        replayed = open_engine(config, data_dir, SimulatedClock())
        replay_hash = replayed.core.state_hash()
        replayed.close()
    print_summary(summary, args, elapsed)
    same = replay_hash == summary.state_hash
    print(f"replayed from the journal: state hash {'identical' if same else 'DIFFERENT: ' + replay_hash}")
    reconciled = all(not report.differences for report in summary.settlements) and not summary.holding_changes_at_open
    return 0 if same and reconciled else 1


def settle(args: argparse.Namespace) -> int:
    """Settle a closed trading day of the exchange whose data directory is given."""
    config = load_config(args.config)
    data_dir = Path(args.data_dir)
    if not (data_dir / "commands.journal").exists():
        print(f"error: {data_dir} holds no exchange (no commands.journal)", file=sys.stderr)
        return 2
    try:
        exchange = Exchange.open(config, data_dir, time.time_ns, clearing_url=args.clearing_db)
    except ProjectionAhead as error:
        print(f"cannot open the exchange: {error}", file=sys.stderr)
        return 2
    try:
        report = exchange.settle(args.date)
    except SettlementStopped as stop:
        print(stop, file=sys.stderr)
        return 1
    finally:
        exchange.close()
    print_settlement(report)
    return 0


def trading_day_argument(text: str) -> str:
    """``--date``: a calendar date, by the one parser the core and the operator API use (no
    window around today here: a day that stopped settling may be finished weeks later)."""
    try:
        return parse_trading_day(text).isoformat()
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def print_settlement(report: SettlementReport) -> None:
    differences = len(report.differences)
    print(f"settled {report.trading_day}: {report.trades:,} trades, {report.volume_t:,} t, "
          f"{format_fen(report.value_fen, grouped=True)} CNY among {report.members:,} members; "
          f"{report.allowance_legs:,} allowance legs and {report.cash_legs:,} cash legs posted once; "
          f"reconciliation: {differences} differences")
    if report.statements:
        print(f"statements: {report.statements}")


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
    for report in summary.settlements:
        print_settlement(report)
    print(f"start-of-day loads that changed the exchange's view after a settlement: {summary.holding_changes_at_open}")
    print(f"state hash {summary.state_hash}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exchange", description="The city carbon market's exchange.")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a served trading day: members over WebSockets, to the close and settlement")
    sim.add_argument("--seed", type=int, default=2026)
    sim.add_argument("--members", type=int, help="members (default: 20 served, 200 in-process)")
    sim.add_argument("--commands", type=int, help="per trading day: new orders when served (default 10,000), commands in-process (default 200,000)")
    sim.add_argument("--in-process", action="store_true", help="the seeded in-process session instead (same seed, same journal)")
    sim.add_argument("--days", type=int, default=1)
    sim.add_argument("--start", default="2026-11-23", help="first trading day (YYYY-MM-DD)")
    sim.add_argument("--config", help="TOML configuration file (defaults: the market rules)")
    sim.add_argument("--data-dir", help="keep the journal and stores here (default: a temporary directory)")
    sim.add_argument("--clearing-db", help="database URL of the trades and cash ledger (default: SQLite in the data directory)")
    add_served_arguments(sim)
    sim.set_defaults(run=simulate)
    settling = commands.add_parser("settle", help="settle a closed trading day (the clearing house)")
    settling.add_argument("--date", required=True, type=trading_day_argument, help="the trading day (YYYY-MM-DD)")
    settling.add_argument("--data-dir", required=True, help="the exchange's data directory")
    settling.add_argument("--config", help="TOML configuration file (defaults: the market rules)")
    settling.add_argument("--clearing-db", help="database URL of the trades and cash ledger (default: SQLite in the data directory)")
    settling.set_defaults(run=settle)
    add_registry_commands(commands)
    add_serve_command(commands)
    args = parser.parse_args(argv)
    previous_umask = keep_files_private()
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    finally:
        os.umask(previous_umask)  # for a caller that runs main() inside a longer-lived process


if __name__ == "__main__":
    sys.exit(main())
