"""Micro-benchmarks of single book operations (pytest-benchmark).

Not part of the test suite (pytest's testpaths is ``tests``); run them explicitly:

    pytest bench/test_micro_book.py
    pytest bench/test_micro_book.py --benchmark-compare    # against a saved run (--benchmark-autosave)

Each round times one call on a book of 4,000 resting orders (the "normal" prefill); the setup
of a round (building the command, resting the order to cancel or to trade with) is untimed.
One call is ~1 us, so the timer's own cost (~50 ns) is part of every figure.
"""

from __future__ import annotations

import itertools

import pytest

from bench.workload import MID_FEN, SYMBOL, member_ids, new_book, prefill_commands
from exchange.model.commands import CancelOrder, SubmitOrder
from exchange.model.enums import OrderType, Side, TimeInForce

ROUNDS = 20_000
MEMBERS = member_ids("M", 500)


@pytest.fixture
def book():
    book = new_book()
    for order_id, cmd in prefill_commands("normal", 4_000, seed=20250602):
        book.submit(order_id, cmd)
    return book


@pytest.fixture
def ids():
    return itertools.count(1_000_000)


def test_submit_passive(benchmark, book, ids):
    """A limit buy that rests a few ticks below the best bid (never crosses)."""
    prices = itertools.cycle(range(MID_FEN - 40, MID_FEN - 10))
    members = itertools.cycle(MEMBERS)

    def setup():
        return (next(ids), SubmitOrder(next(members), SYMBOL, Side.BUY, 10, next(prices))), {}

    benchmark.pedantic(book.submit, setup=setup, rounds=ROUNDS)


def test_cancel(benchmark, book, ids):
    """Cancel of a resting order (rested, untimed, just before)."""
    members = itertools.cycle(MEMBERS)

    def setup():
        order_id, member = next(ids), next(members)
        book.submit(order_id, SubmitOrder(member, SYMBOL, Side.BUY, 10, MID_FEN - 30 - order_id % 20))
        return (CancelOrder(member, SYMBOL, order_id),), {}

    benchmark.pedantic(book.cancel, setup=setup, rounds=ROUNDS)


def test_submit_marketable(benchmark, book, ids):
    """An IOC buy that fills one resting sell completely (the sell rests, untimed, just before,
    alone at the mid: the prefill's bids are below it and its asks above, so the buy meets only
    that sell)."""
    price = MID_FEN

    def setup():
        maker_id, taker_id = next(ids), next(ids)
        book.submit(maker_id, SubmitOrder(MEMBERS[maker_id % 250], SYMBOL, Side.SELL, 10, price))
        taker = SubmitOrder(MEMBERS[250 + taker_id % 250], SYMBOL, Side.BUY, 10, price, OrderType.LIMIT, TimeInForce.IOC)
        return (taker_id, taker), {}

    benchmark.pedantic(book.submit, setup=setup, rounds=ROUNDS)
