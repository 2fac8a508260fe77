"""One served trading day, driven by the operator over HTTP.

The server stamps its own wall clock; nothing here waits for 09:30. The day's phases come, in
order, from the calendar's session schedule: start of day (pre-open: the holdings load from
the registry), then for each session continuous trading followed by the break (or, after the
last, the post-close), then end of day and settlement. The day's new orders are spread over
the continuous sessions in proportion to their length and over the members evenly. A
continuous session ends when every member's last order has been answered, so no order is sent
into a phase change; and because a session's commands are executed and answered in the order
they arrived, that answer also covers the member's earlier cancels and amends. Before the
day's trades are read, each member sends an ``order_status`` for an id it never used and
waits for the ``error`` answer, queued behind everything already queued for it: it has then
read every report of the day.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import date

from exchange.gateway.member.wire import PHASE_NAMES
from exchange.model.enums import TradingPhase
from exchange.risk.schedule import SessionSchedule
from exchange.sim.checks import DayResult, ServedRun
from exchange.sim.member_client import SimMember
from exchange.sim.operator import Operator, operator_actions
from exchange.progress import Progress


@dataclass
class DayDriver:
    operator: Operator
    clients: list[SimMember]
    schedule: SessionSchedule
    orders_per_day: int
    symbols: list[str]
    operator_random: random.Random
    progress: Progress
    result: ServedRun

    async def trading_day(self, day: date, first: bool) -> None:
        trading_day = day.isoformat()
        record = DayResult(trading_day)
        self.result.days.append(record)
        await self._start_of_day(record, first)
        transitions = self.schedule.transitions(day)
        quotas = session_quotas(self.orders_per_day, transitions)
        number = 0
        for _, phase in transitions:
            await self.operator.ok("POST", "/market/phase", "admin", {"phase": PHASE_NAMES[phase]})
            if phase == TradingPhase.CONTINUOUS:
                number += 1
                self.progress.stage = f"{trading_day} continuous {number}/{len(quotas)}"
                await self._continuous(quotas[number - 1], number)
            else:
                self.progress.stage = f"{trading_day} {PHASE_NAMES[phase].replace('_', '-')}"
        await self._end_of_day(record)
        await self._settle(record)

    async def _start_of_day(self, record: DayResult, first: bool) -> None:
        self.progress.stage = f"{record.trading_day} start of day"
        opened = await self.operator.ok("POST", "/clearing/start-of-day", "clearing", {"trading_day": record.trading_day})
        bands = {e["instrument"]: (e["prev_close_fen"], e["lower_fen"], e["upper_fen"])
                 for e in opened["events"] if e["event"] == "DayStarted"}
        if not first:
            record.holding_changes = sum(1 for e in opened["events"] if e["event"] == "HoldingLoaded" and e["change_t"])
        for client in self.clients:
            client.begin_day(record.trading_day, bands)

    async def _continuous(self, orders: int, number: int) -> None:
        """The members' shares of the session's orders (the remainder rotating by session),
        with the operator acting alongside until the last member is done."""
        count = len(self.clients)
        shares = [orders // count + (1 if (i - number) % count < orders % count else 0) for i in range(count)]
        stop = asyncio.Event()
        member_ids = [client.member_id for client in self.clients]
        actions = asyncio.get_running_loop().create_task(operator_actions(
            self.operator, self.operator_random, self.symbols, member_ids, self.progress, self.result, stop))
        started = time.perf_counter()
        try:
            await asyncio.gather(*(client.trade(share) for client, share in zip(self.clients, shares, strict=True)))
        finally:
            self.result.trading_s += time.perf_counter() - started
            stop.set()
            await actions

    async def _end_of_day(self, record: DayResult) -> None:
        self.progress.stage = f"{record.trading_day} end of day"
        closed = await self.operator.ok("POST", "/clearing/end-of-day", "clearing")
        record.closes = [e for e in closed["events"] if e["event"] == "DayClosed"]
        await asyncio.gather(*(client.sync() for client in self.clients))
        record.trades = await self.operator.ok("GET", f"/regulator/trades/{record.trading_day}", "regulator")

    async def _settle(self, record: DayResult) -> None:
        self.progress.stage = f"{record.trading_day} settlement"
        status, answer = await self.operator.call("POST", "/clearing/settlements", "clearing", {"trading_day": record.trading_day})
        if status == 200:
            record.settlement = answer
        else:
            record.settlement_error = f"{status}: {answer.get('error', answer)}"


def session_quotas(orders_per_day: int, transitions: list[tuple[int, TradingPhase]]) -> list[int]:
    """The day's orders over its continuous sessions, in proportion to their length."""
    lengths = [end - start for (start, _), (end, _) in zip(transitions[::2], transitions[1::2], strict=True)]
    total = sum(lengths) or 1
    quotas = [orders_per_day * length // total for length in lengths]
    if quotas:
        quotas[-1] += orders_per_day - sum(quotas)
    return quotas
