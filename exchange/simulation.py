"""A seeded, in-process trading session: many members, every order type, days to the close.

Members are registered (covered entities with allocations and voluntary participants, a few
linked pairs), funded by deposits and given holdings as the registry would at the start of
day. They trade in three styles: market makers quote both sides near a drifting fair value,
takers cross the spread with IOC, FOK and market orders, and the rest place day and GTC
orders, amend and cancel them. Some orders are deliberately bad (too large, outside the band,
more than the member can pay for or deliver) so that rejects show in the summary; now and
then the operator halts an instrument or pulls a member's kill switch. The session schedule
moves the trading phases at their times. Everything flows through the engine and its
journal, so the same seed gives the same journal, events and state hash.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from exchange.app import Exchange, events_of
from exchange.clearing.settlement import SettlementReport
from exchange.engine import Engine
from exchange.model import (
    AmendOrder,
    Deposit,
    HaltInstrument,
    KillSwitch,
    MemberKind,
    MemberStatus,
    RegisterMember,
    ResumeInstrument,
    SetMemberStatus,
    SetTradingPhase,
    Withdraw,
    AmendRejected,
    CancelOrder,
    CommandRejected,
    CancelRejected,
    DayClosed,
    MassCancel,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    OrderType,
    Side,
    SubmitOrder,
    TimeInForce,
)
from exchange.model.rejects import RejectReason
from exchange.model.events import HoldingLoaded
from exchange.risk.schedule import SessionSchedule
from registry_adapter.demo import allocate_holdings
from registry_adapter.memory import InMemoryRegistry

NS = 1_000_000_000
CASH_PER_MEMBER_FEN = 500_000_000  # 5 million CNY


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
    rejects: Counter = field(default_factory=Counter)
    instruments: dict[str, InstrumentSummary] = field(default_factory=dict)
    settlements: list[SettlementReport] = field(default_factory=list)
    # Start-of-day loads that changed the exchange's view after the first day: a day that
    # settled and reconciled leaves none.
    holding_changes_at_open: int = 0
    state_hash: str = ""


class Simulation:
    """Runs on an :class:`Exchange` (with its clearing side each day ends with a settlement)
    or on a bare engine, whose start-of-day holdings then come from an in-memory registry."""

    def __init__(
        self, exchange: Exchange | Engine, seed: int, members: int, start_day: date, schedule: SessionSchedule | None = None
    ) -> None:
        self.exchange = exchange if isinstance(exchange, Exchange) else Exchange(exchange)
        engine = self.engine = self.exchange.engine
        self.random = random.Random(seed)
        self.schedule = schedule or SessionSchedule()
        self.members = [f"M{n:04d}" for n in range(1, members + 1)]
        self.styles = {m: self.random.choice(("maker", "taker", "trader", "trader")) for m in self.members}
        self.symbols = sorted(engine.core.books)
        self.fair_fen = {s: engine.core.books[s].prev_close_fen for s in self.symbols}
        self.day = start_day if self.schedule.is_trading_day(start_day) else self.schedule.next_trading_day(start_day)
        self.summary = SimulationSummary(instruments={s: InstrumentSummary() for s in self.symbols})
        self.clock = engine.clock if isinstance(engine.clock, SimulatedClock) else None
        self.registry = self.exchange.registry or InMemoryRegistry()
        self.first_seq = engine.last_seq
        self.undo: list[tuple[int, object]] = []  # (command number, command): operator reversals

    def run(self, days: int, commands_per_day: int, settle: bool = True) -> SimulationSummary:
        """Trade ``days`` days; with a clearing side and ``settle``, settle each after its close."""
        for day_number in range(days):
            self._run_day(commands_per_day, first=day_number == 0)
            if settle and self.exchange.clearing is not None:
                self.summary.settlements.append(self.exchange.settle(self.day.isoformat()))
            self.day = self.schedule.next_trading_day(self.day)
        self.exchange.flush()
        self.summary.state_hash = self.engine.core.state_hash()
        return self.summary

    def _run_day(self, commands: int, first: bool) -> None:
        phases = self.schedule.transitions(self.day)
        sessions = [(start, end) for (start, _), (end, _) in zip(phases[::2], phases[1::2])]
        self._set_time(phases[0][0] - 3_600 * NS)  # an hour before the open
        if first:
            self._admit_members()
        self._tally(events_of(self.exchange.start_day(self.day.isoformat(), self.registry)))
        trading_ns = self.schedule.trading_seconds() * NS
        for n in range(commands):
            self._advance(sessions, phases, n * trading_ns // max(commands, 1))
            self._execute(self._next_command())
        self._advance(sessions, phases, trading_ns)
        self._tally(self.exchange.end_day().events)

    def _advance(self, sessions: list[tuple[int, int]], pending: list, elapsed_ns: int) -> None:
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
        rnd = self.random
        holdings = {
            member: {symbol: rnd.randrange(20_000, 200_000, 100) for symbol in self.symbols} for member in self.members
        }
        if isinstance(self.registry, InMemoryRegistry):
            for member, units in holdings.items():
                self.registry.open_account(member)
                for symbol, qty in units.items():
                    self.registry.issue(member, symbol, qty)
        else:
            allocate_holdings(self.registry, holdings)
        for number, member in enumerate(self.members):
            covered = rnd.random() < 0.6
            kind = MemberKind.COVERED if covered else MemberKind.VOLUNTARY
            allocation = rnd.randrange(50_000, 500_000, 1_000) if covered else 0
            group = f"G{number // 2}" if number < 10 else ""  # the first ten come in linked pairs
            self._execute(RegisterMember(member, kind, allocation, group))
            self._execute(Deposit(member, CASH_PER_MEMBER_FEN))

    def _execute(self, command) -> None:
        if isinstance(command, SubmitOrder):
            self.summary.orders += 1
        self._tally(self.exchange.execute(command).events)

    def _tally(self, events: list) -> None:
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
        if event.open_fen is not None:
            if item.open_fen is None:
                item.open_fen = event.open_fen
            item.high_fen = max(item.high_fen or 0, event.high_fen or 0)
            item.low_fen = min(item.low_fen or event.low_fen, event.low_fen)  # type: ignore[type-var]
        item.close_fen = event.close_fen
        item.volume_t += event.volume_t
        item.turnover_fen += event.turnover_fen
        item.trades += event.trade_count
        self.fair_fen[event.instrument] = event.close_fen

    # -- member behaviour ------------------------------------------------------------------

    def _next_command(self):
        if self.undo and self.undo[0][0] <= self.summary.commands:
            return self.undo.pop(0)[1]
        rnd = self.random
        member = rnd.choice(self.members)
        symbol = rnd.choice(self.symbols)
        book = self.engine.core.books[symbol]
        fair = self._drift(symbol, book)
        roll = rnd.random()
        if roll < 0.002:
            return self._operator_action(member, symbol)
        if roll < 0.14:
            return self._cancel_or_amend(member, symbol, book)
        if roll < 0.145:
            return MassCancel(member, symbol if rnd.random() < 0.5 else None)
        if roll < 0.16:
            return self._bad_order(member, symbol, book)
        style = self.styles[member]
        if style == "taker" or (style == "trader" and rnd.random() < 0.2):
            return self._aggressive_order(member, symbol, book)
        return self._passive_order(member, symbol, fair, book, style)

    def _operator_action(self, member: str, symbol: str):
        """Now and then: a short halt, a kill switch restored later, money in or out."""
        rnd = self.random
        choice = rnd.randrange(4)
        later = self.summary.commands + rnd.randrange(100, 500)
        if choice == 0 and not self.engine.core.risk.halted.get(symbol):
            self.undo.append((later, ResumeInstrument(symbol)))
            self.undo.sort(key=lambda item: item[0])
            return HaltInstrument(symbol)
        if choice == 1 and not self.engine.core.risk.accounts[member].killed:
            self.undo.append((later, SetMemberStatus(member, MemberStatus.ACTIVE)))
            self.undo.sort(key=lambda item: item[0])
            return KillSwitch(member)
        if choice == 2:
            return Deposit(member, rnd.randrange(1, 1_000_000) * 100)
        return Withdraw(member, rnd.randrange(1, 2_000_000) * 10_000)

    def _drift(self, symbol: str, book) -> int:
        fair = self.fair_fen[symbol] + self.random.randint(-2, 2)
        fair = min(max(fair, book.lower_fen + 50), book.upper_fen - 50)
        self.fair_fen[symbol] = fair
        return fair

    def _passive_order(self, member: str, symbol: str, fair: int, book, style: str) -> SubmitOrder:
        rnd = self.random
        side = rnd.choice((Side.BUY, Side.SELL))
        offset = rnd.randint(1, 30) if style == "maker" else rnd.randint(-5, 60)
        price = fair - offset if side is Side.BUY else fair + offset
        price = min(max(price, book.lower_fen), book.upper_fen)
        tif = TimeInForce.GTC if rnd.random() < 0.1 else TimeInForce.DAY
        qty = rnd.choice((10, 50, 100, 200, 500, 1000, 5000))
        return SubmitOrder(member, symbol, side, qty, price, OrderType.LIMIT, tif, f"c{self.summary.commands}")

    def _aggressive_order(self, member: str, symbol: str, book) -> SubmitOrder:
        rnd = self.random
        side = rnd.choice((Side.BUY, Side.SELL))
        qty = rnd.choice((10, 100, 300, 1000, 3000))
        client_id = f"c{self.summary.commands}"
        kind = rnd.random()
        if kind < 0.3:
            tif = TimeInForce.FOK if rnd.random() < 0.3 else TimeInForce.IOC
            return SubmitOrder(member, symbol, side, qty, None, OrderType.MARKET, tif, client_id)
        best = book.best_ask() if side is Side.BUY else book.best_bid()
        price = best[0] if best else self.fair_fen[symbol]
        tif = TimeInForce.FOK if kind < 0.45 else TimeInForce.IOC if kind < 0.8 else TimeInForce.DAY
        return SubmitOrder(member, symbol, side, qty, price, OrderType.LIMIT, tif, client_id)

    def _cancel_or_amend(self, member: str, symbol: str, book):
        rnd = self.random
        orders = book.open_orders(member)
        if not orders or rnd.random() < 0.05:  # sometimes an id that is not theirs or not open
            return CancelOrder(member, symbol, rnd.randint(1, max(self.engine.last_seq, 1)))
        order = rnd.choice(orders)
        if rnd.random() < 0.75:
            return CancelOrder(member, symbol, order.order_id)
        if rnd.random() < 0.5 and order.qty_t > 1:
            return AmendOrder(member, symbol, order.order_id, order.qty_t // 2, order.price_fen)
        price = min(max(order.price_fen + rnd.randint(-10, 10), book.lower_fen), book.upper_fen)
        return AmendOrder(member, symbol, order.order_id, order.qty_t + 10, price)

    def _bad_order(self, member: str, symbol: str, book) -> SubmitOrder:
        rnd = self.random
        side = rnd.choice((Side.BUY, Side.SELL))
        choice = rnd.randrange(4)
        if choice == 0:  # too big for open bidding: a block trade
            return SubmitOrder(member, symbol, side, 150_000, self.fair_fen[symbol])
        if choice == 1:
            return SubmitOrder(member, symbol, side, 100, book.upper_fen + rnd.randint(1, 100))
        if choice == 2:  # more than the member can pay for or deliver
            return SubmitOrder(member, symbol, side, 99_000, self.fair_fen[symbol])
        return SubmitOrder(member, symbol, side, 0, self.fair_fen[symbol])


def describe_rejects(rejects: Counter) -> list[tuple[str, int]]:
    return [(f"{int(r)} {RejectReason(r).name}", n) for r, n in sorted(rejects.items())]
