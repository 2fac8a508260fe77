"""Public market data: a subscriber that takes a snapshot and applies the updates after it
holds exactly the server's top-N book after every command; sequence numbers without gaps;
trades without member ids; status messages only on a change."""

from __future__ import annotations

import random

import pytest

from exchange.gateway.member.market_data import MarketData
from exchange.gateway.member.wire import BookSnapshot, BookUpdate, InstrumentStatus, Trade, decode_outbound, encode, parse_price
from exchange.model import (
    CancelOrder,
    CloseMarket,
    EndDay,
    HaltInstrument,
    OrderFilled,
    ReopenMarket,
    ResumeInstrument,
    SelfTradePolicy,
    SetTradingPhase,
    TradingPhase,
)
from test_orders import BUY, CCER, CEA, DAY, FOK, IOC, SELL, SYMBOLS, Exchange, order, random_commands


class Subscriber:
    """A client's copy of one instrument's book, built the way docs/protocol.md says."""

    def __init__(self, snapshot: BookSnapshot) -> None:
        self.instrument = snapshot.instrument
        self.seq = snapshot.seq
        self.bids = {price: (qty, orders) for price, qty, orders in snapshot.bids}
        self.asks = {price: (qty, orders) for price, qty, orders in snapshot.asks}

    def on_update(self, update: BookUpdate) -> None:
        if update.seq <= self.seq:
            return  # already in the snapshot
        assert update.prev_seq == self.seq, "gap: re-subscribe"
        self.seq = update.seq
        for side, levels in ((self.bids, update.bids), (self.asks, update.asks)):
            for price, qty, orders in levels:
                if qty == 0:
                    del side[price]
                else:
                    side[price] = (qty, orders)

    def book(self) -> tuple[list, list]:
        def levels(side: dict, best_is_high: bool) -> list:
            ordered = sorted(side, key=parse_price, reverse=best_is_high)
            return [(parse_price(price), *side[price]) for price in ordered]

        return levels(self.bids, True), levels(self.asks, False)


def over_the_wire(message):
    return decode_outbound(encode(message))


def run_with_subscribers(seed: int, levels: int, steps: int, stp=SelfTradePolicy.CANCEL_NEWEST):
    """Yield after every command: the exchange and the subscribers that joined so far."""
    rnd = random.Random(seed)
    ex = Exchange(stp, levels)
    subscribers: list[Subscriber] = []
    for _ in range(steps):
        if rnd.random() < 0.02:  # a new subscriber joins between two commands
            subscribers.append(Subscriber(over_the_wire(ex.market.snapshot(rnd.choice(SYMBOLS)))))
        for command in random_commands(rnd, ex):
            ex(command)
            for instrument, message in ex.public:
                message = over_the_wire(message)
                if isinstance(message, BookUpdate):
                    for subscriber in subscribers:
                        if subscriber.instrument == instrument:
                            subscriber.on_update(message)
            yield ex, subscribers


@pytest.mark.parametrize("seed", [11, 12])
def test_snapshot_plus_updates_is_the_full_book_at_every_step(seed: int) -> None:
    joined = 0
    for ex, subscribers in run_with_subscribers(seed, levels=10_000, steps=1_500):
        for subscriber in subscribers:
            assert subscriber.book() == ex.core.books[subscriber.instrument].depth()
        joined = len(subscribers)
    assert joined >= 10


@pytest.mark.parametrize("levels", [1, 3])
def test_snapshot_plus_updates_is_the_top_n_book_at_every_step(levels: int) -> None:
    deeper = 0
    for ex, subscribers in run_with_subscribers(5, levels=levels, steps=1_500):
        for subscriber in subscribers:
            bids, asks = ex.core.books[subscriber.instrument].depth()
            assert subscriber.book() == (bids[:levels], asks[:levels])
            deeper += len(bids) > levels
    assert deeper > 100  # the book was deeper than the view, often


def test_sequence_numbers_have_no_gaps_and_count_book_updates_only() -> None:
    last = {symbol: 0 for symbol in SYMBOLS}
    updates = 0
    for ex, _ in run_with_subscribers(21, levels=5, steps=1_000, stp=SelfTradePolicy.CANCEL_BOTH):
        for instrument, message in ex.public:
            if isinstance(message, BookUpdate):
                assert message.instrument == instrument
                assert (message.prev_seq, message.seq) == (last[instrument], last[instrument] + 1)
                assert message.bids or message.asks
                last[instrument] = message.seq
                updates += 1
        for symbol in SYMBOLS:
            assert ex.market.snapshot(symbol).seq == last[symbol]
    assert updates > 300


def test_trades_are_public_and_follow_the_fills() -> None:
    ex = Exchange()
    ex(order("alice", SELL, 10, 1_001))
    ex(order("bob", SELL, 10, 1_002))
    events = ex(order("carol", BUY, 15, 1_002, IOC))
    fills = [e for e in events if isinstance(e, OrderFilled)]
    trades = [m for _, m in ex.public if isinstance(m, Trade)]
    assert [(t.trade_id, t.price, t.qty, t.aggressor) for t in trades] == [
        (f.trade_id, p, f.qty_t, "buy") for f, p in zip(fills, ("10.01", "10.02"), strict=True)
    ]
    encoded = b"".join(encode(t) for t in trades)
    assert b"alice" not in encoded and b"bob" not in encoded and b"carol" not in encoded
    kinds = [type(m).__name__ for _, m in ex.public]
    assert kinds == ["Trade", "Trade", "BookUpdate"]  # trades first, then the netted book


def test_an_order_that_never_rests_shows_no_transient_level() -> None:
    ex = Exchange()
    ex(order("alice", SELL, 10, 1_001))
    ex(order("bob", BUY, 4, 1_005, IOC))
    [update] = [m for _, m in ex.public if isinstance(m, BookUpdate)]
    assert (update.bids, update.asks) == ([], [("10.01", 6, 1)])
    ex(order("bob", BUY, 50, 1_005, FOK))  # cannot fill: accepted and cancelled, book unchanged
    assert ex.public == []
    ex(order("bob", BUY, 6, 1_001, DAY))  # fills the level exactly: it goes, nothing rests
    [update] = [m for _, m in ex.public if isinstance(m, BookUpdate)]
    assert (update.bids, update.asks) == ([], [("10.01", 0, 0)])


def test_a_change_below_the_top_n_sends_nothing_and_a_level_moving_up_arrives_whole() -> None:
    ex = Exchange(levels=2)
    for price in (999, 998, 997):
        ex(order("alice", BUY, 10, price))
    assert [m for _, m in ex.public] == []  # the third level is below the top 2
    ex(order("bob", BUY, 5, 997))
    assert ex.public == []
    first = ex.tracker.open_orders("alice")[0]
    ex(CancelOrder("alice", CEA, first.order_id))  # 9.99 goes; 9.97 moves into the view
    [(_, update)] = ex.public
    assert update.bids == [("9.99", 0, 0), ("9.97", 15, 2)]
    ex(order("carol", BUY, 1, 1_000))  # a better bid pushes 9.97 out of the view
    [(_, update)] = ex.public
    assert update.bids == [("10.00", 1, 1), ("9.97", 0, 0)]
    assert ex.market.snapshot(CEA).bids == [("10.00", 1, 1), ("9.98", 10, 1)]


BANDS = {CEA: ("10.00", "9.00", "11.00"), CCER: ("5.00", "4.50", "5.50")}  # reference price and band of the day


def test_instrument_status_on_halt_phase_and_closure_only_when_it_changes() -> None:
    ex = Exchange()
    assert ex.market.status(CEA) == InstrumentStatus(CEA, False, "continuous", False, *BANDS[CEA])
    ex(HaltInstrument(CEA))
    assert ex.public == [(CEA, InstrumentStatus(CEA, True, "continuous", False, *BANDS[CEA]))]
    ex(HaltInstrument(CEA))  # refused by the core: no event, no message
    assert ex.public == []
    ex(ResumeInstrument(CEA))
    ex(CloseMarket())
    assert ex.public == [(symbol, InstrumentStatus(symbol, False, "continuous", True, *BANDS[symbol])) for symbol in sorted(SYMBOLS)]
    ex(ReopenMarket())
    ex(SetTradingPhase(TradingPhase.BREAK))
    assert [m.phase for _, m in ex.public] == ["break", "break"]
    ex(SetTradingPhase(TradingPhase.POST_CLOSE))
    ex(EndDay())  # already post-close: nothing new to say
    assert [m for _, m in ex.public if isinstance(m, InstrumentStatus)] == []
    assert ex.market.status(CCER) == InstrumentStatus(CCER, False, "post_close", False, *BANDS[CCER])


def test_load_status_after_a_recovery() -> None:
    market = MarketData(SYMBOLS)
    market.load_status(TradingPhase.CONTINUOUS, [CCER], True)
    assert market.status(CCER) == InstrumentStatus(CCER, True, "continuous", True)
    assert market.status(CEA) == InstrumentStatus(CEA, False, "continuous", True)
