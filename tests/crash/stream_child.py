"""A child process for the crash tests: an exchange taking deposits, withdrawals and crossing
orders in flight, flushing after every few commands as the gateway's group commit does.

``python stream_child.py DATA_DIR SEED KILL_AT_STORE_COMMIT``: it recovers the exchange from
``DATA_DIR`` (registering and opening the day on the first run), then executes commands drawn
from ``SEED`` forever, printing ``flushed SEQ`` after each flush. With
``KILL_AT_STORE_COMMIT`` = N > 0 it kills itself with SIGKILL right after the clearing stores'
N-th commit, while the next commands sit in the journal's buffer, not yet durable; otherwise
the parent kills it at a random moment.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

from exchange.app import Exchange
from exchange.clearing.trades import TradeStore
from exchange.config import Config
from exchange.model import CancelOrder, Command, Deposit, MemberKind, RegisterMember, Side, SubmitOrder, Withdraw
from exchange.model.enums import TradingPhase
from exchange.model.commands import SetTradingPhase
from registry_adapter.demo import allocate_holdings
from registry_adapter.sql import SqlRegistry

MEMBERS = [f"M{n}" for n in range(6)]
SYMBOL = "CEA-2025"
DAY = "2026-11-23"


def kill_after_store_commits(count: int) -> None:
    """SIGKILL this process right after the trade store's ``count``-th commit returns."""
    original = TradeStore.flush
    commits = [0]

    def flush(self: TradeStore) -> None:
        before = self._stored_seq
        original(self)
        if self._stored_seq != before:
            commits[0] += 1
            if commits[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)

    TradeStore.flush = flush  # type: ignore[method-assign]


def first_day(exchange: Exchange) -> None:
    assert isinstance(exchange.registry, SqlRegistry)
    allocate_holdings(exchange.registry, {member: {SYMBOL: 1_000_000} for member in MEMBERS})
    for member in MEMBERS:
        exchange.execute(RegisterMember(member, MemberKind.VOLUNTARY))
        exchange.execute(Deposit(member, 10_000_000_000))
    exchange.start_day(DAY)
    exchange.execute(SetTradingPhase(TradingPhase.CONTINUOUS))
    exchange.flush()


def next_command(rng: random.Random, exchange: Exchange) -> Command:
    member = rng.choice(MEMBERS)
    roll = rng.random()
    if roll < 0.15:
        return Deposit(member, rng.randrange(1, 100_000))
    if roll < 0.2:
        return Withdraw(member, rng.randrange(1, 1_000))
    if roll < 0.3:
        return CancelOrder(member, SYMBOL, rng.randrange(1, exchange.engine.last_seq + 1))
    side = rng.choice((Side.BUY, Side.SELL))
    return SubmitOrder(member, SYMBOL, side, rng.randrange(1, 50), rng.randrange(5_700, 5_900))


def main() -> None:
    data_dir, seed, kill_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if kill_at:
        kill_after_store_commits(kill_at)
    exchange = Exchange.open(Config(), data_dir, time.time_ns)
    if exchange.engine.last_seq == 0:
        first_day(exchange)
    rng = random.Random(seed * 1_000_003 + exchange.engine.last_seq)
    while True:
        for _ in range(rng.randrange(1, 20)):
            exchange.execute(next_command(rng, exchange))
        exchange.flush()
        print(f"flushed {exchange.engine.last_seq}", flush=True)


if __name__ == "__main__":
    main()
