"""A seeded, in-process trading session: many members, every order type, days to the close.

Members are drawn in three styles: market makers quote both sides near a drifting fair
value, takers cross the spread with IOC, FOK and market orders, and the rest place day and
GTC orders, amend and cancel them. A few orders are deliberately bad (too large, outside the
band, off the lot) so that rejects show in the summary. Everything flows through the engine
and its journal, so the same seed gives the same journal, events and state hash.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from exchange.engine import Engine
from exchange.model import (
    AmendOrder,
    AmendRejected,
    CancelOrder,
    CancelRejected,
    DayClosed,
    EndDay,
    MassCancel,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    OrderType,
    Side,
    StartDay,
    SubmitOrder,
    TimeInForce,
)
from exchange.model.rejects import RejectReason

SESSION_SECONDS = 4 * 3600  # 09:30-11:30 and 13:00-15:00
NS = 1_000_000_000


class SimulatedClock:
    """A clock the simulation moves: trading time only, in equal steps across the sessions."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns

    def set_session_time(self, day: date, elapsed_ns: int) -> None:
        """Place the clock ``elapsed_ns`` into the day's continuous trading (China time)."""
        midnight_utc_ns = (day - date(1970, 1, 1)).days * 86_400 * NS - 8 * 3600 * NS
        morning_ns = 2 * 3600 * NS
        if elapsed_ns < morning_ns:
            self.now_ns = midnight_utc_ns + (9 * 3600 + 1800) * NS + elapsed_ns
        else:
            self.now_ns = midnight_utc_ns + 13 * 3600 * NS + (elapsed_ns - morning_ns)


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
    state_hash: str = ""


class Simulation:
    def __init__(self, engine: Engine, seed: int, members: int, start_day: date) -> None:
        self.engine = engine
        self.random = random.Random(seed)
        self.members = [f"M{n:04d}" for n in range(1, members + 1)]
        self.styles = {m: self.random.choice(("maker", "taker", "trader", "trader")) for m in self.members}
        self.symbols = sorted(engine.core.books)
        self.fair_fen = {s: engine.core.books[s].prev_close_fen for s in self.symbols}
        self.day = start_day
        self.summary = SimulationSummary(instruments={s: InstrumentSummary() for s in self.symbols})
        self.clock = engine.clock if isinstance(engine.clock, SimulatedClock) else None

    def run(self, days: int, commands_per_day: int) -> SimulationSummary:
        for _ in range(days):
            self._run_day(commands_per_day)
            self.day = _next_weekday(self.day)
        self.engine.flush()
        self.summary.state_hash = self.engine.core.state_hash()
        return self.summary

    def _run_day(self, commands: int) -> None:
        self._execute(StartDay(self.day.isoformat()))
        step_ns = SESSION_SECONDS * NS // max(commands, 1)
        for n in range(commands):
            if self.clock is not None:
                self.clock.set_session_time(self.day, n * step_ns)
            self._execute(self._next_command())
        self._execute(EndDay())

    def _execute(self, command) -> None:
        summary = self.summary
        summary.commands += 1
        if isinstance(command, SubmitOrder):
            summary.orders += 1
        for event in self.engine.execute(command):
            if isinstance(event, OrderFilled):
                summary.trades += 1
                summary.volume_t += event.qty_t
            elif isinstance(event, OrderAccepted):
                summary.accepted += 1
            elif isinstance(event, (OrderRejected, CancelRejected, AmendRejected)):
                summary.rejects[event.reason] += 1
            elif isinstance(event, DayClosed):
                self._record_close(event)

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
        rnd = self.random
        member = rnd.choice(self.members)
        symbol = rnd.choice(self.symbols)
        book = self.engine.core.books[symbol]
        fair = self._drift(symbol, book)
        roll = rnd.random()
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
        choice = rnd.randrange(3)
        if choice == 0:  # too big for open bidding: a block trade
            return SubmitOrder(member, symbol, side, 150_000, self.fair_fen[symbol])
        if choice == 1:
            return SubmitOrder(member, symbol, side, 100, book.upper_fen + rnd.randint(1, 100))
        return SubmitOrder(member, symbol, side, 0, self.fair_fen[symbol])


def _next_weekday(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def describe_rejects(rejects: Counter) -> list[tuple[str, int]]:
    return [(f"{int(r)} {RejectReason(r).name}", n) for r, n in sorted(rejects.items())]
