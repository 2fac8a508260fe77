"""End-of-day settlement: delivery versus payment against the registry and the cash ledger.

After the close the clearing house settles the day, in stages. What to post and what to check
is worked out by the pure :class:`~exchange.clearing.plan.SettlementPlan` from the day's
obligation records (one per trade, whatever its venue, see
:mod:`exchange.clearing.obligations`); this module executes that plan: it reads the stores,
runs the stages, records the progress and writes the statements. Each stage is recorded in the
``settlement_days`` table once it is done, so a run that was killed resumes where it stopped:

1. **Freeze** the day's trades: their count and a digest are recorded. A later run that
   finds other trades for the day stops rather than settle something else.
2. **Verify**: the net obligations worked out from the trades equal the exchange's own view
   (the closing positions the core reported at ``EndDay``); every seller can deliver (a dry
   run of the allowance legs, in trade order, over the registry's holdings) and every buyer
   can pay its net (the cash ledger's available balance). The reservations made at order
   entry guarantee all of this; it is checked anyway, and every problem is reported. The
   counterparties are accounts, a member's or the house's: one a store does not know is a
   problem reported, never a crash.
3. **Hold** each net payer's money: one pending ledger transfer account -> settlement, so
   nothing can withdraw it while the allowances move.
4. **Deliver**: every allowance leg, seller -> buyer, in one registry batch (all or nothing).
5. **Pay**: one ledger batch, all or nothing: void the holds; advance each buyer its gross
   purchases from the settlement account; every cash leg buyer -> seller; each buyer repays
   the advance. The advance makes the legs independent of their order, so an account may pay
   with the same day's sale proceeds; the settlement account ends the batch at zero.
6. **Reconcile**: every account's registry holding and ledger balance must equal the
   exchange's view (the closing positions after their obligations), to the tonne and the
   fen, and the settlement account must be back at zero.
7. **Statements**: one CSV per account with a closing position or a trade (money in integer
   fen, every column described in ``docs/statements.md``), and the settlement
   report, written to a temporary directory and renamed into place, durably and privately
   (mode 0600 in 0700 directories): each file fsynced, the directory fsynced, renamed, its
   parent fsynced (:mod:`exchange.files`), so a day recorded as settled has its statements
   on disk after a power loss.

Exactly once: every leg carries an idempotency id derived from the trading day, the trade id
and the leg (see :mod:`exchange.clearing.plan`), and both stores apply a known id as
a no-op, so a stage run again after a crash posts nothing twice. A day already settled
returns its stored report and writes nothing.

Failures: a registry that times out or cannot be reached (before or after applying, the
caller cannot tell) is retried with the same ids. A refusal (a frozen account, a shortfall,
an id used for something else) or a failure that outlasts the retries stops settlement
with :class:`SettlementStopped`, which names the stage and every problem found; the stop is
recorded, nothing is guessed, and the holds stay in place until a later run, after the
operator has dealt with the cause, finishes the day.

The order of writes, for the crash tests: :data:`WRITE_POINTS` names the moment after each
write; the injectable ``checkpoint`` callback is called there (and at ``start``, before any).
"""

from __future__ import annotations

import enum
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exchange import files
from exchange.clearing.ledger import SETTLEMENT, CashLedger, LedgerError, Operation
from exchange.clearing.obligations import CASH
from exchange.clearing.plan import ClosingPosition, SettlementPlan
from exchange.clearing.trades import TradeStore
from registry_adapter.port import (
    Registry,
    RegistryError,
    RegistryUnavailable,
    UnknownAccount,
)

ACTOR = "exchange:settlement"
WRITE_POINTS = (
    "start", "frozen", "verified", "cash-held", "held", "allowances-delivered", "delivered",
    "cash-paid", "paid", "statements-written", "settled",
)
TRANSIENT = (RegistryUnavailable, TimeoutError, ConnectionError)
T = TypeVar("T")


class Stage(enum.IntEnum):
    FROZEN = 1
    VERIFIED = 2
    HELD = 3
    DELIVERED = 4
    PAID = 5
    SETTLED = 6


metadata = sa.MetaData()

settlement_days = sa.Table(
    "settlement_days",
    metadata,
    sa.Column("trading_day", sa.String(10), primary_key=True),
    sa.Column("stage", sa.SmallInteger, nullable=False),
    sa.Column("trades", sa.BigInteger, nullable=False),
    sa.Column("trades_digest", sa.String(32), nullable=False),
    sa.Column("stopped", sa.Text, nullable=False, default=""),  # why the last run stopped, if it did
    sa.Column("report", sa.Text, nullable=False, default=""),  # the settlement report (JSON) once settled
)


class Difference(msgspec.Struct, frozen=True):
    """One reconciliation difference: what the exchange expects and what the store holds
    (``None`` when the store has no such account)."""

    member_id: str
    asset: str
    exchange_view: int
    store: int | None


class SettlementReport(msgspec.Struct, frozen=True):
    trading_day: str
    trades: int
    volume_t: int
    value_fen: int
    members: int
    allowance_legs: int
    cash_legs: int
    differences: list[Difference]
    statements: str  # the directory of the statements, "" when none were asked for


class SettlementStopped(Exception):
    """Settlement could not finish; nothing was guessed. ``problems`` lists what was found."""

    def __init__(self, trading_day: str, stage: str, problem: str, problems: Sequence[str] = ()) -> None:
        self.trading_day, self.stage, self.problem, self.problems = trading_day, stage, problem, list(problems)
        lines = [f"settlement of {trading_day} stopped at {stage}: {problem}"]
        lines += [f"  - {line}" for line in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        super().__init__("\n".join(lines))


class Settlement:
    def __init__(
        self,
        store: TradeStore,
        ledger: CashLedger,
        registry: Registry,
        statements_dir: Path | None = None,
        checkpoint: Callable[[str], None] | None = None,
        registry_attempts: int = 5,
        retry_wait_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store, self.ledger, self.registry = store, ledger, registry
        self.statements_dir = statements_dir
        self.checkpoint = checkpoint or (lambda point: None)
        self.registry_attempts, self.retry_wait_s, self.sleep = registry_attempts, retry_wait_s, sleep

    def create_schema(self) -> None:
        metadata.create_all(self.store.engine)

    # -- the run -----------------------------------------------------------------------------

    def settle(self, trading_day: str) -> SettlementReport:
        """Settle ``trading_day`` (or finish settling it); see the module docstring."""
        record = self._record(trading_day)
        if record is not None and record.stage == Stage.SETTLED:
            return msgspec.json.decode(record.report, type=SettlementReport)
        self.checkpoint("start")
        positions = self.store.day_positions(trading_day)
        if not positions:
            raise SettlementStopped(trading_day, "freeze", "the day has no closing positions: it has not closed")
        plan = SettlementPlan(trading_day, self.store.day_obligations(trading_day))
        stage = self._freeze(plan, record)
        try:
            return self._run(plan, positions, stage)
        except SettlementStopped as stop:
            self._record_stop(trading_day, str(stop))
            raise

    def _run(self, plan: SettlementPlan, positions: Sequence[ClosingPosition], stage: Stage) -> SettlementReport:
        steps = (
            (Stage.VERIFIED, lambda: self._verify(plan, positions), "verified"),
            (Stage.HELD, lambda: self._ledger_batch(plan.trading_day, "hold", plan.hold_legs()), "cash-held"),
            (Stage.DELIVERED, lambda: self._deliver(plan), "allowances-delivered"),
            (Stage.PAID, lambda: self._ledger_batch(plan.trading_day, "pay", plan.pay_legs()), "cash-paid"),
        )
        for target, step, point in steps:
            if stage < target:
                step()
                if target != Stage.VERIFIED:
                    self.checkpoint(point)
                stage = self._advance(plan.trading_day, target)
        differences = self._reconcile(plan.trading_day, positions)
        if differences:
            raise SettlementStopped(
                plan.trading_day, "reconcile", f"{len(differences)} differences between the stores and the exchange",
                [f"{d.member_id} {d.asset}: exchange {d.exchange_view}, store {d.store}" for d in differences],
            )
        report = self._report(plan, positions)
        self._write_statements(plan, positions, report)
        self._advance(plan.trading_day, Stage.SETTLED, report=msgspec.json.encode(report).decode())
        return report

    def settled_report(self, trading_day: str) -> SettlementReport | None:
        """The stored report of a day already settled (``settle`` would return it and write
        nothing); None for a day not settled yet."""
        record = self._record(trading_day)
        if record is None or record.stage != Stage.SETTLED:
            return None
        return msgspec.json.decode(record.report, type=SettlementReport)

    # -- the record of each day's progress ---------------------------------------------------

    def _record(self, trading_day: str) -> sa.Row | None:
        with self.store.engine.connect() as connection:
            query = sa.select(settlement_days).where(settlement_days.c.trading_day == trading_day)
            return connection.execute(query).first()

    def _freeze(self, plan: SettlementPlan, record: sa.Row | None) -> Stage:
        trades = len(plan.obligations)
        if record is not None:
            if (record.trades, record.trades_digest) != (trades, plan.digest):
                raise SettlementStopped(
                    plan.trading_day, "freeze",
                    f"the day's trades changed since settlement froze them ({record.trades} trades then, {trades} now)",
                )
            return Stage(record.stage)
        values = dict(trading_day=plan.trading_day, stage=Stage.FROZEN, trades=trades,
                      trades_digest=plan.digest, stopped="", report="")
        dialect = sqlite if self.store.engine.dialect.name == "sqlite" else postgresql
        with self.store.engine.begin() as connection:
            connection.execute(dialect.insert(settlement_days).values(values).on_conflict_do_nothing())
        self.checkpoint("frozen")
        return self._freeze(plan, self._record(plan.trading_day))

    def _advance(self, trading_day: str, stage: Stage, report: str = "") -> Stage:
        values: dict[str, object] = dict(stage=stage, stopped="")
        if report:
            values["report"] = report
        with self.store.engine.begin() as connection:
            connection.execute(
                settlement_days.update().where(settlement_days.c.trading_day == trading_day).values(**values)
            )
        self.checkpoint(stage.name.lower())
        return stage

    def _record_stop(self, trading_day: str, why: str) -> None:
        with self.store.engine.begin() as connection:
            connection.execute(
                settlement_days.update().where(settlement_days.c.trading_day == trading_day).values(stopped=why)
            )

    def status(self, trading_day: str) -> tuple[str, str] | None:
        """(stage, why the last run stopped) of a day settlement has started, else None."""
        record = self._record(trading_day)
        return None if record is None else (Stage(record.stage).name.lower(), record.stopped)

    # -- the stages --------------------------------------------------------------------------

    def _verify(self, plan: SettlementPlan, positions: Sequence[ClosingPosition]) -> None:
        problems = plan.obligation_problems(positions)
        problems += plan.delivery_problems(self._registry_holdings(plan))
        problems += plan.payment_problems(self._available_fen())
        if problems:
            raise SettlementStopped(plan.trading_day, "verify", f"{len(problems)} problems; nothing was posted", problems)

    def _registry_holdings(self, plan: SettlementPlan) -> dict[str, dict[str, int]]:
        """The registry's holdings of every account with an obligation that it knows."""
        holdings: dict[str, dict[str, int]] = {}
        for account in plan.accounts():
            held = self._holdings_or_none(plan.trading_day, "verify", account)
            if held is not None:
                holdings[account] = held
        return holdings

    def _available_fen(self) -> dict[str, int]:
        return {account.account_id: account.available_fen for account in self.ledger.accounts()}

    def _deliver(self, plan: SettlementPlan) -> None:
        legs, trading_day = plan.registry_legs(), plan.trading_day
        if not legs:
            return
        reason = f"settlement of trading day {trading_day}"
        try:
            self._registry_call(trading_day, "deliver", lambda: self.registry.apply_transfers(legs, ACTOR, reason))
        except RegistryError as error:
            raise SettlementStopped(
                trading_day, "deliver", f"the registry refused the delivery batch: {error}; "
                "the buyers' cash stays held until a later run delivers",
            ) from error

    def _registry_call(self, trading_day: str, stage: str, call: Callable[[], T]) -> T:
        """``call()``, retried while the registry times out or cannot be reached: every call
        is idempotent (the same ids), so a retry is safe whether or not the last one landed."""
        for attempt in range(1, self.registry_attempts + 1):
            try:
                return call()
            except TRANSIENT as error:
                if attempt == self.registry_attempts:
                    raise SettlementStopped(
                        trading_day, stage,
                        f"the registry did not answer after {attempt} attempts ({error}); run settlement again: "
                        "every leg keeps its id, so nothing is posted twice",
                    ) from error
                self.sleep(self.retry_wait_s * attempt)
        raise AssertionError("unreachable")

    def _ledger_batch(self, trading_day: str, stage: str, operations: Sequence[Operation]) -> None:
        try:
            self.ledger.apply(operations)
        except LedgerError as error:
            raise SettlementStopped(trading_day, stage, f"the cash ledger refused the batch: {error}") from error

    # -- reconciliation, report, statements --------------------------------------------------

    def _reconcile(self, trading_day: str, positions: Sequence[ClosingPosition]) -> list[Difference]:
        """Every account's registry holdings and ledger balance against the exchange's view."""
        balances = self._available_fen()
        differences = []
        if balances.get(SETTLEMENT, 0) != 0:
            differences.append(Difference(SETTLEMENT, CASH, 0, balances.get(SETTLEMENT)))
        held: dict[str, dict[str, int] | None] = {}
        for row in positions:
            if row.asset == CASH:
                store = balances.get(row.member_id)
            else:
                if row.member_id not in held:
                    held[row.member_id] = self._holdings_or_none(trading_day, "reconcile", row.member_id)
                units = held[row.member_id]
                store = None if units is None else units.get(row.asset, 0)
            if store != row.settled:
                differences.append(Difference(row.member_id, row.asset, row.settled, store))
        return differences

    def _holdings_or_none(self, trading_day: str, stage: str, account: str) -> dict[str, int] | None:
        """The registry's holdings of ``account``; None when it has no such account."""
        try:
            return self._registry_call(trading_day, stage, lambda: dict(self.registry.holdings(account)))
        except UnknownAccount:
            return None

    def _report(self, plan: SettlementPlan, positions: Sequence[ClosingPosition]) -> SettlementReport:
        accounts = len({row.member_id for row in positions})
        trades = len(plan.obligations)
        where = str(self.statements_dir / plan.trading_day) if self.statements_dir is not None else ""
        return SettlementReport(plan.trading_day, trades, plan.volume_t, plan.value_fen, accounts, trades, trades, [], where)

    def _write_statements(self, plan: SettlementPlan, positions: Sequence[ClosingPosition], report: SettlementReport) -> None:
        if self.statements_dir is None:
            return
        final = self.statements_dir / plan.trading_day
        if final.exists():  # written by a run that was killed before it recorded the day as settled
            return
        files.make_private_dir(self.statements_dir)
        scratch = self.statements_dir / f".{plan.trading_day}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        files.make_private_dir(scratch)
        write_statements(scratch, plan, positions)
        files.write_new(scratch / "settlement-report.json", msgspec.json.format(msgspec.json.encode(report)))
        files.fsync_dir(scratch)  # every file's entry, before the directory becomes the day's
        files.replace_durably(scratch, final)
        self.checkpoint("statements-written")


# The columns are documented in docs/statements.md; money is integer fen, as everywhere inside
# the exchange (a reader that wants yuan divides by 100; nothing is rounded on the way).
STATEMENT_HEADER = "record,instrument,trade_id,side,qty_t,price_fen,amount_fen\n"


def write_statements(directory: Path, plan: SettlementPlan, positions: Sequence[ClosingPosition]) -> None:
    """One CSV per account with a closing position or a trade: its trades (amount in fen,
    + received, - paid), its net per asset, and its settled holdings and cash (fen, tonnes).
    Every column is described in ``docs/statements.md``.

    Written as text rather than through ``csv``: no field can hold a comma, a quote or a line
    break (symbols, account ids and numbers are all constrained), and a million trades appear
    on two statements each, so each trade's figures are formatted once."""
    lines: dict[str, list[str]] = {row.member_id: [STATEMENT_HEADER] for row in positions}
    for ob in plan.obligations:
        common = f"trade,{ob.instrument},{ob.trade_id},"
        figures = f"{ob.qty_t},{ob.price_fen},"
        lines.setdefault(ob.buyer, [STATEMENT_HEADER]).append(f"{common}buy,{figures}{-ob.value_fen}\n")
        lines.setdefault(ob.seller, [STATEMENT_HEADER]).append(f"{common}sell,{figures}{ob.value_fen}\n")
    for row in positions:
        lines[row.member_id].extend(statement_totals(row, plan))
    for account, text in lines.items():
        files.write_new(directory / f"{account}.csv", "".join(text).encode("utf-8"))


def statement_totals(row: ClosingPosition, plan: SettlementPlan) -> list[str]:
    """A closing-position row's net for the day and its settled figure."""
    net = plan.net(row.member_id, row.asset)
    if row.asset == CASH:
        net_line = f"net,,,{'pay' if net > 0 else 'receive'},,,{-net}\n"
        return [net_line, f"settled_cash,,,,,,{row.settled}\n"]
    net_line = f"net,{row.asset},,{'deliver' if net > 0 else 'receive'},{-net},,\n"
    return [net_line, f"settled_holding,{row.asset},,,{row.settled},,\n"]
