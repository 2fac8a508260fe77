"""End-of-day settlement: delivery versus payment against the registry and the cash ledger.

After the close the clearing house settles the day, in stages. Each stage is recorded in the
``settlement_days`` table once it is done, so a run that was killed resumes where it stopped:

1. **Freeze** the day's trades: their count and a digest are recorded. A later run that
   finds other trades for the day stops rather than settle something else.
2. **Verify**: the net obligations worked out from the trades equal the exchange's own view
   (the closing positions the core reported at ``EndDay``); every seller can deliver (a dry
   run of the allowance legs, in trade order, over the registry's holdings) and every buyer
   can pay its net (the cash ledger's available balance). The reservations made at order
   entry guarantee all of this; it is checked anyway, and every problem is reported.
3. **Hold** each net payer's money: one pending ledger transfer member -> settlement, so
   nothing can withdraw it while the allowances move.
4. **Deliver**: every allowance leg, seller -> buyer, in one registry batch (all or nothing).
5. **Pay**: one ledger batch, all or nothing: void the holds; advance each buyer its gross
   purchases from the settlement account; every cash leg buyer -> seller; each buyer repays
   the advance. The advance makes the legs independent of their order, so a member may pay
   with the same day's sale proceeds; the settlement account ends the batch at zero.
6. **Reconcile**: every member's registry holding and ledger balance must equal the
   exchange's view (the closing positions after their obligations), to the tonne and the
   fen, and the settlement account must be back at zero.
7. **Statements**: one CSV per member and the settlement report, written to a temporary
   directory and renamed into place.

Exactly once: every leg carries an idempotency id derived from the trading day, the trade id
and the leg (see :mod:`exchange.clearing.obligations`), and both stores apply a known id as
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
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exchange.clearing import ledger as cash
from exchange.clearing.ledger import CashLedger, LedgerError
from exchange.clearing.obligations import CASH, DayObligations, leg_id, member_leg_id
from exchange.clearing.trades import TradeStore
from exchange.model.units import format_fen
from registry_adapter.port import Registry, RegistryError, RegistryUnavailable, Transfer, UnknownAccount

ACTOR = "exchange:settlement"
WRITE_POINTS = (
    "start", "frozen", "verified", "cash-held", "held", "allowances-delivered", "delivered",
    "cash-paid", "paid", "statements-written", "settled",
)
TRANSIENT = (RegistryUnavailable, TimeoutError, ConnectionError)


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
        day = DayObligations.from_trades(trading_day, self.store.day_trade_legs(trading_day))
        stage = self._freeze(day, record)
        try:
            return self._run(day, positions, stage)
        except SettlementStopped as stop:
            self._record_stop(trading_day, str(stop))
            raise

    def _run(self, day: DayObligations, positions: list, stage: Stage) -> SettlementReport:
        steps = (
            (Stage.VERIFIED, lambda: self._verify(day, positions), "verified"),
            (Stage.HELD, lambda: self._hold(day), "cash-held"),
            (Stage.DELIVERED, lambda: self._deliver(day), "allowances-delivered"),
            (Stage.PAID, lambda: self._pay(day), "cash-paid"),
        )
        for target, step, point in steps:
            if stage < target:
                step()
                if target != Stage.VERIFIED:
                    self.checkpoint(point)
                stage = self._advance(day.trading_day, target)
        differences = self._reconcile(day, positions)
        if differences:
            raise SettlementStopped(
                day.trading_day, "reconcile", f"{len(differences)} differences between the stores and the exchange",
                [f"{d.member_id} {d.asset}: exchange {d.exchange_view}, store {d.store}" for d in differences],
            )
        report = self._report(day, positions)
        self._write_statements(day, positions, report)
        self._advance(day.trading_day, Stage.SETTLED, report=msgspec.json.encode(report).decode())
        return report

    # -- the record of each day's progress ---------------------------------------------------

    def _record(self, trading_day: str) -> sa.Row | None:
        with self.store.engine.connect() as connection:
            query = sa.select(settlement_days).where(settlement_days.c.trading_day == trading_day)
            return connection.execute(query).first()

    def _freeze(self, day: DayObligations, record: sa.Row | None) -> Stage:
        if record is not None:
            if (record.trades, record.trades_digest) != (len(day.trades), day.digest):
                raise SettlementStopped(
                    day.trading_day, "freeze",
                    f"the day's trades changed since settlement froze them ({record.trades} trades then, "
                    f"{len(day.trades)} now)",
                )
            return Stage(record.stage)
        values = dict(trading_day=day.trading_day, stage=Stage.FROZEN, trades=len(day.trades),
                      trades_digest=day.digest, stopped="", report="")
        dialect = sqlite if self.store.engine.dialect.name == "sqlite" else postgresql
        with self.store.engine.begin() as connection:
            connection.execute(dialect.insert(settlement_days).values(values).on_conflict_do_nothing())
        self.checkpoint("frozen")
        return self._freeze(day, self._record(day.trading_day))

    def _advance(self, trading_day: str, stage: Stage, report: str = "") -> Stage:
        values: dict = dict(stage=stage, stopped="")
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

    def _verify(self, day: DayObligations, positions: list) -> None:
        problems = obligation_problems(day, positions)
        problems += self._delivery_problems(day)
        problems += self._payment_problems(day)
        if problems:
            raise SettlementStopped(day.trading_day, "verify", f"{len(problems)} problems; nothing was posted", problems)

    def _delivery_problems(self, day: DayObligations) -> list[str]:
        """A dry run of the allowance legs, in trade order, over the registry's holdings."""
        holdings: dict[str, dict[str, int]] = {}
        problems = []
        for member in day.members():
            try:
                holdings[member] = self._registry_call(
                    day.trading_day, "verify", lambda: dict(self.registry.holdings(member))
                )
            except UnknownAccount:
                problems.append(f"{member}: no registry account")
        short: set[tuple[str, str]] = set()
        for trade in day.trades:
            seller, buyer = holdings.get(trade.seller), holdings.get(trade.buyer)
            if seller is None or buyer is None:
                continue
            held = seller.get(trade.instrument, 0)
            if held < trade.qty_t and (trade.seller, trade.instrument) not in short:
                short.add((trade.seller, trade.instrument))
                problems.append(
                    f"{trade.seller}: holds {held} t of {trade.instrument}, trade {trade.trade_id} delivers {trade.qty_t} t"
                )
            seller[trade.instrument] = held - trade.qty_t
            buyer[trade.instrument] = buyer.get(trade.instrument, 0) + trade.qty_t
        return problems

    def _payment_problems(self, day: DayObligations) -> list[str]:
        balances = {account.account_id: account.available_fen for account in self.ledger.accounts()}
        problems = []
        for member in day.members():
            if member not in balances:
                problems.append(f"{member}: no cash account")
            elif balances[member] < day.net_pay_fen(member):
                problems.append(
                    f"{member}: {format_fen(balances[member])} CNY available, "
                    f"{format_fen(day.net_pay_fen(member))} CNY to pay"
                )
        return problems

    def _hold(self, day: DayObligations) -> None:
        holds = [
            cash.Transfer(member_leg_id(day.trading_day, member, "hold"), member, cash.SETTLEMENT,
                          day.net_pay_fen(member), cash.TransferCode.SETTLEMENT, "", True)
            for member in day.members() if day.net_pay_fen(member) > 0
        ]
        self._ledger_batch(day.trading_day, "hold", holds)

    def _deliver(self, day: DayObligations) -> None:
        trading_day = day.trading_day
        legs = [
            Transfer(leg_id(trading_day, t.trade_id, "allowance"), t.seller, t.buyer, t.instrument, t.qty_t)
            for t in day.trades
        ]
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

    def _registry_call(self, trading_day: str, stage: str, call):
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

    def _pay(self, day: DayObligations) -> None:
        trading_day, operations = day.trading_day, []
        code = cash.TransferCode.SETTLEMENT
        payers = [member for member in day.members() if day.gross_pay_fen(member) > 0]
        for member in day.members():
            if day.net_pay_fen(member) > 0:
                operations.append(cash.VoidPending(member_leg_id(trading_day, member, "hold")))
        for member in payers:
            operations.append(cash.Transfer(member_leg_id(trading_day, member, "advance"), cash.SETTLEMENT, member,
                                            day.gross_pay_fen(member), code))
        operations.extend(
            cash.Transfer(leg_id(trading_day, t.trade_id, "cash"), t.buyer, t.seller, t.price_fen * t.qty_t, code)
            for t in day.trades
        )
        for member in payers:
            operations.append(cash.Transfer(member_leg_id(trading_day, member, "repay"), member, cash.SETTLEMENT,
                                            day.gross_pay_fen(member), code))
        self._ledger_batch(trading_day, "pay", operations)

    def _ledger_batch(self, trading_day: str, stage: str, operations: list) -> None:
        try:
            self.ledger.apply(operations)
        except LedgerError as error:
            raise SettlementStopped(trading_day, stage, f"the cash ledger refused the batch: {error}") from error

    # -- reconciliation, report, statements --------------------------------------------------

    def _reconcile(self, day: DayObligations, positions: list) -> list[Difference]:
        """Every member's registry holdings and ledger balance against the exchange's view."""
        balances = {account.account_id: account.available_fen for account in self.ledger.accounts()}
        differences = []
        if balances.get(cash.SETTLEMENT, 0) != 0:
            differences.append(Difference(cash.SETTLEMENT, CASH, 0, balances.get(cash.SETTLEMENT)))
        held: dict[str, dict[str, int] | None] = {}
        for row in positions:
            if row.asset == CASH:
                store = balances.get(row.member_id)
            else:
                if row.member_id not in held:
                    held[row.member_id] = self._holdings_or_none(day.trading_day, row.member_id)
                units = held[row.member_id]
                store = None if units is None else units.get(row.asset, 0)
            if store != row.settled:
                differences.append(Difference(row.member_id, row.asset, row.settled, store))
        return differences

    def _holdings_or_none(self, trading_day: str, member: str) -> dict[str, int] | None:
        try:
            return self._registry_call(trading_day, "reconcile", lambda: dict(self.registry.holdings(member)))
        except UnknownAccount:
            return None

    def _report(self, day: DayObligations, positions: list) -> SettlementReport:
        members = len({row.member_id for row in positions})
        where = str(self.statements_dir / day.trading_day) if self.statements_dir is not None else ""
        return SettlementReport(day.trading_day, len(day.trades), day.volume_t, day.value_fen, members,
                                len(day.trades), len(day.trades), [], where)

    def _write_statements(self, day: DayObligations, positions: list, report: SettlementReport) -> None:
        if self.statements_dir is None:
            return
        final = self.statements_dir / day.trading_day
        if final.exists():  # written by a run that was killed before it recorded the day as settled
            return
        scratch = self.statements_dir / f".{day.trading_day}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        write_statements(scratch, day, positions)
        (scratch / "settlement-report.json").write_bytes(msgspec.json.format(msgspec.json.encode(report)))
        os.replace(scratch, final)
        self.checkpoint("statements-written")


def obligation_problems(day: DayObligations, positions: list) -> list[str]:
    """The net obligations from the trades must be the exchange's own obligations."""
    expected = {(row.member_id, row.asset): row.obligation for row in positions if row.obligation}
    found = day.nets()
    return [
        f"{member} {asset}: the trades owe {found.get((member, asset), 0)}, "
        f"the exchange's view {expected.get((member, asset), 0)}"
        for member, asset in sorted(expected.keys() | found.keys())
        if expected.get((member, asset), 0) != found.get((member, asset), 0)
    ]


STATEMENT_HEADER = "record,instrument,trade_id,side,qty_t,price_cny,amount_cny\n"


def write_statements(directory: Path, day: DayObligations, positions: list) -> None:
    """One CSV per member with a closing position: its trades (amount + received, - paid),
    its net per asset, and its settled holdings and cash.

    Written as text rather than through ``csv``: no field can hold a comma, a quote or a line
    break (symbols, member ids and numbers are all constrained), and a million trades appear
    on two statements each, so each trade's figures are formatted once."""
    lines: dict[str, list[str]] = {row.member_id: [STATEMENT_HEADER] for row in positions}
    for trade in day.trades:
        price, value = format_fen(trade.price_fen), format_fen(trade.price_fen * trade.qty_t)
        common = f"trade,{trade.instrument},{trade.trade_id},"
        lines.setdefault(trade.buyer, [STATEMENT_HEADER]).append(f"{common}buy,{trade.qty_t},{price},-{value}\n")
        lines.setdefault(trade.seller, [STATEMENT_HEADER]).append(f"{common}sell,{trade.qty_t},{price},{value}\n")
    for row in positions:
        lines[row.member_id].extend(statement_totals(row, day))
    for member, text in lines.items():
        (directory / f"{member}.csv").write_text("".join(text), encoding="utf-8")


def statement_totals(row, day: DayObligations) -> list[str]:
    """A closing-position row's net for the day and its settled figure."""
    net = day.net(row.member_id, row.asset)
    if row.asset == CASH:
        net_line = f"net,,,{'pay' if net > 0 else 'receive'},,,{format_fen(-net)}\n"
        return [net_line, f"settled_cash,,,,,,{format_fen(row.settled)}\n"]
    net_line = f"net,{row.asset},,{'deliver' if net > 0 else 'receive'},{-net},,\n"
    return [net_line, f"settled_holding,{row.asset},,,{row.settled},,\n"]

