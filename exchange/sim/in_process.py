"""A seeded, in-process trading session: many members, every order type, days to the close.

The members of :mod:`exchange.sim.members` are registered (covered entities with allocations
and voluntary participants, a few linked pairs), funded by deposits and given holdings as the
registry would at the start of day. Each command the session picks a member at random and
asks :func:`exchange.sim.strategies.member_turn` what it does (the member sees the engine's
books); a turn that falls to the operator becomes a halt, a kill switch, a deposit or a
withdrawal (:func:`~exchange.sim.strategies.operator_action`), halts and kill switches undone
later. The session schedule moves the trading phases at their times. Everything flows
through the engine and its journal, so the same seed gives the same journal, events and state
hash (pinned by ``tests/test_golden_run.py``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from exchange.app import Exchange, events_of
from exchange.book.order_book import OrderBook, RestingOrder
from exchange.clearing.settlement import SettlementReport
from exchange.engine import Engine
from exchange.model import (
    AmendOrder,
    AmendRejected,
    CancelOrder,
    CancelRejected,
    Command,
    CommandRejected,
    DayClosed,
    Deposit,
    Event,
    HaltInstrument,
    KillSwitch,
    MassCancel,
    MemberStatus,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    RegisterMember,
    ResumeInstrument,
    SetMemberStatus,
    SetTradingPhase,
    Side,
    SubmitOrder,
    TradingPhase,
    Withdraw,
)
from exchange.model.events import HoldingLoaded
from exchange.model.rejects import RejectReason
from exchange.progress import Progress
from exchange.risk.schedule import SessionSchedule
from exchange.sim import strategies
from exchange.sim.members import CASH_PER_MEMBER_FEN, member_ids, plan_members
from exchange.sim.strategies import (
    AmendIntent,
    CancelIntent,
    MassCancelIntent,
    Member,
    MemberIntent,
    NewOrderIntent,
    OperatorAction,
    OperatorTurn,
)
from registry_adapter.demo import allocate_holdings
from registry_adapter.memory import InMemoryRegistry
from registry_adapter.sql import SqlRegistry

NS = 1_000_000_000


class SimulatedClock:
    """A clock the simulation sets; the engine reads it like the wall clock."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


@dataclass
class InstrumentSummary:
    open_fen: int | None = None
    high_fen: int | None = None
    low_fen: int | None = None
    close_fen: int = 0
    volume_t: int = 0
    turnover_fen: int = 0
    trades: int = 0


@dataclass
class SimulationSummary:
    commands: int = 0
    orders: int = 0
    accepted: int = 0
    trades: int = 0
    volume_t: int = 0
    rejects: Counter[RejectReason] = field(default_factory=Counter)
    instruments: dict[str, InstrumentSummary] = field(default_factory=dict)
    settlements: list[SettlementReport] = field(default_factory=list)
    # Start-of-day loads that changed the exchange's view after the first day: a day that
    # settled and reconciled leaves none.
    holding_changes_at_open: int = 0
    state_hash: str = ""


class EngineView:
    """What a member sees in process: the engine's own books (so it is always up to date)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.books: dict[str, OrderBook] = engine.core.books

    def band(self, symbol: str) -> tuple[int, int]:
        book = self.books[symbol]
        return book.lower_fen, book.upper_fen

    def best_price(self, symbol: str, side: Side) -> int | None:
        book = self.books[symbol]
        best = book.best_ask() if side is Side.BUY else book.best_bid()
        return best[0] if best else None

    def market_price(self, symbol: str) -> int | None:
        """None: the session's fair value walks on its own and is reset to each close."""
        return None

    def open_orders(self, member_id: str, symbol: str) -> list[RestingOrder]:
        return self.books[symbol].open_orders(member_id)

    def unknown_order_id(self, rnd: random.Random) -> int:
        return rnd.randint(1, max(self.engine.last_seq, 1))


class Simulation:
    """Runs on an :class:`Exchange` (with its clearing side each day ends with a settlement)
    or on a bare engine, whose start-of-day holdings then come from an in-memory registry."""

    def __init__(
        self, exchange: Exchange | Engine, seed: int, members: int, start_day: date, schedule: SessionSchedule | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.exchange = exchange if isinstance(exchange, Exchange) else Exchange(exchange)
        engine = self.engine = self.exchange.engine
        self.random = random.Random(seed)
        self.schedule = schedule or SessionSchedule()
        self.symbols = sorted(engine.core.books)
        self.plans = plan_members(self.random, member_ids(members), self.symbols)
        self.members = [plan.member_id for plan in self.plans]
        # One fair value per instrument that every member shares (and each close resets).
        self.fair_fen = {s: engine.core.books[s].prev_close_fen for s in self.symbols}
        self.cast = {p.member_id: Member(p.member_id, p.style, self.symbols, self.fair_fen) for p in self.plans}
        self.view = EngineView(engine)
        self.day = start_day if self.schedule.is_trading_day(start_day) else self.schedule.next_trading_day(start_day)
        self.summary = SimulationSummary(instruments={s: InstrumentSummary() for s in self.symbols})
        self.clock = engine.clock if isinstance(engine.clock, SimulatedClock) else None
        self.registry = self.exchange.registry or InMemoryRegistry()
        self.first_seq = engine.last_seq
        self.undo: list[tuple[int, Command]] = []  # (command number, command): operator reversals
        self.progress = progress or Progress(0, enabled=False)  # counts commands; shows only when enabled

    @property
    def styles(self) -> dict[str, str]:
        return {plan.member_id: plan.style for plan in self.plans}

    def run(self, days: int, commands_per_day: int, settle: bool = True) -> SimulationSummary:
        """Trade ``days`` days; with a clearing side and ``settle``, settle each after its close."""
        for day_number in range(days):
            self._run_day(commands_per_day, first=day_number == 0)
            if settle and self.exchange.clearing is not None:
                self.progress.stage = f"{self.day} settlement"
                self.progress.tick()
                self.summary.settlements.append(self.exchange.settle(self.day.isoformat()))
            self.day = self.schedule.next_trading_day(self.day)
        self.exchange.flush()
        self.summary.state_hash = self.engine.core.state_hash()
        return self.summary

    def _run_day(self, commands: int, first: bool) -> None:
        phases = self.schedule.transitions(self.day)
        sessions = [(start, end) for (start, _), (end, _) in zip(phases[::2], phases[1::2], strict=True)]
        self._set_time(phases[0][0] - 3_600 * NS)  # an hour before the open
        if first:
            self._admit_members()
        self._tally(events_of(self.exchange.start_day(self.day.isoformat(), self.registry)))
        trading_ns = self.schedule.trading_seconds() * NS
        self.progress.stage = f"{self.day} trading"
        for n in range(commands):
            self._advance(sessions, phases, n * trading_ns // max(commands, 1))
            self._execute(self._next_command())
            self.progress.done += 1
            self.progress.tick()
        self._advance(sessions, phases, trading_ns)
        self._tally(self.exchange.end_day().events)

    def _advance(self, sessions: list[tuple[int, int]], pending: list[tuple[int, TradingPhase]], elapsed_ns: int) -> None:
        """Move the clock ``elapsed_ns`` into the day's trading time, sending each phase change
        that falls due on the way (and taking it off ``pending``), as the shell's scheduler
        does."""
        now = sessions[-1][1]
        for start, end in sessions:
            if elapsed_ns < end - start:
                now = start + elapsed_ns
                break
            elapsed_ns -= end - start
        while pending and pending[0][0] <= now:
            at, phase = pending.pop(0)
            self._set_time(at)
            self._execute(SetTradingPhase(phase))
        self._set_time(now)

    def _set_time(self, ts_ns: int) -> None:
        if self.clock is not None:
            self.clock.now_ns = ts_ns

    def _admit_members(self) -> None:
        self._give_holdings({plan.member_id: plan.holdings_t for plan in self.plans})
        for plan in self.plans:
            self._execute(RegisterMember(plan.member_id, plan.kind, plan.annual_allocation_t, plan.linked_group))
            self._execute(Deposit(plan.member_id, CASH_PER_MEMBER_FEN))

    def _give_holdings(self, holdings: dict[str, dict[str, int]]) -> None:
        """The registry's part: the start of day then loads these."""
        registry = self.registry
        if not isinstance(registry, InMemoryRegistry):
            assert isinstance(registry, SqlRegistry), "the simulation sets up holdings in the in-memory or the SQL registry"
            allocate_holdings(registry, holdings)
            return
        for member, units in holdings.items():
            registry.open_account(member)
            for symbol, qty in units.items():
                registry.issue(member, symbol, qty)

    def _execute(self, command: Command) -> None:
        if isinstance(command, SubmitOrder):
            self.summary.orders += 1
        self._tally(self.exchange.execute(command).events)

    def _tally(self, events: list[Event]) -> None:
        summary = self.summary
        summary.commands = self.engine.last_seq - self.first_seq
        for event in events:
            if isinstance(event, OrderFilled):
                summary.trades += 1
                summary.volume_t += event.qty_t
            elif isinstance(event, OrderAccepted):
                summary.accepted += 1
            elif isinstance(event, (OrderRejected, CancelRejected, AmendRejected, CommandRejected)):
                summary.rejects[event.reason] += 1
            elif isinstance(event, DayClosed):
                self._record_close(event)
            elif isinstance(event, HoldingLoaded) and event.change_t and summary.settlements:
                summary.holding_changes_at_open += 1

    def _record_close(self, event: DayClosed) -> None:
        item = self.summary.instruments[event.instrument]
        open_fen, high_fen, low_fen = event.open_fen, event.high_fen, event.low_fen
        if open_fen is not None and high_fen is not None and low_fen is not None:  # the day traded: all three set
            if item.open_fen is None:
                item.open_fen = open_fen
            item.high_fen = max(item.high_fen or 0, high_fen)
            item.low_fen = min(item.low_fen or low_fen, low_fen)
        item.close_fen = event.close_fen
        item.volume_t += event.volume_t
        item.turnover_fen += event.turnover_fen
        item.trades += event.trade_count
        self.fair_fen[event.instrument] = event.close_fen

    # -- the members' and the operator's turns ---------------------------------------------

    def _next_command(self) -> Command:
        if self.undo and self.undo[0][0] <= self.summary.commands:
            return self.undo.pop(0)[1]
        member = self.cast[self.random.choice(self.members)]
        return self._command_for(member.member_id, strategies.member_turn(self.random, member, self.view))

    def _command_for(self, member_id: str, intent: MemberIntent) -> Command:
        """The engine command for a member's intent (an operator turn: the operator's)."""
        match intent:
            case OperatorTurn(member_id=member, symbol=symbol):
                return self._operator_command(member, symbol)
            case NewOrderIntent():
                client_order_id = "" if intent.deliberately_bad else f"c{self.summary.commands}"
                return SubmitOrder(member_id, intent.symbol, intent.side, intent.qty_t, intent.price_fen,
                                   intent.order_type, intent.tif, client_order_id)
            case CancelIntent():
                if intent.order is None:
                    return CancelOrder(member_id, intent.symbol, intent.unknown_order_id)
                return CancelOrder(member_id, intent.symbol, intent.order.order_id)
            case AmendIntent():
                return AmendOrder(member_id, intent.symbol, intent.order.order_id, intent.qty_t, intent.price_fen)
            case MassCancelIntent():
                return MassCancel(member_id, intent.symbol)
        raise AssertionError(f"an intent the session cannot execute: {intent!r}")

    def _operator_command(self, member_id: str, symbol: str) -> Command:
        core = self.engine.core
        decision = strategies.operator_action(
            self.random, member_id, symbol, halted=bool(core.risk.halted.get(symbol)), killed=core.risk.accounts[member_id].killed
        )
        if decision.undo is not None:
            self.undo.append((self.summary.commands + decision.undo_after, operator_command(decision.undo)))
            self.undo.sort(key=lambda item: item[0])
        return operator_command(decision.action)


def operator_command(action: OperatorAction) -> Command:
    """The engine command an operator action is."""
    match action.kind:
        case "halt":
            return HaltInstrument(action.symbol)
        case "resume":
            return ResumeInstrument(action.symbol)
        case "kill":
            return KillSwitch(action.member_id)
        case "restore":
            return SetMemberStatus(action.member_id, MemberStatus.ACTIVE)
        case "deposit":
            return Deposit(action.member_id, action.amount_fen)
        case "withdraw":
            return Withdraw(action.member_id, action.amount_fen)
    raise AssertionError(f"an unknown operator action: {action!r}")


def describe_rejects(rejects: Counter[RejectReason]) -> list[tuple[str, int]]:
    return [(f"{int(r)} {r.name}", n) for r, n in sorted(rejects.items())]

