"""The order tracker: execution reports per event, client order ids per trading day, and a
differential test of the tracker and the L2 depth against the real engine's books.

``Exchange`` below drives a real ``ExchangeCore`` and feeds every command's stream record
(``Applied``) to an ``OrderTracker`` and a ``MarketData``, as the engine does for the gateway;
``test_market_data`` reuses it. Both are snapshotted projections: a restored copy continues
exactly as the original would.
"""

from __future__ import annotations

import datetime as dt
import random

import msgspec
import pytest

from exchange.engine import ExchangeCore
from exchange.gateway.member.market_data import MarketData
from exchange.gateway.member.orders import OrderTracker, unknown_client_order_reject
from exchange.gateway.member.wire import (
    AmendRequest,
    CancelReject,
    CancelRequest,
    ExecutionReport,
    OrderStatusRequest,
    decode_outbound,
    encode,
)
from exchange.model.events import OrderRejected
from exchange.model.stream import Applied
from exchange.model import (
    AmendOrder,
    CancelOrder,
    Deposit,
    EndDay,
    HaltInstrument,
    Instrument,
    InstrumentKind,
    KillSwitch,
    LoadHolding,
    MassCancel,
    MemberKind,
    MemberStatus,
    OrderType,
    RegisterMember,
    RejectReason,
    ResumeInstrument,
    SelfTradePolicy,
    SetInstrumentLimits,
    SetMemberStatus,
    SetTradingPhase,
    Side,
    StartDay,
    SubmitOrder,
    TimeInForce,
    TradingPhase,
)
from exchange.risk import RiskPolicy
from exchange.risk.limits import RiskLimits

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
DAY, GTC, IOC, FOK = TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
CEA, CCER = "CEA-2025", "CCER"
SYMBOLS = [CCER, CEA]
INSTRUMENTS = [
    Instrument(CEA, InstrumentKind.ALLOWANCE, 1_000, vintage=2025),  # band 900..1,100 fen
    Instrument(CCER, InstrumentKind.CCER, 500),  # band 450..550 fen
]
REFERENCE = {CEA: 1_000, CCER: 500}
MEMBERS = ["alice", "bob", "carol", "dave", "erin"]
LINKED = {"dave": "G", "erin": "G"}  # linked accounts: one owner for self-trade prevention
POLICY = RiskPolicy(
    position_limit_t=10_000_000,
    limits=RiskLimits(orders_per_second=10**9, order_burst=10**9, max_open_orders=10**6),
)
FIRST_DAY = dt.date(2026, 3, 2)


class Exchange:
    """A core with funded members, and the gateway's consumers of its events."""

    def __init__(self, stp: SelfTradePolicy = SelfTradePolicy.CANCEL_NEWEST, levels: int = 10) -> None:
        self.core = ExchangeCore(INSTRUMENTS, stp, POLICY)
        self.tracker = OrderTracker()
        self.market = MarketData(SYMBOLS, levels)
        self.tracker.open_outbox()
        self.market.open_outbox()
        self.records: list[Applied] = []
        self.ts = 1_772_000_000_000_000_000
        self.day = FIRST_DAY
        self.private: list = []  # the last command's (member, message) pairs
        self.public: list = []  # the last command's (instrument, message) pairs
        for member in MEMBERS:
            self(RegisterMember(member, MemberKind.VOLUNTARY, 0, LINKED.get(member, "")))
            self(Deposit(member, 10**12))
        self(StartDay(self.day.isoformat()))
        for member in MEMBERS:
            for symbol in SYMBOLS:
                self(LoadHolding(member, symbol, 1_000_000))
        self(SetTradingPhase(TradingPhase.CONTINUOUS))

    def __call__(self, command) -> list:
        self.ts += 1_000_000
        seq = self.core.last_seq + 1
        events = self.core.apply(seq, self.ts, command)
        applied = Applied(seq, self.ts, self.core.trading_day, command, events)
        self.records.append(applied)
        self.tracker.apply(applied)
        self.market.apply(applied)
        self.private = [(member, message) for _, member, message in self.tracker.drain()]
        self.public = [(instrument, message) for _, instrument, message in self.market.drain()]
        return events

    def next_day(self) -> None:
        self(EndDay())
        self.day += dt.timedelta(days=1)
        self(StartDay(self.day.isoformat()))
        self(SetTradingPhase(TradingPhase.CONTINUOUS))

    def reports(self, member: str | None = None) -> list:
        return [m for who, m in self.private if member is None or who == member]


def order(member, side, qty, price=None, tif=DAY, cid="", symbol=CEA, kind=LIMIT) -> SubmitOrder:
    return SubmitOrder(member, symbol, side, qty, price, kind, tif, cid)


# -- the differential test -------------------------------------------------------------------


def random_commands(rnd: random.Random, ex: Exchange) -> list:
    """The next step of a random session: usually one command, or the end of a day and the
    start of the next."""
    if rnd.random() < 0.01:
        ex.day += dt.timedelta(days=1)
        return [EndDay(), StartDay(ex.day.isoformat()), SetTradingPhase(TradingPhase.CONTINUOUS)]
    return [undo_control(rnd, ex) or random_command(rnd, ex)]


def random_command(rnd: random.Random, ex: Exchange):
    """One command: orders of every kind, cancels, amends, controls."""
    member = rnd.choice(MEMBERS)
    symbol = rnd.choice(SYMBOLS)
    roll = rnd.random()
    if roll < 0.50:
        return random_limit(rnd, member, symbol, ex)
    if roll < 0.58:
        return order(member, rnd.choice((BUY, SELL)), rnd.randint(1, 60), None, rnd.choice((IOC, FOK)),
                     f"m{ex.core.last_seq}", symbol, MARKET)
    if roll < 0.73:
        return random_cancel(rnd, member, symbol, ex)
    if roll < 0.88:
        return random_amend(rnd, member, symbol, ex)
    if roll < 0.90:
        return MassCancel(member, rnd.choice((symbol, None)))
    if roll < 0.93:
        return random_bad_order(rnd, member, symbol, ex)
    if roll < 0.95:
        return random_control(rnd, member, symbol, ex)
    return random_limit(rnd, member, symbol, ex)


def random_limit(rnd: random.Random, member: str, symbol: str, ex: Exchange) -> SubmitOrder:
    side = rnd.choice((BUY, SELL))
    price = REFERENCE[symbol] + rnd.randint(-12, 12)
    tif = rnd.choices((DAY, GTC, IOC, FOK), weights=(6, 2, 1, 1))[0]
    return order(member, side, rnd.randint(1, 60), price, tif, f"c{ex.core.last_seq}", symbol)


def own_open_order(rnd: random.Random, member: str, symbol: str, ex: Exchange):
    orders = ex.core.books[symbol].open_orders(member)
    return rnd.choice(orders) if orders else None


def random_cancel(rnd: random.Random, member: str, symbol: str, ex: Exchange) -> CancelOrder:
    resting = own_open_order(rnd, member, symbol, ex)
    if resting is None or rnd.random() < 0.1:  # an id that is not theirs, not open, or unknown
        return CancelOrder(member, symbol, rnd.randint(1, ex.core.last_seq + 5))
    return CancelOrder(member, symbol, resting.order_id)


def random_amend(rnd: random.Random, member: str, symbol: str, ex: Exchange) -> AmendOrder:
    resting = own_open_order(rnd, member, symbol, ex)
    if resting is None:
        return AmendOrder(member, symbol, rnd.randint(1, ex.core.last_seq + 5), 10, REFERENCE[symbol])
    choice = rnd.randrange(4)
    if choice == 0 and resting.qty_t > 1:  # down at the same price: keeps priority
        return AmendOrder(member, symbol, resting.order_id, rnd.randint(1, resting.qty_t - 1), resting.price_fen)
    if choice == 1:  # up: loses priority
        return AmendOrder(member, symbol, resting.order_id, resting.qty_t + rnd.randint(1, 30), resting.price_fen)
    if choice == 2:  # no change: rejected
        return AmendOrder(member, symbol, resting.order_id, resting.qty_t, resting.price_fen)
    price = REFERENCE[symbol] + rnd.randint(-12, 12)  # a new price, which may cross
    return AmendOrder(member, symbol, resting.order_id, rnd.randint(1, 60), price)


def random_bad_order(rnd: random.Random, member: str, symbol: str, ex: Exchange) -> SubmitOrder:
    cid = f"b{ex.core.last_seq}"
    choice = rnd.randrange(3)
    if choice == 0:
        return order(member, BUY, 200_000, REFERENCE[symbol], DAY, cid, symbol)  # above the maximum
    if choice == 1:
        return order(member, SELL, 5, REFERENCE[symbol] * 2, DAY, cid, symbol)  # outside the band
    return order(member, BUY, 5, None, DAY, cid, symbol, MARKET)  # a market order may not rest


def random_control(rnd: random.Random, member: str, symbol: str, ex: Exchange):
    choice = rnd.randrange(3)
    if choice == 0:  # a narrower band cancels the orders it leaves outside
        return SetInstrumentLimits(symbol, band_bps=rnd.choice((50, 100)))
    if choice == 1:
        return KillSwitch(member)
    return HaltInstrument(symbol)


def undo_control(rnd: random.Random, ex: Exchange):
    """Now and then, lift a kill switch or a halt (the random session's operator)."""
    killed = [m for m in MEMBERS if ex.core.risk.accounts[m].killed]
    halted = [s for s in SYMBOLS if ex.core.risk.halted.get(s)]
    narrowed = [s for s in SYMBOLS if ex.core.books[s].band_bps != 1_000]
    if not (killed or halted or narrowed) or rnd.random() > 0.1:
        return None
    if killed:
        return SetMemberStatus(killed[0], MemberStatus.ACTIVE)
    if halted:
        return ResumeInstrument(halted[0])
    return SetInstrumentLimits(narrowed[0], band_bps=1_000)


def assert_tracker_matches_book(ex: Exchange) -> None:
    """The tracker's depth, open orders and leaves are the book's, after every command."""
    for symbol in SYMBOLS:
        assert ex.market.depth.levels(symbol) == ex.core.books[symbol].depth(), symbol
    for member in MEMBERS:
        in_book = {
            o.order_id: (o.price_fen, o.qty_t)
            for symbol in SYMBOLS for o in ex.core.books[symbol].open_orders(member)
        }
        tracked = {o.order_id: (o.price_fen, o.leaves_t) for o in ex.tracker.open_orders(member)}
        assert tracked == in_book, member
    last_reports = {
        (member, m.order_id): m for member, m in ex.private if isinstance(m, ExecutionReport) and m.order_id is not None
    }
    for (member, order_id), message in last_reports.items():  # each order's state after the command
        book_order = ex.core.books[message.instrument].order(member, order_id)
        tracked_order = ex.tracker.order(member, order_id)
        assert tracked_order is not None and tracked_order.member_id == member
        if message.ord_status in ("new", "partially_filled"):
            assert book_order is not None and book_order.qty_t == message.leaves_qty
            assert message.leaves_qty == message.qty - message.cum_qty
        else:
            assert book_order is None and message.leaves_qty == 0


@pytest.mark.parametrize("stp", list(SelfTradePolicy))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tracker_and_depth_match_the_engine_after_every_command(seed: int, stp: SelfTradePolicy) -> None:
    rnd = random.Random(seed)
    ex = Exchange(stp)
    seen: dict[str, int] = {}
    for _ in range(1_500):
        for command in random_commands(rnd, ex):
            ex(command)
            assert_tracker_matches_book(ex)
            for _, message in ex.private:
                key = f"{type(message).__name__}:{getattr(message, 'exec_type', '')}"
                seen[key] = seen.get(key, 0) + 1
    # not vacuous: every kind of report was produced, many times
    for kind in ("new", "trade", "canceled", "replaced", "rejected", "expired"):
        assert seen.get(f"ExecutionReport:{kind}", 0) > 5, (kind, seen)
    assert seen.get("CancelReject:", 0) > 5, seen


# -- execution reports, event by event -------------------------------------------------------


def only(messages: list, kind=ExecutionReport):
    found = [m for m in messages if isinstance(m, kind)]
    assert len(found) == 1, messages
    return found[0]


def test_new_order_report() -> None:
    ex = Exchange()
    ex(order("alice", BUY, 10, 995, GTC, "a1"))
    [(member, report)] = ex.private
    assert member == "alice"
    assert report == ExecutionReport(
        "new", "new", report.order_id, "a1", CEA, "buy", "limit", "gtc", "9.95", 10, 0, 10,
    )


def test_partial_then_full_fill_reports_to_each_side_its_own_order() -> None:
    ex = Exchange()
    ex(order("alice", SELL, 10, 1_001, DAY, "s1"))
    sell_id = ex.reports("alice")[0].order_id
    ex(order("bob", BUY, 4, 1_005, IOC, "b1"))
    alice = only(ex.reports("alice"))
    assert (alice.exec_type, alice.ord_status, alice.order_id, alice.client_order_id) == ("trade", "partially_filled", sell_id, "s1")
    assert (alice.qty, alice.cum_qty, alice.leaves_qty, alice.last_px, alice.last_qty) == (10, 4, 6, "10.01", 4)
    bob_fill = [m for m in ex.reports("bob") if m.exec_type == "trade"][0]
    assert (bob_fill.ord_status, bob_fill.client_order_id, bob_fill.price, bob_fill.last_px) == ("filled", "b1", "10.05", "10.01")
    assert bob_fill.trade_id == alice.trade_id is not None
    assert all(m.client_order_id == "b1" for m in ex.reports("bob"))  # never the other side's ids
    ex(order("carol", BUY, 6, 1_001, DAY, "c1"))
    alice = only(ex.reports("alice"))
    assert (alice.ord_status, alice.cum_qty, alice.leaves_qty, alice.last_qty) == ("filled", 10, 0, 6)
    assert ex.tracker.open_orders("alice") == []
    sold = ex.tracker.order("alice", sell_id)
    assert sold is not None and sold.status == "filled"


def test_ioc_remainder_is_cancelled_with_its_reason() -> None:
    ex = Exchange()
    ex(order("alice", SELL, 3, 1_000))
    ex(order("bob", BUY, 5, 1_000, IOC, "b1"))
    kinds = [(m.exec_type, m.ord_status, m.cum_qty, m.leaves_qty) for m in ex.reports("bob")]
    assert kinds == [("new", "new", 0, 5), ("trade", "partially_filled", 3, 2), ("canceled", "canceled", 3, 0)]
    assert ex.reports("bob")[-1].cancel_reason == "ioc_remainder"


def test_fok_that_cannot_fill_and_market_order_reports() -> None:
    ex = Exchange()
    ex(order("alice", SELL, 3, 1_000))
    ex(order("bob", BUY, 5, 1_000, FOK, "b1"))
    assert [m.cancel_reason for m in ex.reports("bob")] == [None, "fok_unfillable"]
    ex(order("bob", BUY, 2, None, IOC, "b2", kind=MARKET))
    reports = ex.reports("bob")
    assert [m.exec_type for m in reports] == ["new", "trade"]
    assert reports[0].price is None and reports[0].order_type == "market"
    assert reports[1].last_px == "10.00"


def test_cancel_report() -> None:
    ex = Exchange()
    ex(order("alice", BUY, 10, 990, DAY, "a1"))
    order_id = ex.reports()[0].order_id
    ex(CancelOrder("alice", CEA, order_id))
    report = only(ex.reports("alice"))
    assert (report.exec_type, report.ord_status, report.leaves_qty, report.cancel_reason) == ("canceled", "canceled", 0, "member")


def test_amend_reports_keep_qty_equal_to_cum_plus_leaves() -> None:
    ex = Exchange()
    ex(order("alice", SELL, 10, 1_005, DAY, "a1"))
    order_id = ex.reports()[0].order_id
    ex(order("bob", BUY, 4, 1_005))
    ex(AmendOrder("alice", CEA, order_id, 3, 1_005))  # down: keeps priority
    report = only(ex.reports("alice"))
    assert (report.exec_type, report.ord_status, report.qty, report.cum_qty, report.leaves_qty) == ("replaced", "partially_filled", 7, 4, 3)
    ex(order("carol", BUY, 2, 1_000))
    ex(AmendOrder("alice", CEA, order_id, 5, 1_000))  # a new price that crosses carol's bid
    reports = ex.reports("alice")
    assert [m.exec_type for m in reports] == ["replaced", "trade"]
    assert (reports[0].price, reports[0].qty, reports[0].leaves_qty) == ("10.00", 9, 5)
    assert (reports[1].cum_qty, reports[1].leaves_qty, reports[1].qty) == (6, 3, 9)


def test_expiry_at_the_end_of_the_day_and_gtc_carry_over() -> None:
    ex = Exchange()
    ex(order("alice", BUY, 10, 990, DAY, "day1"))
    ex(order("alice", BUY, 10, 991, GTC, "gtc1"))
    gtc_id = ex.reports()[0].order_id
    ex(EndDay())
    report = only(ex.reports("alice"))
    assert (report.exec_type, report.ord_status, report.client_order_id, report.leaves_qty) == ("expired", "expired", "day1", 0)
    expired = ex.tracker.lookup_client_order("alice", "day1")
    assert expired is not None and expired.status == "expired"  # until the next day
    ex.day += dt.timedelta(days=1)
    ex(StartDay(ex.day.isoformat()))
    assert ex.tracker.lookup_client_order("alice", "day1") is None  # a new day: ids start afresh
    gtc = ex.tracker.lookup_client_order("alice", "gtc1")
    assert gtc is not None and gtc.order_id == gtc_id  # still open: still taken
    assert [o.order_id for o in ex.tracker.open_orders("alice")] == [gtc_id]


def test_reject_uses_up_the_client_order_id_and_reports_the_order() -> None:
    ex = Exchange()
    ex(order("alice", BUY, 10, 2_000, DAY, "a1"))  # outside the band
    report = only(ex.reports("alice"))
    assert (report.exec_type, report.ord_status, report.order_id) == ("rejected", "rejected", None)
    assert (report.reject_code, report.reject_reason) == (106, RejectReason.PRICE_OUTSIDE_BAND.text)
    assert (report.side, report.price, report.qty, report.tif) == ("buy", "20.00", 10, "day")
    rejected = ex.tracker.lookup_client_order("alice", "a1")
    assert rejected is not None and rejected.status == "rejected"
    status = ex.tracker.status("alice", OrderStatusRequest(client_order_id="a1"))
    assert status is not None
    assert (status.exec_type, status.ord_status, status.reject_code) == ("order_status", "rejected", 106)
    assert ex.tracker.resolve("alice", CancelRequest(CEA, client_order_id="a1")) is None


def fed(tracker: OrderTracker, applied: Applied) -> list:
    tracker.open_outbox()
    tracker.apply(applied)
    return [(member, message) for _, member, message in tracker.drain()]


def test_reject_is_reported_from_the_event_alone() -> None:
    ex = Exchange()
    command = order("alice", SELL, 0, 1_000, GTC, "z")
    events = ex.core.apply(ex.core.last_seq + 1, ex.ts + 1, command)
    applied = Applied(ex.core.last_seq, ex.ts + 1, ex.core.trading_day, MassCancel("someone-else"), events)
    [(member, report)] = fed(OrderTracker(), applied)  # the record's command is not the order: unused
    assert (member, report.client_order_id, report.side, report.tif, report.price, report.qty, report.reject_code) == \
        ("alice", "z", "sell", "gtc", "10.00", 0, 101)


def test_a_bare_reject_falls_back_to_the_command_then_to_nulls() -> None:
    bare = OrderRejected("alice", CEA, "z", RejectReason.QTY_NOT_POSITIVE)
    command = order("alice", BUY, 7, 1_000, DAY, "z")
    [(_, report)] = fed(OrderTracker(), Applied(1, 1, "", command, [bare]))
    assert (report.side, report.order_type, report.tif, report.price, report.qty) == ("buy", "limit", "day", "10.00", 7)
    other = order("alice", BUY, 7, 1_000, DAY, "another-id")
    [(_, report)] = fed(OrderTracker(), Applied(1, 1, "", other, [bare]))
    assert (report.client_order_id, report.side, report.price, report.qty, report.reject_code) == ("z", None, None, 0, 101)


def test_cancel_reject_names_the_client_order_id_only_of_the_members_own_order() -> None:
    ex = Exchange()
    ex(order("alice", BUY, 10, 990, DAY, "secret-alice-id"))
    alice_order = ex.reports()[0].order_id
    ex(CancelOrder("bob", CEA, alice_order))
    [(member, reject)] = ex.private
    assert member == "bob" and isinstance(reject, CancelReject)
    assert (reject.response_to, reject.order_id, reject.client_order_id, reject.reject_code) == ("cancel", alice_order, None, 109)
    ex(CancelOrder("alice", CEA, alice_order))
    ex(CancelOrder("alice", CEA, alice_order))  # too late: already cancelled
    reject = only(ex.reports("alice"), CancelReject)
    assert reject.client_order_id == "secret-alice-id"
    ex(AmendOrder("alice", CEA, alice_order, 5, 990))
    reject = only(ex.reports("alice"), CancelReject)
    assert (reject.response_to, reject.reject_code) == ("amend", 109)
    assert ex.tracker.order("bob", alice_order) is None  # another member's order is invisible


def test_duplicate_client_order_id_lookup_and_status() -> None:
    ex = Exchange()
    ex(order("alice", BUY, 10, 990, DAY, "dup"))
    first = ex.reports()[0]
    found = ex.tracker.lookup_client_order("alice", "dup")
    assert found is not None and found.order_id == first.order_id and found.is_open
    assert ex.tracker.lookup_client_order("bob", "dup") is None  # per member
    ex(order("alice", BUY, 20, 991, DAY, "dup"))  # had it reached the engine anyway: the first keeps the id
    again = ex.tracker.lookup_client_order("alice", "dup")
    assert again is not None and again.order_id == first.order_id
    status = ex.tracker.status("alice", OrderStatusRequest(client_order_id="dup"))
    assert status is not None
    assert (status.exec_type, status.order_id, status.qty) == ("order_status", first.order_id, 10)
    assert ex.tracker.status("bob", OrderStatusRequest(order_id=first.order_id)) is None
    assert ex.tracker.resolve("alice", CancelRequest(CEA, client_order_id="dup")) == first.order_id
    assert ex.tracker.resolve("alice", CancelRequest(CEA, order_id=12345)) == 12345


def test_unknown_client_order_reject() -> None:
    reject = unknown_client_order_reject(AmendRequest(CEA, 5, "10.00", client_order_id="nope"))
    assert (reject.response_to, reject.order_id, reject.client_order_id, reject.reject_code) == ("amend", None, "nope", 109)


def test_kill_switch_and_band_cancels_carry_their_reasons() -> None:
    ex = Exchange()
    ex(order("alice", BUY, 10, 990))
    ex(order("alice", BUY, 10, 960))
    ex(SetInstrumentLimits(CEA, band_bps=200))  # 980..1,020: the 9.60 bid is outside
    assert [m.cancel_reason for m in ex.reports("alice")] == ["price_outside_band"]
    ex(KillSwitch("alice"))
    assert [m.cancel_reason for m in ex.reports("alice")] == ["kill_switch"]


def test_reports_encode_and_decode() -> None:
    ex = Exchange()
    ex(order("alice", SELL, 10, 1_001, DAY, "s1"))
    ex(order("bob", BUY, 4, 1_005, IOC, "b1"))
    for _, message in ex.private:
        assert decode_outbound(encode(message)) == message
        assert decode_outbound(encode(message, 7)) == msgspec.structs.replace(message, session_seq=7)


# -- snapshots -------------------------------------------------------------------------------


def test_a_restored_tracker_and_feed_continue_exactly_as_the_originals() -> None:
    """Snapshot the tracker and the feed now and then during a random session; a fresh pair
    restored from it and fed the rest of the records reports the same messages and ends in
    the same state, byte for byte."""
    rnd = random.Random(7)
    ex = Exchange()
    cuts: list[tuple[int, bytes, bytes]] = []  # (records so far, tracker bytes, feed bytes)
    messages: list[tuple[list, list]] = []  # per record after the constructor's: (private, public)
    setup = len(ex.records)
    for step in range(1_200):
        for command in random_commands(rnd, ex):
            ex(command)
            messages.append((ex.private, ex.public))
        if step % 300 == 150:
            cuts.append((len(ex.records), ex.tracker.snapshot_state(), ex.market.snapshot_state()))
    assert len(cuts) == 4
    for count, tracker_bytes, feed_bytes in cuts:
        tracker, market = OrderTracker(), MarketData(SYMBOLS)
        seq = ex.records[count - 1].seq
        tracker.restore_state(tracker_bytes, seq)
        market.restore_state(feed_bytes, seq)
        assert (tracker.last_seq, tracker.restored_seq, market.last_seq) == (seq, seq, seq)
        assert (tracker.snapshot_state(), market.snapshot_state()) == (tracker_bytes, feed_bytes)  # deterministic
        tracker.open_outbox()
        market.open_outbox()
        for applied, (private, public) in zip(ex.records[count:], messages[count - setup:], strict=True):
            tracker.apply(applied)
            market.apply(applied)
            assert [(m, msg) for _, m, msg in tracker.drain()] == private
            assert [(i, msg) for _, i, msg in market.drain()] == public
        assert tracker.snapshot_state() == ex.tracker.snapshot_state()
        assert market.snapshot_state() == ex.market.snapshot_state()
        for member in MEMBERS:
            assert tracker.open_orders(member) == ex.tracker.open_orders(member)
        assert tracker.records_applied == len(ex.records) - count


def test_equal_states_give_equal_bytes_and_replayed_records_build_no_messages() -> None:
    first, second = Exchange(), Exchange()
    for ex in (first, second):
        ex(order("alice", BUY, 10, 990, GTC, "a1"))
        ex(order("bob", SELL, 4, 990, DAY, "b1"))
        ex(order("carol", BUY, 0, 990, DAY, "c1"))  # rejected: claims its id
    assert first.tracker.snapshot_state() == second.tracker.snapshot_state()
    assert first.market.snapshot_state() == second.market.snapshot_state()
    quiet = OrderTracker()  # no outbox opened: the engine's replay at start-up
    for applied in first.records:
        quiet.apply(applied)
    assert quiet.drain() == [] and quiet.snapshot_state() == first.tracker.snapshot_state()
    restored = OrderTracker()
    restored.restore_state(first.tracker.snapshot_state(), first.records[-1].seq)
    rejected = restored.lookup_client_order("carol", "c1")
    assert rejected is not None and rejected.status == "rejected"
    kept = restored.lookup_client_order("alice", "a1")
    assert kept is not None and kept.order_id is not None
    assert kept is restored.order("alice", kept.order_id)
