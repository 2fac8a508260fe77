"""The ``exchange`` command, on the composition root (:mod:`exchange.app`).

``exchange simulate`` starts the served exchange and drives it the way members would: seeded
members over real WebSockets, each trading day to the close, then its settlement, with a
progress bar and a checked summary (:mod:`exchange.sim.served`). ``--in-process`` runs
the seeded in-process session instead: each day to the close, then its settlement against the
reference registry and the cash ledger with a reconciliation; it prints a summary, then
rebuilds the state from the journal alone and checks the state hash.
``exchange settle --date D`` settles (or finishes settling) a closed trading day for the
clearing house. ``exchange init DIR`` makes a data directory ready to serve
(:mod:`exchange.init`). ``exchange registry ...`` creates and inspects the reference registry
(accounts, caps, allocations, holdings, history, verification) for operators and demos.

Errors are sentences: an expected failure (a locked data directory, a port in use, a bad or
missing configuration, a bad date, a day that cannot settle) is one line on stderr naming what
is wrong and what to do, and a non-zero exit (:mod:`exchange.cli_errors`); argparse's own
mistakes are one line too (:class:`CommandLineParser`). Long work (``simulate`` in both modes,
``settle``) shows its progress on stderr (:mod:`exchange.progress`).

A second ``exchange settle`` of a settled day is not an error: it says the day was already
settled (with the first run's figures), posts nothing and exits 0, as the registry's retried
operations do ("already done"), so a clearing house's script may retry it safely.

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
from typing import NoReturn

from exchange.app import Exchange, keep_files_private, open_engine
from exchange.cli_errors import explain
from exchange.clearing.settlement import WRITE_POINTS, SettlementReport, SettlementStopped
from exchange.config import ConfigError, load_config
from exchange.engine import ProjectionAhead
from exchange.engine.journal import JournalError
from exchange.init import add_init_command
from exchange.model.units import format_fen, parse_trading_day
from exchange.progress import Progress
from exchange.serve import add_serve_command
from exchange.sim.in_process import SimulatedClock, Simulation, SimulationSummary, describe_rejects
from exchange.sim.served import add_served_arguments, run_served
from registry_adapter.admin import add_registry_commands


def simulate(args: argparse.Namespace) -> int:
    if not args.in_process:
        return run_served(args)
    args.members = 200 if args.members is None else args.members
    args.commands = 200_000 if args.commands is None else args.commands
    if args.members < 1 or args.commands < 0 or args.days < 1:
        print("error: the in-process run needs --members 1 or more, --commands 0 or more and --days 1 or more", file=sys.stderr)
        return 2
    config = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="exchange-sim-") as scratch:
        data_dir = Path(args.data_dir) if args.data_dir else Path(scratch)
        if (data_dir / "commands.journal").exists():
            print(f"error: {data_dir} already holds a journal; simulate needs an empty data directory", file=sys.stderr)
            return 2
        exchange = Exchange.open(config, data_dir, SimulatedClock(), clearing_url=args.clearing_db)
        started = time.perf_counter()
        progress = Progress(args.days * args.commands, args.progress != "never", unit="commands",
                            bar=True if args.progress == "always" else None)
        simulation = Simulation(exchange, args.seed, args.members, date.fromisoformat(args.start),
                                config.calendar.schedule(), progress)
        try:
            summary = simulation.run(args.days, args.commands)
        except SettlementStopped as stop:
            progress.close(finished=False)
            print(stop, file=sys.stderr)
            return 1
        finally:
            exchange.close()
        progress.close()
        elapsed = time.perf_counter() - started
        replayed = open_engine(config, data_dir, SimulatedClock())
        replay_hash = replayed.core.state_hash()
        replayed.close()
    print_summary(summary, args, elapsed, statements_kept=args.data_dir is not None)
    same = replay_hash == summary.state_hash
    print(f"replayed from the journal: state hash {'identical' if same else 'DIFFERENT: ' + replay_hash}")
    reconciled = all(not report.differences for report in summary.settlements) and not summary.holding_changes_at_open
    return 0 if same and reconciled else 1


def settle(args: argparse.Namespace) -> int:
    """Settle a closed trading day of the exchange whose data directory is given."""
    config = load_config(args.config)
    data_dir = Path(args.data_dir)
    if not (data_dir / "commands.journal").exists():
        print(f"error: {data_dir} holds no exchange (no commands.journal): give the --data-dir `exchange serve` uses",
              file=sys.stderr)
        return 2
    exchange = Exchange.open(config, data_dir, time.time_ns, clearing_url=args.clearing_db)
    try:
        assert exchange.clearing is not None, "an exchange opened from a data directory has its clearing side"
        settlement = exchange.clearing.settlement
        done = settlement.settled_report(args.date)
        if done is not None:
            print(f"{args.date} was already settled: {done.trades:,} trades, {done.volume_t:,} t, "
                  f"{format_fen(done.value_fen, grouped=True)} CNY; nothing was posted again"
                  + (f" (statements: {done.statements})" if done.statements else ""))
            return 0
        progress = Progress(len(WRITE_POINTS), unit="steps")
        settlement.checkpoint = lambda point: _settlement_step(progress, args.date, point)
        try:
            report = exchange.settle(args.date)
        except SettlementStopped as stop:
            progress.close(finished=False)
            print_stop(stop)
            return 1
        progress.close()
    finally:
        exchange.close()
    print_settlement(report)
    return 0


def _settlement_step(progress: Progress, trading_day: str, point: str) -> None:
    """Settlement's checkpoint after each write: the progress, by write point."""
    progress.done, progress.stage = WRITE_POINTS.index(point) + 1, f"settling {trading_day}: {point}"
    progress.tick()


def print_stop(stop: SettlementStopped) -> None:
    """The problems found on stdout (the run's findings); the verdict, one line, on stderr."""
    for problem in stop.problems:
        print(f"  - {problem}")
    first = f" ({stop.problems[0]}{f' and {len(stop.problems) - 1} more, listed above' if len(stop.problems) > 1 else ''})" \
        if stop.problems else ""
    print(f"error: settlement of {stop.trading_day} stopped at {stop.stage}: {stop.problem}{first}; "
          f"deal with the cause, then run `exchange settle --date {stop.trading_day}` again "
          "(nothing already posted is posted twice)", file=sys.stderr)


def trading_day_argument(text: str) -> str:
    """``--date``: a calendar date, by the one parser the core and the operator API use (no
    window around today here: a day that stopped settling may be finished weeks later)."""
    try:
        return parse_trading_day(text).isoformat()
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def calendar_date(text: str) -> str:
    """``--start``: a calendar date (YYYY-MM-DD)."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def print_settlement(report: SettlementReport, statements_kept: bool = True) -> None:
    differences = len(report.differences)
    print(f"settled {report.trading_day}: {report.trades:,} trades, {report.volume_t:,} t, "
          f"{format_fen(report.value_fen, grouped=True)} CNY among {report.members:,} members; "
          f"{report.allowance_legs:,} allowance legs and {report.cash_legs:,} cash legs posted once; "
          f"reconciliation: {differences} differences")
    if report.statements and statements_kept:
        print(f"statements: {report.statements}")
    elif report.statements:
        print("statements: not kept (written to a temporary data directory, now deleted; give --data-dir to keep them)")


def print_summary(summary: SimulationSummary, args: argparse.Namespace, elapsed_s: float, statements_kept: bool = True) -> None:
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
        print_settlement(report, statements_kept)
    print(f"start-of-day loads that changed the exchange's view after a settlement: {summary.holding_changes_at_open}")
    print(f"state hash {summary.state_hash}")


class CommandLineParser(argparse.ArgumentParser):
    """argparse's mistakes (a missing flag, a bad date) as one line, without the usage block:
    ``exchange settle: error: argument --date: ... (see exchange settle --help)``. Sub-commands'
    parsers are of this class too (argparse makes them of their parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="exchange", description="The city carbon market's exchange.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser("simulate", help="run a served trading day: members over WebSockets, to the close and settlement")
    sim.add_argument("--seed", type=int, default=2026, help="the run's seed: the same seed, the same members and decisions (default 2026)")
    sim.add_argument("--members", type=int, help="members (default: 20 served, 200 in-process)")
    sim.add_argument("--commands", type=int, help="per trading day: new orders when served (default 10,000), commands in-process (default 200,000)")
    sim.add_argument("--in-process", action="store_true", help="the seeded in-process session instead (same seed, same journal)")
    sim.add_argument("--days", type=int, default=1, help="trading days to run, each settled after its close (default 1)")
    sim.add_argument("--start", default="2026-11-23", type=calendar_date, help="first trading day (YYYY-MM-DD)")
    sim.add_argument("--config", help="TOML configuration file (defaults: the market rules)")
    sim.add_argument("--data-dir", help="keep the journal, stores and statements here (default: a temporary directory)")
    sim.add_argument("--clearing-db", help="database URL of the trades and cash ledger (default: SQLite in the data directory)")
    add_served_arguments(sim)
    sim.set_defaults(run=simulate)
    settling = commands.add_parser("settle", help="settle a closed trading day (the clearing house)")
    settling.add_argument("--date", required=True, type=trading_day_argument, help="the trading day (YYYY-MM-DD)")
    settling.add_argument("--data-dir", required=True, help="the exchange's data directory")
    settling.add_argument("--config", help="TOML configuration file (defaults: the market rules)")
    settling.add_argument("--clearing-db", help="database URL of the trades and cash ledger (default: SQLite in the data directory)")
    settling.set_defaults(run=settle)
    add_init_command(commands)
    add_registry_commands(commands)
    add_serve_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous_umask = keep_files_private()
    try:
        return args.run(args)
    except (ConfigError, JournalError, ProjectionAhead, OSError) as error:
        said = explain(error, args.command, getattr(args, "data_dir", None))
        if said is None:
            raise  # not an expected failure: a bug, traced
        print(said, file=sys.stderr)
        return 2
    finally:
        os.umask(previous_umask)  # for a caller that runs main() inside a longer-lived process


if __name__ == "__main__":
    sys.exit(main())
