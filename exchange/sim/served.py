"""``exchange simulate`` on the served exchange: seeded members over real WebSockets, whole
trading days to the close, then settlement, with a progress bar and a checked summary.

What runs, all in this one process and on one event loop:

* **the served exchange** (:mod:`exchange.sim.served_exchange`), as ``exchange serve``
  composes it, over a data directory (``--data-dir``, else a temporary one; SQLite stores
  unless ``--clearing-db``) whose reference registry (``registry.db``) was first given every
  member's holdings, as the authority would;
* **the operator** over the HTTP API (:mod:`exchange.sim.operator`, :mod:`exchange.sim.day`):
  admits the members and issues their keys, funds them, opens each day, moves the phases,
  acts on the market during continuous trading, closes the day and settles it, and reads the
  trades, positions and state for the checks;
* **N members** (:mod:`exchange.sim.member_client`), one WebSocket session each, trading the
  strategies of :mod:`exchange.sim.strategies`, the same as the in-process run's.

The members, their styles, kinds, allocations and holdings are those the in-process run of the
same seed has (:mod:`exchange.sim.members`); each member draws its decisions from its own
generator seeded from ``--seed`` and its id, the operator from its own. The interleaving of
the sockets is not reproducible (what a member sees when it decides depends on timing), so
the run checks consistency instead (:mod:`exchange.sim.checks`); the in-process run
(``--in-process``) is the reproducible one.

The per-member order rate is lifted for the run (:func:`served_config`): the limit is meant for
the wall clock, and this run squeezes a trading day of hours into seconds.

:func:`run_served` prints the summary and returns 0 when every check passed, 1 otherwise, 2 on
bad options or a data directory that already holds an exchange. With a ``--data-dir`` the
members' private messages are kept as JSON lines in ``DATA_DIR/member-logs/M0001.jsonl`` next
to the journal, so they can be checked against it later. The progress (``--progress``,
:mod:`exchange.progress`) is by default (``auto``) a bar when stderr is a terminal and a plain
line every few seconds when it is not.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TextIO, TypeVar

import aiohttp
import msgspec

from exchange.app import open_engine
from exchange.config import Config, load_config
from exchange.sim.checks import Check, ServedRun, gather, run_checks
from exchange.sim.day import DayDriver
from exchange.sim.member_client import SimMember
from exchange.sim.members import CASH_PER_MEMBER_FEN, MemberPlan, member_ids, plan_members
from exchange.sim.operator import Operator, OperatorError
from exchange.progress import Progress
from exchange.sim.report import print_served_summary
from exchange.sim.served_exchange import ServedExchange, served_exchange
from registry_adapter.demo import allocate_holdings
from registry_adapter.sql import SqlRegistry

DEFAULT_SEED = 2026
DEFAULT_MEMBERS = 20
DEFAULT_ORDERS = 10_000  # new orders per trading day, over all members
DEFAULT_WINDOW = 16  # new orders a member keeps unanswered at most
DEFAULT_START = "2026-11-23"
LIFTED_ORDER_RATE = 1_000_000  # orders a second and burst, per member, for the compressed day
LIFTED_DAY_WINDOW = 36_600  # days around today the served run may open (any --start)
MEMBER_LOGS = "member-logs"


# -- the command line --------------------------------------------------------------------------


def add_served_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The served run's own options, for the ``simulate`` subparser (which already has
    ``--seed --members --commands --days --start --config --data-dir --clearing-db``)."""
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW,
        help=f"served run: new orders each member keeps unanswered at most (default {DEFAULT_WINDOW})",
    )
    parser.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help="the progress on stderr: auto, a bar on a terminal and a plain line every few seconds otherwise; "
             "always, the bar even off a terminal; never, none",
    )
    return parser


def run_served(args: argparse.Namespace) -> int:
    """``exchange simulate`` on the served exchange; 0 when every check passed, 1 when one
    failed, 2 on bad options or a data directory that already holds an exchange.
    ``args.members`` and ``args.commands`` of None take this run's defaults."""
    config = load_config(getattr(args, "config", None))
    members, orders = _given(args, "members", DEFAULT_MEMBERS), _given(args, "commands", DEFAULT_ORDERS)
    days, window, start = _given(args, "days", 1), _given(args, "window", DEFAULT_WINDOW), _given(args, "start", DEFAULT_START)
    problem = _option_problem(members, orders, days, window, start)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    progress = getattr(args, "progress", "auto")
    given = getattr(args, "data_dir", None)
    with tempfile.TemporaryDirectory(prefix="exchange-served-") as scratch:
        data_dir = Path(given) if given else Path(scratch)
        held = [name for name in ("commands.journal", "registry.db") if (data_dir / name).exists()]
        if held:
            print(f"error: {data_dir} already holds {held[0]}; simulate needs an empty data directory", file=sys.stderr)
            return 2
        run = simulate_served(
            config, data_dir, seed=_given(args, "seed", DEFAULT_SEED), members=members, orders=orders, days=days,
            start=start, clearing_url=getattr(args, "clearing_db", None), window=window,
            progress=progress != "never", bar=True if progress == "always" else None,
            member_logs=given is not None, out=sys.stdout,
        )
    print_served_summary(run)
    return 0 if run.ok else 1


T = TypeVar("T")


def _given(args: argparse.Namespace, name: str, default: T) -> T:
    value = getattr(args, name, None)
    return default if value is None else value


def _option_problem(members: int, orders: int, days: int, window: int, start: str) -> str:
    try:
        date.fromisoformat(start)
    except ValueError:
        return f"--start {start!r} is not a date (YYYY-MM-DD)"
    if members < 2 or orders < 0 or days < 1 or window < 1:
        return "the served run needs --members 2 or more, --commands 0 or more, --days and --window 1 or more"
    return ""


def served_config(config: Config) -> Config:
    """The configuration the served run uses: the same, with the per-member order rate lifted
    (a trading day runs in seconds here, and the limit is meant for the wall clock), and the
    start of day's window around today lifted (the run opens the days of its own calendar,
    from ``--start``, whatever today is)."""
    limits = msgspec.structs.replace(config.risk.limits, orders_per_second=LIFTED_ORDER_RATE, order_burst=LIFTED_ORDER_RATE)
    calendar = msgspec.structs.replace(config.calendar, max_days_from_today=LIFTED_DAY_WINDOW)
    return msgspec.structs.replace(config, risk=msgspec.structs.replace(config.risk, limits=limits), calendar=calendar)


# -- the run -------------------------------------------------------------------------------------


def simulate_served(
    config: Config, data_dir: Path, *, seed: int = DEFAULT_SEED, members: int = DEFAULT_MEMBERS,
    orders: int = DEFAULT_ORDERS, days: int = 1, start: str = DEFAULT_START, clearing_url: str | None = None,
    window: int = DEFAULT_WINDOW, progress: bool = False, member_logs: bool = True, out: TextIO | None = None,
    bar: bool | None = None,
) -> ServedRun:
    """Start the served exchange over ``data_dir`` (empty), run ``days`` trading days with
    ``members`` members sending ``orders`` new orders a day, settle each, check; the result."""
    simulation = ServedSimulation(config, data_dir, seed, members, orders, days, date.fromisoformat(start),
                                  clearing_url, window, progress, member_logs, out, bar)
    return asyncio.run(simulation.run())


class ServedSimulation:
    def __init__(
        self, config: Config, data_dir: Path, seed: int, members: int, orders: int, days: int, start: date,
        clearing_url: str | None, window: int, progress: bool, member_logs: bool, out: TextIO | None,
        bar: bool | None = None,
    ) -> None:
        if members < 2 or orders < 0 or days < 1 or window < 1:
            raise ValueError("the served simulation needs 2 or more members, 1 or more days, a window of 1 or more")
        self.config = served_config(config)
        self.schedule = config.calendar.schedule()
        self.data_dir = data_dir
        self.symbols = sorted(item.symbol for item in self.config.listed_instruments())
        self.plans = plan_members(random.Random(seed), member_ids(members), self.symbols)
        self.operator_random = random.Random(f"{seed}:operator")
        self.orders_per_day, self.days = orders, days
        self.day = start if self.schedule.is_trading_day(start) else self.schedule.next_trading_day(start)
        self.clearing_url, self.window = clearing_url, window
        self.member_logs, self.out = member_logs, out
        self.progress = Progress(orders * days, progress, bar=bar)
        self.result = ServedRun(data_dir=str(data_dir), seed=seed, members=members, window=window)
        self.result.styles.update(plan.style for plan in self.plans)
        self.clients: list[SimMember] = []

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    async def run(self) -> ServedRun:
        started = time.perf_counter()
        self._seed_registry()
        async with served_exchange(self.config, self.data_dir, self.clearing_url) as served:
            self.result.url = served.url
            self._announce(served)
            try:
                await self._serve(served)
            except (OperatorError, ConnectionError, TimeoutError, aiohttp.ClientError) as error:
                self.result.checks.append(Check("the run went to its end", False, f"stopped: {error!r}"))
            fatal = served.fatal()
        self.result.hub_fatal = "" if fatal is None else repr(fatal)
        self._finish()
        self.result.elapsed_s = time.perf_counter() - started
        return self.result

    def _announce(self, served: ServedExchange) -> None:
        self.say(f"served exchange on {served.url} (members: {served.url.replace('http', 'ws', 1)}/ws), "
                 f"data in {self.data_dir}{'' if self.member_logs else ' (temporary)'}; {len(self.plans)} members, "
                 f"{self.orders_per_day:,} orders a day, {self.days} day(s), seed {self.result.seed}")

    async def _serve(self, served: ServedExchange) -> None:
        self.progress.start()
        # No pool limit: every member holds a connection for the whole run, and the
        # operator's calls must never wait behind them (aiohttp's default is 100).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            try:
                await self._operate(Operator(http, served.url, served.tokens), http, served.url + "/ws")
            finally:
                await self.progress.finish()
                for client in self.clients:  # log off (no cancel-on-disconnect: GTC orders stay)
                    await client.close()

    def _seed_registry(self) -> None:
        """The authority's part, before the exchange opens the registry."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        registry = SqlRegistry(f"sqlite:///{self.data_dir / 'registry.db'}")
        try:
            registry.create_schema()
            allocate_holdings(registry, {plan.member_id: plan.holdings_t for plan in self.plans})
        finally:
            registry.close()

    async def _operate(self, operator: Operator, http: aiohttp.ClientSession, ws_url: str) -> None:
        self.progress.stage = "admitting members"
        keys = {plan.member_id: await self._admit(operator, plan) for plan in self.plans}
        self.progress.stage = "members logging on"
        await asyncio.gather(*(client.connect(http, ws_url, *keys[client.member_id]) for client in self.clients))
        driver = DayDriver(operator, self.clients, self.schedule, self.orders_per_day, self.symbols,
                           self.operator_random, self.progress, self.result)
        for day_number in range(self.days):
            await driver.trading_day(self.day, first=day_number == 0)
            self.day = self.schedule.next_trading_day(self.day)
        self.progress.stage = "checking"
        accounts = await operator.ok("GET", "/regulator/positions", "regulator")
        self.result.open_orders_at_end = {account["member_id"]: account["open_orders"] for account in accounts}
        self.result.state_hash = (await operator.ok("GET", "/state", "regulator"))["state_hash"]

    async def _admit(self, operator: Operator, plan: MemberPlan) -> tuple[str, bytes]:
        """Admit, fund and key one member; its client joins the run. Its key."""
        admission = {"member_id": plan.member_id, "kind": plan.kind.name.lower(),
                     "annual_allocation_t": plan.annual_allocation_t, "linked_group": plan.linked_group}
        await operator.ok("POST", "/members", "admin", admission)
        await operator.ok("POST", "/clearing/deposits", "clearing",
                          {"member_id": plan.member_id, "amount_fen": CASH_PER_MEMBER_FEN, "reference": "opening"})
        issued = await operator.ok("POST", f"/members/{plan.member_id}/credentials", "admin")
        self.clients.append(SimMember(plan.member_id, plan.style, self.result.seed, self.symbols, self.window, self.progress))
        return issued["key_id"], bytes.fromhex(issued["secret"])

    def _finish(self) -> None:
        self.result.replay_hash = self._replay_hash()
        if self.member_logs:
            for client in self.clients:
                client.write_log(self.data_dir / MEMBER_LOGS)
        gather(self.result, self.clients)
        self.result.checks.extend(run_checks(self.result, self.clients))

    def _replay_hash(self) -> str:
        """The state rebuilt from the journal alone (no snapshot is taken in a run this size)."""
        try:
            engine = open_engine(self.config, self.data_dir, time.time_ns)
        except Exception as error:  # noqa: BLE001 - reported as a failed check
            return f"replay failed: {error!r}"
        try:
            return engine.core.state_hash()
        finally:
            engine.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m exchange.sim.served`` with the ``simulate`` options."""
    parser = argparse.ArgumentParser(prog="exchange-simulate-served")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS)
    parser.add_argument("--commands", type=int, default=DEFAULT_ORDERS, help="new orders per trading day")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--start", default=DEFAULT_START)
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    parser.add_argument("--clearing-db")
    add_served_arguments(parser)
    return run_served(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
