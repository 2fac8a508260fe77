"""One focused test per risk rule (shared/docs/market-rules.md, "Risk controls"; the
``exchange.risk`` docstrings), driven through ``ExchangeCore.apply`` like the engine drives it.

Numbers are small on purpose: prices around 10.00 CNY (1,000 fen, band 900..1,100), a few
tonnes, and a small ``RiskPolicy`` wherever a limit would otherwise need a million tonnes.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from exchange.engine import Engine, ExchangeCore, MemoryJournal, decode_state, encode_events, encode_state, replay
from exchange.model import (
    AmendOrder,
    CancelOrder,
    CancelReason,
    CloseMarket,
    Command,
    CommandRejected,
    Deposit,
    EndDay,
    FundsWithdrawn,
    HaltInstrument,
    HoldingLoaded,
    Instrument,
    InstrumentKind,
    InstrumentLimitsChanged,
    InstrumentStatusChanged,
    KillSwitch,
    LargeHolderThresholdCrossed,
    LoadHolding,
    MarketStatusChanged,
    MassCancel,
    MemberKind,
    MemberRegistered,
    MemberStatus,
    MemberStatusChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderType,
    RegisterMember,
    RejectReason,
    ReopenMarket,
    ResumeInstrument,
    RiskLimitsChanged,
    SelfTradePolicy,
    SetInstrumentLimits,
    SetMemberStatus,
    SetRiskLimits,
    SetTradingPhase,
    Side,
    StartDay,
    SubmitOrder,
    TimeInForce,
    TradingPhase,
    TradingPhaseChanged,
    Withdraw,
)
from exchange.risk import Holding, RiskPolicy

R = RejectReason
BUY, SELL = Side.BUY, Side.SELL
CEA, CCER = "CEA-2025", "CCER"
INSTRUMENTS = [
    Instrument(CEA, InstrumentKind.ALLOWANCE, 1_000, vintage=2025),  # band 900..1,100
    Instrument(CCER, InstrumentKind.CCER, 500),  # band 450..550
]
MEMBERS = [
    RegisterMember("alice", MemberKind.VOLUNTARY),
    RegisterMember("bob", MemberKind.VOLUNTARY),
    RegisterMember("carol", MemberKind.COVERED, 500),
    RegisterMember("dave", MemberKind.VOLUNTARY, 0, "G"),  # dave and erin are linked accounts
    RegisterMember("erin", MemberKind.VOLUNTARY, 0, "G"),
]
NAMES = [m.member_id for m in MEMBERS]
CASH = 1_000_000  # 10,000.00 CNY each
SECOND = 1_000_000_000
T0 = 1_772_000_000 * SECOND
FIRST_DAY = dt.date(2026, 3, 2)


class Market:
    """An exchange core with members, cash and holdings, and a gap-free sequence."""

    def __init__(
        self,
        policy: RiskPolicy | None = None,
        stp: SelfTradePolicy = SelfTradePolicy.CANCEL_NEWEST,
        cash: int | dict = CASH,
        holdings: int | dict = 100,
        members: list = MEMBERS,
        open_day: bool = True,
    ) -> None:
        self.core = ExchangeCore(INSTRUMENTS, stp, policy)
        self.ts = T0
        self.day = FIRST_DAY - dt.timedelta(days=1)
        self.log: list[tuple[int, int, Command]] = []
        for registration in members:
            assert type(self(registration)[0]) is MemberRegistered
        names = [m.member_id for m in members]
        cash_of = cash if isinstance(cash, dict) else dict.fromkeys(names, cash)
        for name, amount in cash_of.items():
            if amount:
                self(Deposit(name, amount))
        if open_day:
            self.start_day(holdings if isinstance(holdings, dict) else dict.fromkeys(names, holdings))
            self(SetTradingPhase(TradingPhase.CONTINUOUS))

    def __call__(self, command: Command, at: int | None = None) -> list:
        """Apply one command at ``at`` (default: one microsecond after the previous one)."""
        self.ts = at if at is not None else self.ts + 1_000
        seq = self.core.last_seq + 1
        self.log.append((seq, self.ts, command))
        return self.core.apply(seq, self.ts, command)

    @property
    def seq(self) -> int:
        return self.core.last_seq

    def start_day(self, holdings: dict | None = None) -> list:
        self.day += dt.timedelta(days=1)
        events = self(StartDay(self.day.isoformat()))
        for name, qty in (holdings or {}).items():
            if qty:
                for symbol in (CEA, CCER):
                    assert type(self(LoadHolding(name, symbol, qty))[0]) is HoldingLoaded
        return events

    def next_day(self, holdings: dict | None = None) -> None:
        """Close the day and open the next one for continuous trading."""
        self(EndDay())
        self.start_day(holdings)
        self(SetTradingPhase(TradingPhase.CONTINUOUS))

    def order(self, member, side, qty, price=None, symbol=CEA, tif=TimeInForce.DAY, order_type=None) -> list:
        if order_type is None:
            order_type = OrderType.LIMIT if price is not None else OrderType.MARKET
        return self(SubmitOrder(member, symbol, side, qty, price, order_type, tif))

    def buy(self, member, qty, price=None, **kw) -> list:
        return self.order(member, BUY, qty, price, **kw)

    def sell(self, member, qty, price=None, **kw) -> list:
        return self.order(member, SELL, qty, price, **kw)

    def account(self, member):
        return self.core.risk.accounts[member]

    def holding(self, member, symbol=CEA) -> Holding:
        """The member's holding (an empty one, not stored, if it has none: looking changes nothing)."""
        return self.account(member).holdings.get(symbol) or Holding()

    def resting(self, member, symbol=CEA) -> list[tuple]:
        return [(o.order_id, o.side, o.price_fen, o.qty_t) for o in self.core.books[symbol].open_orders(member)]

    def order_holds(self, member) -> list[tuple]:
        """The member's open order holds: (order id, asset, amount, price)."""
        return sorted(
            (order_id, h.asset, h.amount, h.price_fen)
            for order_id, h in self.core.risk.ledger.orders.held.items() if h.account.member_id == member
        )

    def money(self, member) -> tuple:
        """The account's balances and reservations (not its order-rate bucket)."""
        a = self.account(member)
        return (
            a.cash_available_fen, a.cash_reserved_fen, a.cash_pending_fen, a.cash_obligation_fen,
            sorted((s, msgspec.structs.astuple(h)) for s, h in a.holdings.items()),
            list(a.unlocks), self.order_holds(member), a.open_orders, a.pending_buy_t, a.position_t,
        )


def events_of(result) -> list:
    """The events of ``Engine.execute``'s result: the list itself, or an ``Applied`` record's
    events (the engine's event-stream API, issue 9)."""
    return result if isinstance(result, list) else result.events


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def reason(events: list) -> RejectReason | None:
    """The reject reason of a one-event refusal, else None."""
    if len(events) == 1 and hasattr(events[0], "reason") and not isinstance(events[0], OrderCancelled):
        return events[0].reason
    return None


def accepted_id(events: list) -> int:
    assert type(events[0]) is OrderAccepted, events
    return events[0].order_id


# -- funds and holdings ----------------------------------------------------------------------


def test_buy_reserves_price_times_qty_and_cancel_releases_it() -> None:
    m = Market()
    order_id = accepted_id(m.buy("alice", 10, 1_000))
    a = m.account("alice")
    assert (a.cash_available_fen, a.cash_reserved_fen) == (CASH - 10_000, 10_000)
    # the position counts allowances (100 t of CEA held), not certified reductions
    assert (a.pending_buy_t, a.open_orders, a.position_t) == (10, 1, 100 + 10)
    m(CancelOrder("alice", CEA, order_id))
    assert (a.cash_available_fen, a.cash_reserved_fen, a.pending_buy_t, a.open_orders) == (CASH, 0, 0, 0)
    assert a.position_t == 100


def test_sell_reserves_allowances() -> None:
    m = Market()
    order_id = accepted_id(m.sell("alice", 30, 1_050))
    h = m.holding("alice")
    assert (h.available_t, h.reserved_t) == (70, 30)
    assert m.account("alice").position_t == 100  # a resting sell still belongs to the seller
    m(CancelOrder("alice", CEA, order_id))
    assert (h.available_t, h.reserved_t) == (100, 0)


def test_market_buy_reserves_band_upper_times_qty() -> None:
    m = Market(cash={"alice": 11_000 - 1, "bob": 0})
    m.sell("bob", 4, 1_000)  # cheaper liquidity does not lower what a market buy must cover
    events = m.buy("alice", 10, tif=TimeInForce.IOC)
    assert reason(events) == R.INSUFFICIENT_FUNDS  # 1,100 x 10 = 11,000 > 10,999
    m(Deposit("alice", 1))
    events = m.buy("alice", 10, tif=TimeInForce.IOC)
    assert kinds(events) == ["OrderAccepted", "OrderFilled", "OrderCancelled"]
    assert events[0].price_fen == 1_100  # the band's upper limit
    assert events[2].reason == CancelReason.IOC_REMAINDER and events[2].qty_t == 6
    a = m.account("alice")
    # 4 t at 10.00 paid (owed at settlement); the improvement and the remainder came back
    assert (a.cash_available_fen, a.cash_reserved_fen, a.cash_obligation_fen) == (11_000 - 4_000, 0, 4_000)


def test_fill_at_a_better_price_releases_the_improvement() -> None:
    m = Market()
    m.sell("bob", 10, 950)
    events = m.buy("alice", 20, 1_000)  # 10 fill at 950, 10 rest at 1,000
    assert kinds(events) == ["OrderAccepted", "OrderFilled"] and events[1].price_fen == 950
    a = m.account("alice")
    assert a.cash_reserved_fen == 10 * 1_000
    assert a.cash_obligation_fen == 10 * 950
    assert a.cash_available_fen == CASH - 10 * 950 - 10 * 1_000  # 10 x 0.50 improvement released
    # A resting buy hit by a cheaper sell trades at its own price: nothing to release.
    m.sell("carol", 10, 900)
    assert a.cash_reserved_fen == 0
    assert a.cash_obligation_fen == 10 * 950 + 10 * 1_000
    assert a.cash_available_fen == CASH - 10 * 950 - 10 * 1_000


def test_sale_proceeds_are_usable_the_same_day_by_default() -> None:
    m = Market(cash={"alice": CASH, "bob": 0, "carol": CASH})
    m.buy("alice", 10, 1_000)
    m.sell("bob", 10, 1_000)
    bob = m.account("bob")
    assert (bob.cash_available_fen, bob.cash_pending_fen, bob.cash_obligation_fen) == (10_000, 0, -10_000)
    m.sell("carol", 20, 500, symbol=CCER)
    events = m.buy("bob", 20, 500, symbol=CCER)  # paid with what the sale brought in
    assert kinds(events) == ["OrderAccepted", "OrderFilled"]
    assert bob.cash_available_fen == 0


def test_sale_proceeds_pending_until_next_day_when_so_configured() -> None:
    m = Market(RiskPolicy(same_day_proceeds=False), cash={"alice": CASH, "bob": 0})
    m.buy("alice", 10, 1_000)
    m.sell("bob", 10, 1_000)
    bob = m.account("bob")
    assert (bob.cash_available_fen, bob.cash_pending_fen, bob.cash_obligation_fen) == (0, 10_000, -10_000)
    assert reason(m.buy("bob", 1, 1_000)) == R.INSUFFICIENT_FUNDS
    assert reason(m(Withdraw("bob", 1))) == R.INSUFFICIENT_AVAILABLE
    m(EndDay())
    assert bob.cash_pending_fen == 10_000  # not before the next day starts
    m.start_day()
    assert (bob.cash_available_fen, bob.cash_pending_fen, bob.cash_obligation_fen) == (10_000, 0, 0)
    m(SetTradingPhase(TradingPhase.CONTINUOUS))
    assert type(m.buy("bob", 10, 1_000)[0]) is OrderAccepted


def test_t_plus_1_bought_allowances_sell_only_the_next_day() -> None:
    m = Market(holdings={"bob": 100})
    m.sell("bob", 10, 1_000)
    m.buy("alice", 10, 1_000)
    h = m.holding("alice")
    assert (h.available_t, h.locked_t, h.obligation_t) == (0, 10, -10)
    assert reason(m.sell("alice", 10, 1_000)) == R.ALLOWANCES_NOT_YET_SELLABLE
    assert reason(m.sell("alice", 1, tif=TimeInForce.IOC)) == R.ALLOWANCES_NOT_YET_SELLABLE
    assert reason(m.sell("alice", 11, 1_000)) == R.INSUFFICIENT_ALLOWANCES  # more than owned at all
    m.next_day()
    assert (h.available_t, h.locked_t, h.obligation_t) == (10, 0, 0)
    assert type(m.sell("alice", 10, 1_000)[0]) is OrderAccepted


def test_holding_days_two_unlock_after_two_trading_days() -> None:
    m = Market(RiskPolicy(holding_days=2), holdings={"bob": 100})
    m.sell("bob", 10, 1_000)
    m.buy("alice", 10, 1_000)
    m.next_day()
    assert reason(m.sell("alice", 10, 1_000)) == R.ALLOWANCES_NOT_YET_SELLABLE
    assert m.holding("alice").locked_t == 10
    # The registry has settled them; loading that figure keeps them locked (no change).
    m(EndDay())
    assert m(LoadHolding("alice", CEA, 10))[0].change_t == 0
    m.start_day()
    m(SetTradingPhase(TradingPhase.CONTINUOUS))
    assert type(m.sell("alice", 10, 1_000)[0]) is OrderAccepted


def test_no_short_sale() -> None:
    m = Market(holdings={"bob": 100})
    assert reason(m.sell("alice", 1, 1_000)) == R.INSUFFICIENT_ALLOWANCES  # holds nothing
    assert reason(m.sell("bob", 101, 1_000)) == R.INSUFFICIENT_ALLOWANCES
    assert reason(m.sell("bob", 101, tif=TimeInForce.IOC)) == R.INSUFFICIENT_ALLOWANCES
    m.sell("bob", 60, 1_050)  # 60 reserved, 40 left
    assert reason(m.sell("bob", 41, 1_050)) == R.INSUFFICIENT_ALLOWANCES
    assert type(m.sell("bob", 40, 1_050)[0]) is OrderAccepted
    assert m.holding("bob").available_t == 0


def test_position_limit_covered_vs_voluntary() -> None:
    members = [RegisterMember("vol", MemberKind.VOLUNTARY), RegisterMember("cov", MemberKind.COVERED, 50)]
    m = Market(RiskPolicy(position_limit_t=100), holdings=0, members=[], open_day=False)
    assert [e.position_limit_t for cmd in members for e in m(cmd)] == [100, 150]
    m(Deposit("vol", CASH))
    m(Deposit("cov", CASH))
    m.start_day()
    m(LoadHolding("vol", CEA, 30))
    m(LoadHolding("cov", CEA, 30))
    m(SetTradingPhase(TradingPhase.CONTINUOUS))
    # voluntary: 1,000,000 t by default, 100 here; holdings count
    assert reason(m.buy("vol", 71, 1_000)) == R.POSITION_LIMIT
    assert type(m.buy("vol", 70, 1_000)[0]) is OrderAccepted
    # pending buys count too; certified reductions are another product and do not
    assert reason(m.buy("vol", 1, 1_000)) == R.POSITION_LIMIT
    assert type(m.buy("vol", 1, 500, symbol=CCER)[0]) is OrderAccepted
    # a sell does not add to the position
    assert type(m.sell("vol", 30, 1_100)[0]) is OrderAccepted
    # covered: allocation + limit = 150
    assert reason(m.buy("cov", 121, 1_000)) == R.POSITION_LIMIT
    assert type(m.buy("cov", 120, 1_000)[0]) is OrderAccepted
    assert reason(m(AmendOrder("cov", CEA, m.seq, 121, 1_000))) == R.POSITION_LIMIT


def test_default_position_limit_is_one_million_tonnes() -> None:
    policy = RiskPolicy()
    assert policy.position_limit(MemberKind.VOLUNTARY, 5_000) == 1_000_000
    assert policy.position_limit(MemberKind.COVERED, 5_000) == 1_005_000
    assert policy.large_holder_threshold(1_000_000) == 800_000


def test_large_holder_reported_once_at_80_percent_and_rearmed_below() -> None:
    m = Market(RiskPolicy(position_limit_t=100), holdings=0)  # threshold 80 t
    assert kinds(m.buy("alice", 79, 1_000)) == ["OrderAccepted"]
    events = m.buy("alice", 1, 1_000)
    assert kinds(events) == ["OrderAccepted", "LargeHolderThresholdCrossed"]
    assert events[1] == LargeHolderThresholdCrossed("alice", 80, 80, 100)
    one = events[0].order_id
    five = accepted_id(m.buy("alice", 5, 1_000))
    events = m.buy("alice", 5, 1_000)
    assert kinds(events) == ["OrderAccepted"]  # still above: not again
    for order_id in (one, five, events[0].order_id):
        m(CancelOrder("alice", CEA, order_id))
    assert m.account("alice").position_t == 79
    events = m.buy("alice", 2, 1_000)  # crosses upwards again: reported again
    assert kinds(events) == ["OrderAccepted", "LargeHolderThresholdCrossed"] and events[1].position_t == 81


def test_large_holder_reported_by_a_holding_load() -> None:
    m = Market(RiskPolicy(position_limit_t=100), holdings=0)
    m(EndDay())
    events = m(LoadHolding("bob", CEA, 90))
    assert kinds(events) == ["HoldingLoaded", "LargeHolderThresholdCrossed"]
    assert events[1] == LargeHolderThresholdCrossed("bob", 90, 80, 100)
    assert kinds(m(LoadHolding("bob", CEA, 95))) == ["HoldingLoaded"]
    assert kinds(m(LoadHolding("bob", CEA, 10))) == ["HoldingLoaded"]  # below: re-armed
    assert kinds(m(LoadHolding("bob", CEA, 85))) == ["HoldingLoaded", "LargeHolderThresholdCrossed"]


# -- order rate, open orders, order value ------------------------------------------------------


def test_throttle_burst_then_refill_with_time() -> None:
    m = Market()
    m(SetRiskLimits("alice", orders_per_second=2, order_burst=3))
    t = m.ts + SECOND
    for _ in range(3):
        assert type(m(SubmitOrder("alice", CEA, BUY, 1, 900), at=t)[0]) is OrderAccepted
    assert reason(m(SubmitOrder("alice", CEA, BUY, 1, 900), at=t)) == R.THROTTLED
    assert type(m(SubmitOrder("bob", CEA, BUY, 1, 900), at=t)[0]) is OrderAccepted  # per member
    # cancels are never throttled
    assert kinds(m(CancelOrder("alice", CEA, m.seq - 2), at=t)) == ["OrderCancelled"]
    # two orders a second: 0.4 s gives 0.8 of a token (refused), 0.5 s a whole one
    assert reason(m(SubmitOrder("alice", CEA, BUY, 1, 900), at=t + 400_000_000)) == R.THROTTLED
    assert type(m(SubmitOrder("alice", CEA, BUY, 1, 900), at=t + 500_000_000)[0]) is OrderAccepted
    assert reason(m(SubmitOrder("alice", CEA, BUY, 1, 900), at=t + 500_000_000)) == R.THROTTLED
    # a long pause refills the bucket to the burst, no more
    later = t + 60 * SECOND
    results = [type(m(SubmitOrder("alice", CEA, BUY, 1, 900), at=later)[0]).__name__ for _ in range(4)]
    assert results == ["OrderAccepted"] * 3 + ["OrderRejected"]
    # amends spend tokens too
    assert reason(m(AmendOrder("alice", CEA, m.seq - 1, 2, 900), at=later)) == R.THROTTLED


def test_max_open_orders() -> None:
    m = Market()
    m(SetRiskLimits("alice", max_open_orders=2))
    first = accepted_id(m.buy("alice", 1, 900))
    accepted_id(m.sell("alice", 1, 1_100))
    assert reason(m.buy("alice", 1, 900)) == R.TOO_MANY_OPEN_ORDERS
    assert reason(m.buy("alice", 1, 900, tif=TimeInForce.IOC)) == R.TOO_MANY_OPEN_ORDERS
    m(CancelOrder("alice", CEA, first))
    assert kinds(m.buy("alice", 1, 900, tif=TimeInForce.IOC)) == ["OrderAccepted", "OrderCancelled"]
    assert m.account("alice").open_orders == 1  # an IOC that did not rest does not count
    assert type(m.buy("alice", 1, 900)[0]) is OrderAccepted
    assert reason(m.buy("alice", 1, 500, symbol=CCER)) == R.TOO_MANY_OPEN_ORDERS  # over all instruments


def test_max_order_value() -> None:
    m = Market()
    m(SetRiskLimits("alice", max_order_value_fen=10_000))
    order_id = accepted_id(m.buy("alice", 10, 1_000))  # exactly the maximum
    assert reason(m.buy("alice", 11, 1_000)) == R.ORDER_VALUE_ABOVE_MAXIMUM
    assert reason(m.sell("alice", 11, 1_000)) == R.ORDER_VALUE_ABOVE_MAXIMUM  # sells too
    assert reason(m.buy("alice", 10, tif=TimeInForce.IOC)) == R.ORDER_VALUE_ABOVE_MAXIMUM  # 1,100 x 10
    assert type(m.buy("alice", 9, tif=TimeInForce.IOC)[0]) is OrderAccepted  # 1,100 x 9
    assert reason(m(AmendOrder("alice", CEA, order_id, 11, 1_000))) == R.ORDER_VALUE_ABOVE_MAXIMUM
    assert reason(m(AmendOrder("alice", CEA, order_id, 10, 1_001))) == R.ORDER_VALUE_ABOVE_MAXIMUM
    assert type(m.buy("bob", 11, 1_000)[0]) is OrderAccepted  # bob keeps the market default


# -- member measures ---------------------------------------------------------------------------


def test_restricted_may_cancel_and_reduce_only() -> None:
    m = Market()
    buy_id = accepted_id(m.buy("alice", 20, 1_000))
    sell_id = accepted_id(m.sell("alice", 20, 1_050))
    assert kinds(m(SetMemberStatus("alice", MemberStatus.RESTRICTED))) == ["MemberStatusChanged"]
    assert len(m.resting("alice")) == 2  # a status change cancels nothing
    events = m(AmendOrder("alice", CEA, buy_id, 10, 1_000))
    assert events == [OrderAmended(buy_id, "alice", CEA, 1_000, 10, True)]
    assert m.account("alice").cash_reserved_fen == 10_000
    assert reason(m(AmendOrder("alice", CEA, buy_id, 15, 1_000))) == R.MEMBER_RESTRICTED  # up
    assert reason(m(AmendOrder("alice", CEA, buy_id, 5, 999))) == R.MEMBER_RESTRICTED  # new price
    assert reason(m(AmendOrder("alice", CEA, sell_id, 20, 1_040))) == R.MEMBER_RESTRICTED
    assert reason(m.buy("alice", 1, 1_000)) == R.MEMBER_RESTRICTED
    assert reason(m.sell("alice", 1, 1_050)) == R.MEMBER_RESTRICTED
    assert kinds(m(CancelOrder("alice", CEA, sell_id))) == ["OrderCancelled"]
    assert m.holding("alice").reserved_t == 0


@pytest.mark.parametrize("status", [MemberStatus.SUSPENDED, MemberStatus.FROZEN])
def test_suspended_and_frozen_may_only_cancel(status) -> None:
    expected = R.MEMBER_SUSPENDED if status == MemberStatus.SUSPENDED else R.MEMBER_FROZEN
    m = Market()
    keep = accepted_id(m.buy("alice", 20, 1_000))
    other = accepted_id(m.buy("alice", 5, 990))
    accepted_id(m.sell("alice", 5, 540, symbol=CCER))
    m(SetMemberStatus("alice", status))
    assert reason(m.buy("alice", 1, 1_000)) == expected
    assert reason(m(AmendOrder("alice", CEA, keep, 10, 1_000))) == expected  # even a reduction
    # resting orders stay and still trade when others hit them
    assert kinds(m.sell("bob", 5, 1_000)) == ["OrderAccepted", "OrderFilled"]
    assert kinds(m(CancelOrder("alice", CEA, other))) == ["OrderCancelled"]
    assert kinds(m(MassCancel("alice"))) == ["OrderCancelled", "OrderCancelled"]
    assert m.resting("alice") == [] and m.resting("alice", CCER) == []
    assert m.account("alice").cash_reserved_fen == 0 and m.holding("alice", CCER).reserved_t == 0


def test_frozen_may_not_withdraw_suspended_may() -> None:
    m = Market()
    m(SetMemberStatus("alice", MemberStatus.FROZEN))
    assert reason(m(Withdraw("alice", 1))) == R.MEMBER_FROZEN
    assert m.account("alice").cash_available_fen == CASH
    m(SetMemberStatus("bob", MemberStatus.SUSPENDED))
    assert type(m(Withdraw("bob", 1))[0]) is FundsWithdrawn
    m(SetMemberStatus("alice", MemberStatus.ACTIVE))
    assert m(Withdraw("alice", CASH)) == [FundsWithdrawn("alice", CASH, 0)]


def test_kill_switch_cancels_everywhere_and_refuses_until_restored() -> None:
    m = Market()
    b1 = accepted_id(m.buy("alice", 10, 1_000))
    s1 = accepted_id(m.sell("alice", 10, 1_050))
    b2 = accepted_id(m.buy("alice", 10, 500, symbol=CCER))
    bob = accepted_id(m.buy("bob", 10, 990))
    events = m(KillSwitch("alice"))
    assert events[0] == MemberStatusChanged("alice", MemberStatus.ACTIVE, True)
    cancelled = [(e.instrument, e.order_id, e.reason) for e in events[1:]]
    assert sorted(cancelled) == sorted([
        (CEA, b1, CancelReason.KILL_SWITCH), (CEA, s1, CancelReason.KILL_SWITCH), (CCER, b2, CancelReason.KILL_SWITCH),
    ])
    a = m.account("alice")
    assert (a.cash_available_fen, a.cash_reserved_fen, a.open_orders, a.pending_buy_t) == (CASH, 0, 0, 0)
    assert m.holding("alice").reserved_t == 0 and m.holding("alice").available_t == 100
    assert m.resting("bob") == [(bob, BUY, 990, 10)]  # nobody else is touched
    assert reason(m.buy("alice", 1, 1_000)) == R.MEMBER_KILLED
    assert reason(m.sell("alice", 1, 1_000, symbol=CCER)) == R.MEMBER_KILLED
    assert reason(m(KillSwitch("alice"))) == R.STATUS_UNCHANGED
    assert m(SetMemberStatus("alice", MemberStatus.ACTIVE)) == [MemberStatusChanged("alice", MemberStatus.ACTIVE, False)]
    assert type(m.buy("alice", 1, 1_000)[0]) is OrderAccepted


def test_kill_switch_on_a_restricted_member_is_lifted_only_by_active() -> None:
    m = Market()
    m(SetMemberStatus("alice", MemberStatus.RESTRICTED))
    m(KillSwitch("alice"))
    assert m(SetMemberStatus("alice", MemberStatus.SUSPENDED)) == [
        MemberStatusChanged("alice", MemberStatus.SUSPENDED, True)
    ]
    assert reason(m.buy("alice", 1, 1_000)) == R.MEMBER_SUSPENDED
    m(SetMemberStatus("alice", MemberStatus.ACTIVE))
    assert type(m.buy("alice", 1, 1_000)[0]) is OrderAccepted


# -- market controls ---------------------------------------------------------------------------


def test_halt_refuses_orders_allows_cancels_then_resume() -> None:
    m = Market()
    resting = accepted_id(m.buy("alice", 10, 1_000))
    other = accepted_id(m.buy("alice", 10, 990))
    assert m(HaltInstrument(CEA)) == [InstrumentStatusChanged(CEA, True)]
    assert reason(m(HaltInstrument(CEA))) == R.STATUS_UNCHANGED
    assert reason(m.sell("bob", 10, 1_000)) == R.INSTRUMENT_HALTED
    assert reason(m.sell("bob", 10, tif=TimeInForce.FOK)) == R.INSTRUMENT_HALTED
    assert reason(m(AmendOrder("alice", CEA, resting, 5, 1_000))) == R.INSTRUMENT_HALTED
    assert m.resting("alice")[0][0] == resting  # resting orders stay
    assert kinds(m(CancelOrder("alice", CEA, other))) == ["OrderCancelled"]
    assert type(m.buy("bob", 10, 500, symbol=CCER)[0]) is OrderAccepted  # the other instrument trades
    assert m(ResumeInstrument(CEA)) == [InstrumentStatusChanged(CEA, False)]
    assert reason(m(ResumeInstrument(CEA))) == R.STATUS_UNCHANGED
    assert kinds(m.sell("bob", 10, 1_000)) == ["OrderAccepted", "OrderFilled"]


def test_close_market_refuses_orders_allows_cancels_then_reopen() -> None:
    m = Market()
    resting = accepted_id(m.buy("alice", 10, 1_000))
    accepted_id(m.buy("alice", 10, 500, symbol=CCER))
    assert m(CloseMarket()) == [MarketStatusChanged(True)]
    assert reason(m(CloseMarket())) == R.STATUS_UNCHANGED
    assert reason(m.sell("bob", 10, 1_000)) == R.MARKET_CLOSED
    assert reason(m.sell("bob", 10, 500, symbol=CCER)) == R.MARKET_CLOSED
    assert reason(m(AmendOrder("alice", CEA, resting, 5, 1_000))) == R.MARKET_CLOSED
    assert kinds(m(CancelOrder("alice", CEA, resting))) == ["OrderCancelled"]
    assert kinds(m(MassCancel("alice"))) == ["OrderCancelled"]
    assert m(ReopenMarket()) == [MarketStatusChanged(False)]
    assert reason(m(ReopenMarket())) == R.STATUS_UNCHANGED
    assert type(m.sell("bob", 10, 1_000)[0]) is OrderAccepted


def test_orders_refused_outside_continuous_trading() -> None:
    m = Market(open_day=False)
    m.start_day({"alice": 100})
    assert reason(m.buy("alice", 1, 1_000)) == R.OUTSIDE_TRADING_HOURS  # pre-open
    m(SetTradingPhase(TradingPhase.CONTINUOUS))
    resting = accepted_id(m.buy("alice", 1, 1_000))
    assert m(SetTradingPhase(TradingPhase.BREAK)) == [TradingPhaseChanged(TradingPhase.BREAK)]
    assert reason(m.buy("alice", 1, 1_000)) == R.OUTSIDE_TRADING_HOURS
    assert reason(m(AmendOrder("alice", CEA, resting, 2, 1_000))) == R.OUTSIDE_TRADING_HOURS
    m(SetTradingPhase(TradingPhase.CONTINUOUS))
    assert type(m.buy("alice", 1, 1_000)[0]) is OrderAccepted
    m(SetTradingPhase(TradingPhase.POST_CLOSE))
    assert reason(m.sell("alice", 1, 1_000)) == R.OUTSIDE_TRADING_HOURS
    assert kinds(m(CancelOrder("alice", CEA, resting))) == ["OrderCancelled"]


@pytest.mark.parametrize(
    "day_open, phases, refused",
    [
        (False, [], TradingPhase.CONTINUOUS),  # no day open
        (False, [], TradingPhase.PRE_OPEN),
        (True, [], TradingPhase.BREAK),  # pre-open goes to continuous (or post-close) only
        (True, [], TradingPhase.PRE_OPEN),
        (True, [TradingPhase.CONTINUOUS], TradingPhase.CONTINUOUS),
        (True, [TradingPhase.CONTINUOUS], TradingPhase.PRE_OPEN),
        (True, [TradingPhase.CONTINUOUS, TradingPhase.BREAK], TradingPhase.BREAK),
        (True, [TradingPhase.CONTINUOUS, TradingPhase.POST_CLOSE], TradingPhase.CONTINUOUS),
        (True, [TradingPhase.POST_CLOSE], TradingPhase.CONTINUOUS),
    ],
)
def test_trading_phases_follow_the_schedule(day_open, phases, refused) -> None:
    m = Market(open_day=False)
    if day_open:
        m.start_day()
    for phase in phases:
        assert m(SetTradingPhase(phase)) == [TradingPhaseChanged(phase)]
    assert reason(m(SetTradingPhase(refused))) == R.PHASE_OUT_OF_ORDER
    assert m.core.risk.phase == (phases[-1] if phases else TradingPhase.PRE_OPEN if day_open else TradingPhase.POST_CLOSE)


def test_trading_phases_refused_in_a_fresh_day_and_after_the_close() -> None:
    m = Market(open_day=False)
    m.start_day()
    assert reason(m(SetTradingPhase(TradingPhase.BREAK))) == R.PHASE_OUT_OF_ORDER
    assert reason(m(SetTradingPhase(TradingPhase.PRE_OPEN))) == R.PHASE_OUT_OF_ORDER
    assert m(SetTradingPhase(TradingPhase.POST_CLOSE)) == [TradingPhaseChanged(TradingPhase.POST_CLOSE)]
    m(EndDay())
    for phase in TradingPhase:
        assert reason(m(SetTradingPhase(phase))) == R.PHASE_OUT_OF_ORDER


def test_set_risk_limits_default_and_per_member_apply_at_once() -> None:
    m = Market()
    assert m(SetRiskLimits(None, max_order_value_fen=5_000)) == [RiskLimitsChanged("", 5_000, 50, 100, 10_000)]
    assert reason(m.buy("alice", 10, 1_000)) == R.ORDER_VALUE_ABOVE_MAXIMUM
    assert reason(m.buy("bob", 10, 1_000)) == R.ORDER_VALUE_ABOVE_MAXIMUM
    assert m(SetRiskLimits("bob", max_order_value_fen=20_000)) == [RiskLimitsChanged("bob", 20_000, 50, 100, 10_000)]
    assert type(m.buy("bob", 10, 1_000)[0]) is OrderAccepted
    assert reason(m.buy("alice", 10, 1_000)) == R.ORDER_VALUE_ABOVE_MAXIMUM
    m(SetRiskLimits(None, max_order_value_fen=10**10))
    assert type(m.buy("alice", 10, 1_000)[0]) is OrderAccepted
    assert reason(m.buy("bob", 21, 1_000)) == R.ORDER_VALUE_ABOVE_MAXIMUM  # bob's own limit stands
    # refused changes change nothing
    assert reason(m(SetRiskLimits(None, max_open_orders=0))) == R.AMOUNT_NOT_POSITIVE
    assert reason(m(SetRiskLimits("nobody", max_open_orders=1))) == R.UNKNOWN_MEMBER
    assert reason(m(SetRiskLimits("alice", orders_per_second=-1))) == R.AMOUNT_NOT_POSITIVE
    assert m.account("alice").limits is None


def test_set_instrument_limits_band_applies_at_once() -> None:
    m = Market()
    low = accepted_id(m.buy("alice", 1, 960))
    inside = accepted_id(m.buy("alice", 2, 1_000))
    high = accepted_id(m.sell("bob", 3, 1_060))
    events = m(SetInstrumentLimits(CEA, band_bps=200))
    assert events == [
        InstrumentLimitsChanged(CEA, 200, 99_999, 980, 1_020),
        # orders resting outside a narrowed band are cancelled, their reservations released
        OrderCancelled(low, "alice", CEA, 1, CancelReason.PRICE_OUTSIDE_BAND),
        OrderCancelled(high, "bob", CEA, 3, CancelReason.PRICE_OUTSIDE_BAND),
    ]
    assert m.resting("alice") == [(inside, BUY, 1_000, 2)] and m.resting("bob") == []
    a = m.account("alice")
    assert (a.cash_reserved_fen, a.open_orders) == (2_000, 1)
    assert (m.holding("bob").reserved_t, m.holding("bob").available_t, m.account("bob").open_orders) == (0, 100, 0)
    assert reason(m.buy("alice", 1, 1_030)) == R.PRICE_OUTSIDE_BAND
    assert reason(m.sell("alice", 1, 970)) == R.PRICE_OUTSIDE_BAND
    market = m.buy("bob", 3, tif=TimeInForce.IOC)  # a market buy now reserves the new upper limit
    assert market[0].price_fen == 1_020
    assert reason(m(AmendOrder("alice", CEA, inside, 2, 1_030))) == R.PRICE_OUTSIDE_BAND
    m(SetInstrumentLimits(CEA, band_bps=2_000, max_order_qty_t=10))
    assert type(m.buy("alice", 1, 1_150)[0]) is OrderAccepted
    assert reason(m.buy("alice", 11, 1_000)) == R.QTY_ABOVE_MAXIMUM
    assert reason(m(SetInstrumentLimits(CEA, band_bps=10_000))) == R.LIMIT_OUT_OF_RANGE  # 100 %: out of range
    assert reason(m(SetInstrumentLimits(CEA, band_bps=-1))) == R.AMOUNT_NOT_POSITIVE


# -- linked accounts ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(SelfTradePolicy))
def test_linked_accounts_never_trade_with_each_other(policy) -> None:
    m = Market(stp=policy)
    resting = accepted_id(m.sell("dave", 10, 1_000))
    events = m.buy("erin", 10, 1_000)
    incoming = events[0].order_id
    assert not any(isinstance(e, OrderFilled) for e in events)
    cancelled = {e.order_id: e.reason for e in events if isinstance(e, OrderCancelled)}
    expected = {
        SelfTradePolicy.CANCEL_NEWEST: {incoming: CancelReason.SELF_TRADE},
        SelfTradePolicy.CANCEL_OLDEST: {resting: CancelReason.SELF_TRADE},
        SelfTradePolicy.CANCEL_BOTH: {incoming: CancelReason.SELF_TRADE, resting: CancelReason.SELF_TRADE},
    }[policy]
    assert cancelled == expected
    erin, dave = m.account("erin"), m.account("dave")
    if incoming in cancelled:  # nothing stays reserved for a cancelled order
        assert (erin.cash_available_fen, erin.cash_reserved_fen, erin.open_orders) == (CASH, 0, 0)
    else:
        assert (erin.cash_reserved_fen, erin.open_orders) == (10_000, 1)
    if resting in cancelled:
        assert (m.holding("dave").reserved_t, m.holding("dave").available_t, dave.open_orders) == (0, 100, 0)
    # an unlinked member trades with either of them
    m.sell("dave", 5, 1_010)
    assert kinds(m.buy("alice", 5, 1_010, tif=TimeInForce.IOC))[:2] == ["OrderAccepted", "OrderFilled"]


# -- holdings from the registry ------------------------------------------------------------------


def test_load_holding_only_outside_trading() -> None:
    m = Market(open_day=False)
    assert m(LoadHolding("alice", CEA, 10)) == [HoldingLoaded("alice", CEA, 10, 10)]  # before any day
    m.start_day()
    assert m(LoadHolding("alice", CEA, 20)) == [HoldingLoaded("alice", CEA, 20, 10)]  # pre-open
    m(SetTradingPhase(TradingPhase.CONTINUOUS))
    assert reason(m(LoadHolding("alice", CEA, 30))) == R.HOLDING_LOAD_DURING_TRADING
    m(SetTradingPhase(TradingPhase.BREAK))
    assert reason(m(LoadHolding("alice", CEA, 30))) == R.HOLDING_LOAD_DURING_TRADING
    m(SetTradingPhase(TradingPhase.POST_CLOSE))
    assert m(LoadHolding("alice", CEA, 30))[0].change_t == 10
    m(EndDay())
    assert m(LoadHolding("alice", CEA, 5))[0].change_t == -25
    assert m.holding("alice").available_t == 5 and m.account("alice").position_t == 5


def test_load_holding_below_committed_refused() -> None:
    m = Market(holdings={"alice": 100, "bob": 100})
    m.sell("alice", 30, 1_050, tif=TimeInForce.GTC)  # 30 reserved, resting across days
    m.sell("bob", 10, 1_000)
    m.buy("alice", 10, 1_000)  # 10 bought today: locked
    m(EndDay())
    h = m.holding("alice")
    assert (h.available_t, h.reserved_t, h.locked_t) == (70, 30, 10)
    before = m.money("alice")
    assert reason(m(LoadHolding("alice", CEA, 39))) == R.HOLDING_BELOW_COMMITTED
    assert m.money("alice") == before
    assert m(LoadHolding("alice", CEA, 40)) == [HoldingLoaded("alice", CEA, 40, -70)]
    assert (h.available_t, h.reserved_t, h.locked_t) == (0, 30, 10)


# -- amends --------------------------------------------------------------------------------------


def test_amend_up_without_the_cash_is_refused_and_changes_nothing() -> None:
    m = Market(cash={"alice": 20_000})
    order_id = accepted_id(m.buy("alice", 15, 1_000))  # 5,000 left
    book_before = msgspec.msgpack.encode(m.core.books[CEA].state())
    money_before = m.money("alice")
    assert reason(m(AmendOrder("alice", CEA, order_id, 21, 1_000))) == R.INSUFFICIENT_FUNDS
    assert reason(m(AmendOrder("alice", CEA, order_id, 20, 1_001))) == R.INSUFFICIENT_FUNDS
    assert m.money("alice") == money_before
    assert msgspec.msgpack.encode(m.core.books[CEA].state()) == book_before
    assert kinds(m(AmendOrder("alice", CEA, order_id, 20, 1_000))) == ["OrderAmended"]  # exactly enough
    a = m.account("alice")
    assert (a.cash_available_fen, a.cash_reserved_fen, a.pending_buy_t) == (0, 20_000, 20)
    # a lower price frees cash even with more tonnes
    assert kinds(m(AmendOrder("alice", CEA, order_id, 21, 950))) == ["OrderAmended"]
    assert (a.cash_available_fen, a.cash_reserved_fen) == (20_000 - 21 * 950, 21 * 950)


def test_amend_up_without_the_allowances_is_refused() -> None:
    m = Market(holdings={"alice": 100})
    order_id = accepted_id(m.sell("alice", 60, 1_050))
    assert reason(m(AmendOrder("alice", CEA, order_id, 101, 1_050))) == R.INSUFFICIENT_ALLOWANCES
    assert kinds(m(AmendOrder("alice", CEA, order_id, 100, 1_040))) == ["OrderAmended"]
    assert (m.holding("alice").available_t, m.holding("alice").reserved_t) == (0, 100)


def test_amend_to_a_crossing_price_fills_and_books_the_fill() -> None:
    m = Market()
    m.sell("bob", 10, 1_000)
    order_id = accepted_id(m.buy("alice", 10, 990))
    events = m(AmendOrder("alice", CEA, order_id, 10, 1_010))
    assert kinds(events) == ["OrderAmended", "OrderFilled"] and events[1].price_fen == 1_000
    a = m.account("alice")
    assert (a.cash_available_fen, a.cash_reserved_fen, a.cash_obligation_fen, a.open_orders) == (
        CASH - 10_000, 0, 10_000, 0,
    )
    assert m.holding("alice").locked_t == 10


# -- snapshots and replay ------------------------------------------------------------------------


def busy_market() -> Market:
    """Resting orders both sides in both books, fills, locked and pending, limits, a killed
    member, a halted instrument, a used rate bucket, a large holder."""
    m = Market(RiskPolicy(position_limit_t=400, same_day_proceeds=False, holding_days=2))
    m(SetRiskLimits("carol", orders_per_second=3, order_burst=5))
    m.sell("bob", 20, 990, tif=TimeInForce.GTC)
    m.buy("alice", 30, 1_000)
    m.buy("carol", 10, 995)
    m.sell("carol", 5, 1_050)
    m.buy("dave", 40, 520, symbol=CCER, tif=TimeInForce.GTC)
    m.sell("erin", 15, 510, symbol=CCER)
    m.next_day()
    m.buy("alice", 5, 1_000, tif=TimeInForce.GTC)
    m.sell("bob", 10, 999)  # 5 fill, 5 rest
    m.buy("alice", 3, 990, tif=TimeInForce.GTC)
    m(KillSwitch("erin"))
    m(HaltInstrument(CCER))
    m(SetRiskLimits(None, max_open_orders=50))
    return m


FOLLOW_UP: list[Command] = [
    SubmitOrder("carol", CEA, SELL, 5, 995),
    SubmitOrder("carol", CEA, BUY, 3, None, OrderType.MARKET, TimeInForce.IOC),
    SubmitOrder("erin", CEA, BUY, 1, 1_000),
    ResumeInstrument(CCER),
    SubmitOrder("bob", CCER, SELL, 10, 500, OrderType.LIMIT, TimeInForce.IOC),
    SetMemberStatus("erin", MemberStatus.ACTIVE),
    MassCancel("alice"),
    EndDay(),
    StartDay("2026-03-09"),
    LoadHolding("alice", CEA, 100),
    SetTradingPhase(TradingPhase.CONTINUOUS),
    SubmitOrder("alice", CEA, SELL, 120, 990),  # more than alice may sell: refused
    SubmitOrder("alice", CEA, SELL, 90, 990),
    SubmitOrder("bob", CEA, BUY, 10, None, OrderType.MARKET, TimeInForce.IOC),
    SubmitOrder("carol", CCER, SELL, 10, 500),
]


def test_snapshot_round_trip_gives_the_same_hash_and_the_same_events() -> None:
    m = busy_market()
    risk = m.core.risk
    assert risk.accounts["erin"].killed and risk.halted == {CCER: True}
    assert m.holding("alice").locked_t == 20 + 5 and m.account("bob").cash_pending_fen == 5 * 1_000
    assert m.resting("bob") and m.resting("alice") and m.resting("dave", CCER)
    snapshot = encode_state(m.core.state())
    restored = ExchangeCore(INSTRUMENTS, SelfTradePolicy.CANCEL_NEWEST, m.core.risk.policy)
    restored.restore(decode_state(snapshot))
    assert restored.state_hash() == m.core.state_hash()
    assert encode_state(restored.state()) == snapshot
    for command in FOLLOW_UP:
        m.ts += 200_000_000
        seq = m.core.last_seq + 1
        live = m.core.apply(seq, m.ts, command)
        again = restored.apply(seq, m.ts, command)
        assert encode_events(seq, m.ts, again) == encode_events(seq, m.ts, live), command
    assert restored.state_hash() == m.core.state_hash()


def test_engine_journal_replay_rebuilds_the_risk_state() -> None:
    m = busy_market()
    clock = iter(range(T0, T0 + 10**12, 250_000_000))
    journal = MemoryJournal()
    live = ExchangeCore(INSTRUMENTS, SelfTradePolicy.CANCEL_NEWEST, m.core.risk.policy)
    engine = Engine(live, journal, clock=lambda: next(clock))
    events = [events_of(engine.execute(command)) for _, _, command in m.log + [(0, 0, c) for c in FOLLOW_UP]]
    engine.flush()
    fresh = ExchangeCore(INSTRUMENTS, SelfTradePolicy.CANCEL_NEWEST, m.core.risk.policy)
    replayed = [e for _, _, e in replay(fresh, MemoryJournal(data=journal.getvalue()).records())]
    assert replayed == events
    assert fresh.state_hash() == live.state_hash()


# -- defects found while writing these tests (fail until fixed) ------------------------------------


def test_linked_group_named_like_a_member_does_not_link_that_member() -> None:
    """A linked-group name and a member id share one namespace in self-trade prevention: the
    book's owner key is ``linked_group or member_id``. Member "G" (standing alone) and member
    "A" of linked group "G" are unrelated, yet they may not trade."""
    m = Market(
        members=[RegisterMember("G", MemberKind.VOLUNTARY), RegisterMember("A", MemberKind.VOLUNTARY, 0, "G")],
        holdings={"A": 100},
    )
    m.sell("A", 10, 1_000)
    events = m.buy("G", 10, 1_000)
    assert kinds(events) == ["OrderAccepted", "OrderFilled"], events


def test_accepted_risk_limits_keep_the_state_encodable() -> None:
    """``SetRiskLimits`` accepts an order burst up to 2**62, but the rate bucket counts
    nano-orders (burst x 10**9) and the state is msgpack-encoded: from a burst above
    ~1.8 x 10**10, the first order makes ``state_hash()`` and snapshots raise OverflowError."""
    m = Market()
    events = m(SetRiskLimits("alice", order_burst=10**11))
    if isinstance(events[0], CommandRejected):
        return  # refusing such a limit is a fix too
    m.buy("alice", 1, 1_000)
    state = decode_state(encode_state(m.core.state()))  # OverflowError today
    restored = ExchangeCore(INSTRUMENTS, SelfTradePolicy.CANCEL_NEWEST)
    restored.restore(state)
    assert restored.state_hash() == m.core.state_hash()
