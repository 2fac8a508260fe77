"""Stateful test of member accounts and pre-trade risk (shared/docs/testing.md, "Accounts and
risk").

A Hypothesis state machine drives ``ExchangeCore.apply`` with a random mix of every command
the risk room knows: deposits and withdrawals (some too large), limit DAY/GTC/IOC/FOK and
market IOC/FOK orders priced in a narrow band around the previous close (so they cross and
fill often), cancels (some of unknown or other members' ids), amends (down, up, new price,
crossing), mass cancels, the kill switch and its lifting, member status changes, instrument
halts, market closures, trading phases, risk and instrument limit changes, and whole day
cycles (EndDay, StartDay, LoadHolding, CONTINUOUS). Four members, one linked group of two
(L1, L2) so linked-account self-trade prevention happens, two instruments. Each run draws the
risk policy (position limit, holding days, same-day proceeds) and the self-trade policy.

After EVERY command (not only every rule) it checks:

(a) conservation per asset: cash over all accounts, the members' and the house's
    (available + reserved + pending + obligation) equals deposits - withdrawals as the
    FundsDeposited/FundsWithdrawn events report them; per instrument the holdings (available
    + reserved + locked + obligation) equal the sum of HoldingLoaded.change_t; the house
    accounts (which cannot trade) stay empty and the set of accounts is members + house;
(b) obligations sum to zero over the market, for cash and per instrument;
(c) nothing negative (available, reserved, locked, pending cash, counters);
(d) reservations equal the holds and the holds equal the books: every account's reserved
    cash and reserved allowances are the sum of its open holds (of every kind); the ORDER
    holds are exactly the resting orders (a buy holds price x open qty of cash at its limit,
    a sell its open qty of the instrument, on the member's account), so reserved cash = sum
    of price x open qty of the member's resting buys, reserved allowances = resting sell
    open qty; open-order count = resting orders, pending buys = resting buy open qty; locked
    allowances equal the unlock queue;
(e) position = sum over instruments of (available + reserved + locked) + pending buys, and
    the large-holder flag says whether it is at or above the threshold;
(f) nothing that broke a limit reached the book: every OrderAccepted / OrderAmended came from
    an ACTIVE (or, for a reduction, RESTRICTED), not-killed member, with the market open, the
    instrument not halted, the phase CONTINUOUS, backed by the cash / sellable allowances
    available just before the command, within the max order value, the open-order count and
    the position limit in force; fills never join two members of one self-trade owner;
(g) a refused command changes no balance, no hold and no book.

At the end of each example the whole command log is replayed into a fresh core: the same
events, command by command, and the same ``state_hash()``. A rule also swaps the live core
for one restored from a snapshot of it, so later commands run on restored state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from exchange.engine import ExchangeCore, decode_state, encode_events, encode_state
from exchange.model import (
    AmendOrder,
    AmendRejected,
    CancelOrder,
    CancelReason,
    CancelRejected,
    CloseMarket,
    Command,
    CommandRejected,
    DayClosed,
    DayStarted,
    Deposit,
    EndDay,
    FundsDeposited,
    FundsWithdrawn,
    HaltInstrument,
    HoldingLoaded,
    Instrument,
    InstrumentKind,
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
    OrderRejected,
    OrderType,
    RegisterMember,
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
from exchange.risk import CASH, HOUSE_ACCOUNTS, Holding, RiskLimits, RiskPolicy
from exchange.risk.state import holds_state

BUY, SELL = Side.BUY, Side.SELL
ACTIVE = MemberStatus.ACTIVE
CONTINUOUS = TradingPhase.CONTINUOUS
SYM_A, SYM_B = "CEA-2025", "CCER"
POSITIONED = (SYM_A,)  # allowances count toward the position limit; certified reductions do not
SYMBOLS = (SYM_A, SYM_B)
INSTRUMENTS = [
    # tick 1 fen, lot 1 t, at most 60 t; bands 950..1050 and 450..550 on the first day
    Instrument(SYM_A, InstrumentKind.ALLOWANCE, 1_000, vintage=2025, max_order_qty_t=60, band_bps=500),
    Instrument(SYM_B, InstrumentKind.CCER, 500, max_order_qty_t=60, band_bps=1_000),
]
MEMBERS = ("COV", "VOL", "L1", "L2")
GROUP = "GRP"  # not the name of any member
REGISTRATIONS = [
    RegisterMember("COV", MemberKind.COVERED, 150),
    RegisterMember("VOL", MemberKind.VOLUNTARY),
    RegisterMember("L1", MemberKind.VOLUNTARY, 0, GROUP),
    RegisterMember("L2", MemberKind.COVERED, 100, GROUP),
]
FIRST_DAY = dt.date(2026, 3, 2)
UNKNOWN_ID = 10**9
MS = 1_000_000

members = st.sampled_from(MEMBERS)
symbols = st.sampled_from(SYMBOLS)
sides = st.sampled_from([BUY, SELL])
# Mostly small valid quantities; one in twelve rejected by the book (zero, above the maximum).
quantities = st.integers(-2, 30).map(lambda q: {-2: 0, -1: 61}.get(q, q or 1))
# Mostly within +-3 ticks of the previous close, so orders cross; one in four anywhere
# within +-80 (outside the band or a narrowed band now and then).
offsets = st.one_of(st.integers(-3, 3), st.integers(-3, 3), st.integers(-3, 3), st.integers(-80, 80))
limit_tifs = st.sampled_from([TimeInForce.DAY, TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK])
market_tifs = st.sampled_from([TimeInForce.IOC, TimeInForce.FOK])


def account_view(account) -> tuple:
    """Everything about an account's money and allowances (not its rate bucket)."""
    return (
        account.status, account.killed, account.cash_available_fen, account.cash_reserved_fen,
        account.cash_pending_fen, account.cash_obligation_fen,
        tuple((s, msgspec.structs.astuple(h)) for s, h in sorted(account.holdings.items()) if h != Holding()),
        tuple(account.unlocks), account.open_orders,
        account.pending_buy_t, account.position_t, account.limits, account.large_holder,
    )


def ledger_view(risk) -> tuple:
    """Every account (members' and house's) and every open hold."""
    return (
        tuple((m, account_view(a)) for m, a in risk.ledger.members.items()),
        tuple((i, account_view(a)) for i, a in risk.ledger.house.items()),
        tuple(msgspec.structs.astuple(h) for h in holds_state(risk.ledger)),
    )


def limit_rule() -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The rule of the copies of the limit-order rule (a fresh decorator for each copy)."""
    return rule(member=members, symbol=symbols, side=sides, qty=quantities, offset=offsets, tif=limit_tifs)


def take_rule() -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The rule of the copies of the rule that takes a resting order."""
    return rule(
        pick=st.integers(0, 10_000), shift=st.integers(0, 5), qty=quantities,
        how=st.sampled_from(["limit", "limit", "through", "market"]),
        tif=st.sampled_from(list(TimeInForce)),
    )


class RiskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._core: ExchangeCore | None = None  # set by setup(), the first rule of every run

    @property
    def core(self) -> ExchangeCore:
        assert self._core is not None, "setup() has not run"
        return self._core

    @core.setter
    def core(self, core: ExchangeCore) -> None:
        self._core = core

    # -- plumbing --------------------------------------------------------------------------

    @initialize(
        position_limit=st.sampled_from([200, 400, 1_000_000]),
        holding_days=st.sampled_from([1, 1, 2]),
        same_day_proceeds=st.booleans(),
        stp=st.sampled_from(list(SelfTradePolicy)),
        cash=st.sampled_from([50_000, 300_000]),
        holding=st.sampled_from([40, 100]),
    )
    def setup(self, position_limit, holding_days, same_day_proceeds, stp, cash, holding) -> None:
        self.policy = RiskPolicy(
            position_limit_t=position_limit, holding_days=holding_days, same_day_proceeds=same_day_proceeds,
        )
        self.stp = stp
        self.core = ExchangeCore(INSTRUMENTS, stp, self.policy)
        self.log: list[tuple[int, int, Command, bytes]] = []
        self.ts = 1_772_000_000 * 1_000_000_000
        self.day = FIRST_DAY - dt.timedelta(days=1)
        # What the events say (the model the checks compare with).
        self.cash_in = 0
        # Per member: the cash settled (deposits - withdrawals + settled days' trades) and the
        # open day's trade cash, settled at the next start of day (what a withdrawal may take).
        self.settled = dict.fromkeys(MEMBERS, 0)
        self.unsettled = dict.fromkeys(MEMBERS, 0)
        self.loaded = dict.fromkeys(SYMBOLS, 0)
        self.status = dict.fromkeys(MEMBERS, ACTIVE)
        self.killed = dict.fromkeys(MEMBERS, False)
        self.groups: dict[str, str] = {}
        self.halted: set[str] = set()
        self.closed = False
        self.phase = TradingPhase.POST_CLOSE
        self.day_open = False
        self.days = 0  # trading days started
        self.bought: list[tuple[int, str, str, int]] = []  # (unlock day, member, symbol, qty) per fill
        self.limits: dict[str, RiskLimits] = {"": self.policy.limits}
        self.counts: dict[str, int] = {}
        for cmd in REGISTRATIONS:
            self.do(cmd)
        for member in MEMBERS:
            self.do(Deposit(member, cash))
        self.start_day(holding, holding)

    def do(self, cmd: Command, dt_ns: int = MS) -> list:
        """Apply one command, check it against the state just before, then the invariants."""
        core = self.core
        self.ts += dt_ns
        before = self.capture(cmd)
        seq = core.last_seq + 1
        events = core.apply(seq, self.ts, cmd)
        self.log.append((seq, self.ts, cmd, encode_events(seq, self.ts, events)))
        self.check_events(seq, cmd, before, events)
        self.follow(cmd, events)
        self.check_state()
        for event in events:
            name = type(event).__name__
            if hasattr(event, "reason"):
                name += f".{event.reason.name}"
            self.counts[name] = self.counts.get(name, 0) + 1
        return events

    def capture(self, cmd) -> dict:
        risk = self.core.risk
        accounts = ledger_view(risk)
        amended = None
        if type(cmd) is AmendOrder and cmd.instrument in self.core.books:
            order = self.core.books[cmd.instrument].order(cmd.member_id, cmd.order_id)
            if order is not None:
                amended = (order.side, order.price_fen, order.qty_t)
        return {
            "accounts": accounts,
            "available": {
                m: (a.cash_available_fen, {s: a.holding(s).available_t if s in a.holdings else 0 for s in SYMBOLS})
                for m, a in risk.accounts.items()
            },
            "limits": {m: a.limits or risk.default_limits for m, a in risk.accounts.items()},
            "open_orders": {m: a.open_orders for m, a in risk.accounts.items()},
            "position": {m: a.position_t for m, a in risk.accounts.items()},
            "large_holder": {m: a.large_holder for m, a in risk.accounts.items()},
            "bands": {s: (b.lower_fen, b.upper_fen) for s, b in self.core.books.items()},
            "books": {s: msgspec.msgpack.encode(b.state()) for s, b in self.core.books.items()},
            "amended": amended,
        }

    def limits_for(self, member: str) -> RiskLimits:
        return self.limits.get(member, self.limits[""])

    def position_limit(self, member: str) -> int:
        account = self.core.risk.accounts[member]
        assert account.kind is not None  # a member's account (only the house's have no kind)
        return self.policy.position_limit(account.kind, account.annual_allocation_t)

    def owner(self, member: str) -> str:
        return self.groups.get(member) or member

    def may_trade(self, member: str, symbol: str) -> None:
        """(f): the member and the market allowed an order on ``symbol`` before the command."""
        assert not self.killed[member], f"{member} is killed"
        assert not self.closed, "the market is closed"
        assert symbol not in self.halted, f"{symbol} is halted"
        assert self.phase == CONTINUOUS and self.day_open, f"phase {self.phase.name}"

    def check_events(self, seq: int, cmd, before: dict, events: list) -> None:
        refused = all(
            isinstance(e, (OrderRejected, AmendRejected, CancelRejected, CommandRejected)) for e in events
        )
        if refused:  # (g) a refused command changes no balance and no book
            after = ledger_view(self.core.risk)
            assert after == before["accounts"], f"{cmd} was refused but changed an account or a hold"
            books = {s: msgspec.msgpack.encode(b.state()) for s, b in self.core.books.items()}
            assert books == before["books"], f"{cmd} was refused but changed a book"
        for event in events:
            kind = type(event)
            if kind is OrderAccepted:
                assert type(cmd) is SubmitOrder and event.order_id == seq and event.member_id == cmd.member_id
                member, symbol = cmd.member_id, cmd.instrument
                assert self.status[member] == ACTIVE, f"order accepted from a {self.status[member].name} member"
                self.may_trade(member, symbol)
                limits = before["limits"][member]
                assert limits == self.limits_for(member), "the gate's limits differ from RiskLimitsChanged"
                lower, upper = before["bands"][symbol]
                if cmd.order_type == OrderType.MARKET:
                    assert event.price_fen == (upper if cmd.side == BUY else lower)
                else:
                    assert event.price_fen == cmd.price_fen and lower <= event.price_fen <= upper
                value = event.price_fen * event.qty_t
                assert value <= limits.max_order_value_fen, "order above the max order value"
                assert before["open_orders"][member] < limits.max_open_orders, "too many open orders"
                cash, allowances = before["available"][member]
                if cmd.side == BUY:
                    assert value <= cash, f"buy worth {value} accepted with {cash} available"
                    if symbol in POSITIONED:  # the position limit counts allowances, not CCER
                        assert before["position"][member] + event.qty_t <= self.position_limit(member)
                else:
                    assert event.qty_t <= allowances[symbol], "short sale / T+1 sale accepted"
            elif kind is OrderAmended:
                assert type(cmd) is AmendOrder and before["amended"] is not None
                member, symbol = cmd.member_id, cmd.instrument
                side, price, qty = before["amended"]
                reducing = cmd.price_fen == price and cmd.qty_t < qty
                status = self.status[member]
                assert status == ACTIVE or (status == MemberStatus.RESTRICTED and reducing), status.name
                self.may_trade(member, symbol)
                limits = before["limits"][member]
                assert cmd.price_fen * cmd.qty_t <= limits.max_order_value_fen
                cash, allowances = before["available"][member]
                if side == BUY:
                    assert cmd.price_fen * cmd.qty_t - price * qty <= cash, "amend up without the cash"
                    if cmd.qty_t > qty and symbol in POSITIONED:
                        assert before["position"][member] + cmd.qty_t - qty <= self.position_limit(member)
                else:
                    assert cmd.qty_t - qty <= allowances[symbol], "amend up without the allowances"
            elif kind is FundsWithdrawn:
                assert self.status[event.member_id] != MemberStatus.FROZEN, "a frozen member withdrew"
                assert event.amount_fen <= before["available"][event.member_id][0], "withdrew more than available"
                assert event.amount_fen <= self.settled[event.member_id], "withdrew cash not yet settled"
            elif kind is HoldingLoaded:
                assert self.phase in (TradingPhase.PRE_OPEN, TradingPhase.POST_CLOSE), "holding loaded during trading"
            elif kind is OrderFilled:
                assert event.buy_member_id != event.sell_member_id
                assert self.owner(event.buy_member_id) != self.owner(event.sell_member_id), "linked accounts traded"
            elif kind is OrderCancelled:
                assert (event.reason == CancelReason.KILL_SWITCH) == (type(cmd) is KillSwitch)
            elif kind is LargeHolderThresholdCrossed:
                assert not before["large_holder"][event.member_id], "reported again without falling below"
                limit = self.position_limit(event.member_id)
                assert event.limit_t == limit
                assert event.threshold_t == self.policy.large_holder_threshold(limit)
                assert event.position_t >= event.threshold_t

        reported = [e.member_id for e in events if type(e) is LargeHolderThresholdCrossed]
        for member, account in self.core.risk.accounts.items():
            assert reported.count(member) <= 1, "reported twice by one command"
            if account.large_holder and not before["large_holder"].get(member, False):
                assert member in reported, f"{member} reached the large-holder threshold unreported"

    def follow(self, cmd, events: list) -> None:
        """Update the model from the events."""
        for event in events:
            kind = type(event)
            if kind is FundsDeposited:
                self.cash_in += event.amount_fen
                self.settled[event.member_id] += event.amount_fen
            elif kind is FundsWithdrawn:
                self.cash_in -= event.amount_fen
                self.settled[event.member_id] -= event.amount_fen
            elif kind is HoldingLoaded:
                self.loaded[event.instrument] += event.change_t
            elif kind is MemberStatusChanged:
                self.status[event.member_id] = event.status
                self.killed[event.member_id] = event.killed
            elif kind is InstrumentStatusChanged:
                if event.halted:
                    self.halted.add(event.instrument)
                else:
                    self.halted.discard(event.instrument)
            elif kind is MarketStatusChanged:
                self.closed = event.closed
            elif kind is TradingPhaseChanged:
                self.phase = event.phase
            elif kind is DayStarted:
                if not self.day_open:
                    self.days += 1
                for member, amount in self.unsettled.items():  # the day before counts as settled
                    self.settled[member] += amount
                    self.unsettled[member] = 0
                self.day_open = True
                self.phase = TradingPhase.PRE_OPEN
            elif kind is OrderFilled:
                self.unsettled[event.buy_member_id] -= event.price_fen * event.qty_t
                self.unsettled[event.sell_member_id] += event.price_fen * event.qty_t
                unlock = self.days + self.policy.holding_days
                self.bought.append((unlock, event.buy_member_id, event.instrument, event.qty_t))
            elif kind is DayClosed:
                self.day_open = False
                self.phase = TradingPhase.POST_CLOSE
            elif kind is RiskLimitsChanged:
                self.limits[event.member_id] = RiskLimits(
                    event.max_order_value_fen, event.orders_per_second, event.order_burst, event.max_open_orders
                )
            elif kind is MemberRegistered:
                self.groups[event.member_id] = event.linked_group

    def check_state(self) -> None:
        core = self.core
        risk = core.risk
        policy = self.policy
        assert set(risk.accounts) == set(self.groups)
        ledger = risk.ledger
        assert ledger.members is risk.accounts
        assert list(ledger.house) == list(HOUSE_ACCOUNTS.values()) and not set(ledger.house) & set(ledger.members)
        cash_total = cash_obligations = 0
        totals = dict.fromkeys(SYMBOLS, 0)
        obligations = dict.fromkeys(SYMBOLS, 0)
        order_holds: dict[int, tuple] = {}  # what the books say the ORDER holds must be
        # (d) every account's reserved balances are the sum of its open holds, of every kind
        held: dict[tuple[str, str], int] = {}
        for book in ledger.holds.values():
            for hold_id, hold in book.held.items():
                assert hold.amount > 0, (book.kind.name, hold_id, hold)
                assert ledger.account(hold.account.member_id) is hold.account, "a hold on an unregistered account"
                key = (hold.account.member_id, hold.asset)
                held[key] = held.get(key, 0) + hold.amount
        for account_id, account in ledger.house.items():
            # The house's accounts cannot trade: with no auction or buy-back room yet, they
            # stay empty; they count in conservation all the same.
            assert account.cash_total() == 0 and not account.holdings and not account.open_orders, account_id
            assert held.get((account_id, CASH), 0) == account.cash_reserved_fen
            cash_total += account.cash_total()
        for member, account in risk.accounts.items():
            assert held.get((member, CASH), 0) == account.cash_reserved_fen, (member, "held cash", held)
            for symbol, holding in account.holdings.items():
                assert held.get((member, symbol), 0) == holding.reserved_t, (member, symbol, "held", held)
            # (c) nothing negative
            assert account.cash_available_fen >= 0, (member, "cash_available", account.cash_available_fen)
            assert account.cash_reserved_fen >= 0, (member, "cash_reserved", account.cash_reserved_fen)
            assert account.cash_pending_fen >= 0, (member, "cash_pending", account.cash_pending_fen)
            assert account.open_orders >= 0 and account.pending_buy_t >= 0 and account.position_t >= 0
            if policy.same_day_proceeds:
                assert account.cash_pending_fen == 0
            cash_total += account.cash_total()
            cash_obligations += account.cash_obligation_fen
            reserved_cash = pending_buy = resting = owned = 0
            for symbol in SYMBOLS:
                orders = core.books[symbol].open_orders(member)
                resting += len(orders)
                sell_open = 0
                for order in orders:
                    if order.side == BUY:
                        reserved_cash += order.price_fen * order.qty_t
                        if symbol in POSITIONED:  # the position limit counts allowances only
                            pending_buy += order.qty_t
                        order_holds[order.order_id] = (member, CASH, order.price_fen * order.qty_t, order.price_fen)
                    else:
                        sell_open += order.qty_t
                        order_holds[order.order_id] = (member, symbol, order.qty_t, 0)
                holding = account.holdings.get(symbol) or Holding()
                assert holding.available_t >= 0, (member, symbol, holding)
                assert holding.reserved_t >= 0, (member, symbol, holding)
                assert holding.locked_t >= 0, (member, symbol, holding)
                # (d) reserved allowances = resting sells
                assert holding.reserved_t == sell_open, (member, symbol, holding.reserved_t, sell_open)
                locked = sum(qty for _, s, qty in account.unlocks if s == symbol)
                assert holding.locked_t == locked, (member, symbol, holding.locked_t, list(account.unlocks))
                # T+n: what was bought is locked exactly until ``holding_days`` days have started
                bought = sum(q for day, m, s, q in self.bought if m == member and s == symbol and day > self.days)
                assert holding.locked_t == bought, (member, symbol, holding.locked_t, bought, self.days)
                totals[symbol] += holding.total()
                obligations[symbol] += holding.obligation_t
                if symbol in POSITIONED:
                    owned += holding.available_t + holding.reserved_t + holding.locked_t
            # (d) reservations = resting buys, counts = resting orders
            assert account.cash_reserved_fen == reserved_cash, (member, account.cash_reserved_fen, reserved_cash)
            assert account.open_orders == resting, (member, account.open_orders, resting)
            assert account.pending_buy_t == pending_buy, (member, account.pending_buy_t, pending_buy)
            # (e) position
            assert account.position_t == owned + pending_buy, (member, account.position_t, owned, pending_buy)
            threshold = policy.large_holder_threshold(self.position_limit(member))
            assert account.large_holder == (account.position_t >= threshold), (member, account.position_t, threshold)
            assert all(day > risk.day_number for day, _, _ in account.unlocks), "an unlock was missed"
            assert risk.day_number == self.days
            assert (account.status, account.killed) == (self.status[member], self.killed[member])
            if account.killed:
                assert resting == 0, f"{member} is killed but has resting orders"
        # (a) conservation, (b) obligations net to zero
        assert cash_total == self.cash_in, f"cash {cash_total} != deposits - withdrawals {self.cash_in}"
        assert cash_obligations == 0, cash_obligations
        assert totals == self.loaded, f"allowances {totals} != loaded {self.loaded}"
        assert obligations == dict.fromkeys(SYMBOLS, 0), obligations
        # (d) the ORDER holds are exactly the resting orders
        actual = {
            order_id: (h.account.member_id, h.asset, h.amount, h.price_fen)
            for order_id, h in ledger.orders.held.items()
        }
        assert actual == order_holds, (actual, order_holds)
        assert all(not len(book) for kind, book in ledger.holds.items() if book is not ledger.orders)
        # the controls the gate holds are the ones the events announced
        assert set(risk.halted) == self.halted
        assert risk.market_closed == self.closed
        assert risk.phase == self.phase and core.day_open == self.day_open
        assert risk.default_limits == self.limits[""]
        resting = sum(core.books[s].open_order_count() for s in SYMBOLS)
        assert resting == sum(a.open_orders for a in risk.accounts.values()), "an order of nobody's rests"

    def teardown(self) -> None:
        if self._core is None:
            return
        # Replay the whole log into a fresh core: same events, same state hash.
        fresh = ExchangeCore(INSTRUMENTS, self.stp, self.policy)
        for seq, ts, cmd, expected in self.log:
            got = encode_events(seq, ts, fresh.apply(seq, ts, cmd))
            assert got == expected, f"replay differs at seq {seq} ({cmd})"
        assert fresh.state_hash() == self.core.state_hash()

    # -- helpers for rules -----------------------------------------------------------------

    def mid(self, symbol: str) -> int:
        return self.core.books[symbol].prev_close_fen

    def open_orders(self) -> list:
        return [
            (symbol, order)
            for symbol in SYMBOLS
            for member in MEMBERS
            for order in self.core.books[symbol].open_orders(member)
        ]

    def has_open_orders(self) -> bool:
        return any(self.core.books[s].open_order_count() for s in SYMBOLS)

    def start_day(self, load_a: int | None, load_b: int | None, continuous: bool = True) -> None:
        self.day += dt.timedelta(days=1 if self.day.weekday() < 4 else 3)
        self.do(StartDay(self.day.isoformat()), dt_ns=3_600_000 * MS)
        for member in MEMBERS:
            for symbol, load in ((SYM_A, load_a), (SYM_B, load_b)):
                if load is None:
                    continue
                holding = self.core.risk.accounts[member].holdings.get(symbol) or Holding()
                committed = holding.reserved_t + holding.locked_t
                # The registry's figure: the committed part plus something, or (refused) less.
                qty = committed + load if load >= 0 else max(committed + load, 0)
                self.do(LoadHolding(member, symbol, qty))
        if continuous:
            self.do(SetTradingPhase(CONTINUOUS))

    # -- rules: money ----------------------------------------------------------------------

    @rule(member=members, amount=st.sampled_from([20_000, 100_000, 1, 0, -500]))
    def deposit(self, member, amount) -> None:
        self.do(Deposit(member, amount))

    @rule(member=members, kind=st.sampled_from(["quarter", "quarter", "too_much", "fixed", "all"]), amount=st.integers(-10, 10_000))
    def withdraw(self, member, kind, amount) -> None:
        available = self.core.risk.accounts[member].cash_available_fen
        if kind == "quarter":
            amount = available // 4 or 1
        elif kind == "all":
            amount = available or 1
        elif kind == "too_much":
            amount = available + 1
        self.do(Withdraw(member, amount))

    # -- rules: orders (five copies of the limit rule: orders are most of the traffic) ----

    def submit_limit(self, member, symbol, side, qty, offset, tif) -> None:
        price = self.mid(symbol) + offset
        self.do(SubmitOrder(member, symbol, side, qty, price, OrderType.LIMIT, tif, "c"))

    @limit_rule()
    def limit_a(self, **kwargs) -> None:
        self.submit_limit(**kwargs)

    @limit_rule()
    def limit_b(self, **kwargs) -> None:
        self.submit_limit(**kwargs)

    @limit_rule()
    def limit_c(self, **kwargs) -> None:
        self.submit_limit(**kwargs)

    @limit_rule()
    def limit_d(self, **kwargs) -> None:
        self.submit_limit(**kwargs)

    @limit_rule()
    def limit_e(self, **kwargs) -> None:
        self.submit_limit(**kwargs)

    @rule(member=members, symbol=symbols, side=sides, qty=quantities, tif=market_tifs)
    def submit_market(self, member, symbol, side, qty, tif) -> None:
        self.do(SubmitOrder(member, symbol, side, qty, None, OrderType.MARKET, tif, "m"))

    def take(self, pick, shift, qty, how, tif) -> None:
        """An order against a resting one (a fill, unless self-trade prevention or a limit
        stops it): at its price, a tick through it, or at market. Mostly from another owner;
        ``shift`` 0 is the order's own member, which may also be its linked partner."""
        live = self.open_orders()
        if not live:
            return
        symbol, order = live[pick % len(live)]
        member = MEMBERS[(MEMBERS.index(order.member_id) + shift) % len(MEMBERS)]
        side = SELL if order.side == BUY else BUY
        if how == "market":
            tif = TimeInForce.FOK if tif == TimeInForce.FOK else TimeInForce.IOC
            self.do(SubmitOrder(member, symbol, side, qty, None, OrderType.MARKET, tif, "t"))
            return
        price = order.price_fen
        if how == "through":
            price += 1 if side == BUY else -1
        self.do(SubmitOrder(member, symbol, side, qty, price, OrderType.LIMIT, tif, "t"))

    @precondition(has_open_orders)
    @take_rule()
    def take_a(self, **kwargs) -> None:
        self.take(**kwargs)

    @precondition(has_open_orders)
    @take_rule()
    def take_b(self, **kwargs) -> None:
        self.take(**kwargs)

    @rule(pick=st.integers(0, 10_000), how=st.sampled_from(["own", "own", "other", "unknown"]), member=members)
    def cancel(self, pick, how, member) -> None:
        live = self.open_orders()
        if how == "unknown" or not live:
            self.do(CancelOrder(member, SYMBOLS[pick % 2], UNKNOWN_ID + pick))
            return
        symbol, order = live[pick % len(live)]
        if how == "other":
            member = MEMBERS[(MEMBERS.index(order.member_id) + 1 + pick % 3) % len(MEMBERS)]
        else:
            member = order.member_id
        self.do(CancelOrder(member, symbol, order.order_id))

    @precondition(has_open_orders)
    @rule(
        pick=st.integers(0, 10_000),
        kind=st.sampled_from(["down", "down", "up", "up", "price", "price", "cross", "other"]),
        change=st.integers(1, 20),
        offset=st.integers(-4, 4),
    )
    def amend(self, pick, kind, change, offset) -> None:
        live = self.open_orders()
        symbol, order = live[pick % len(live)]
        member, qty, price = order.member_id, order.qty_t, order.price_fen
        if kind == "down":
            qty = max(1, qty - change)
        elif kind == "up":
            qty += change  # may need more cash or allowances than available, or pass the maximum
        elif kind == "price":
            price = self.mid(symbol) + offset
        elif kind == "cross":
            book = self.core.books[symbol]
            best = book.best_ask() if order.side == BUY else book.best_bid()
            price = best[0] if best else price + offset
        else:
            member = MEMBERS[(MEMBERS.index(member) + 1) % len(MEMBERS)]
        self.do(AmendOrder(member, symbol, order.order_id, qty, price))

    @rule(member=members, symbol=st.sampled_from([None, SYM_A, SYM_B]))
    def mass_cancel(self, member, symbol) -> None:
        self.do(MassCancel(member, symbol))

    # -- rules: member measures, market controls and limits -----------------------------
    # One rule for all of them, so that they stay a minority of the traffic: each of them
    # stops some members or the whole market from trading for a while.

    CONTROLS = [
        "kill", "status", "halt", "resume", "close", "reopen", "phase", "phase",
        "risk_limits", "risk_limits", "relax", "instrument_limits", "load_holding", "end_day", "start_day",
    ]

    @rule(action=st.sampled_from(CONTROLS), data=st.data())
    def control(self, action, data) -> None:
        draw = data.draw
        if action == "kill":
            self.do(KillSwitch(draw(members)))
        elif action == "status":
            status = draw(st.sampled_from(
                [ACTIVE, ACTIVE, ACTIVE, MemberStatus.RESTRICTED, MemberStatus.SUSPENDED, MemberStatus.FROZEN]
            ))
            self.do(SetMemberStatus(draw(members), status))
        elif action in ("halt", "resume"):
            symbol = draw(symbols)
            self.do(HaltInstrument(symbol) if action == "halt" else ResumeInstrument(symbol))
        elif action == "close":
            self.do(CloseMarket())
        elif action == "reopen":
            self.do(ReopenMarket())
        elif action == "phase":
            phase = draw(st.sampled_from([
                CONTINUOUS, CONTINUOUS, TradingPhase.BREAK, TradingPhase.BREAK, TradingPhase.POST_CLOSE,
                TradingPhase.PRE_OPEN,
            ]))
            self.do(SetTradingPhase(phase))
        elif action == "risk_limits":
            self.do(SetRiskLimits(
                draw(st.sampled_from([None, *MEMBERS])),
                draw(st.sampled_from([None, None, 5_000, 20_000, 10**10, 0])),  # max order value
                draw(st.sampled_from([None, None, 1, 5, 50])),  # orders per second
                draw(st.sampled_from([None, None, 1, 3, 100])),  # burst
                draw(st.sampled_from([None, None, 1, 3, 10_000, -1])),  # max open orders
            ))
        elif action == "relax":
            self.do(SetRiskLimits(draw(st.sampled_from([None, *MEMBERS])), 10**10, 50, 100, 10_000))
        elif action == "instrument_limits":
            self.do(SetInstrumentLimits(
                draw(symbols), draw(st.sampled_from([None, 0, 100, 500, 1_000, 2_000])),
                draw(st.sampled_from([None, None, 10, 60])),
            ))
        elif action == "load_holding":  # mostly refused: during trading, or below what is committed
            self.do(LoadHolding(draw(members), draw(symbols), draw(st.integers(0, 300))))
        elif action == "end_day":  # the next day_cycle or start_day opens the next day
            self.do(EndDay())
        elif action == "start_day":
            if self.day_open:
                self.do(StartDay(self.day.isoformat()))  # refused: a day is open
            else:
                load = draw(st.sampled_from([None, 0, 50]))
                self.start_day(load, load)

    @rule(
        member=members,
        status=st.sampled_from([
            ACTIVE, ACTIVE, MemberStatus.RESTRICTED, MemberStatus.RESTRICTED, MemberStatus.SUSPENDED, MemberStatus.FROZEN,
        ]),
    )
    def set_status(self, member, status) -> None:
        """Member measures; RESTRICTED most often, as it is the one with rules of its own."""
        self.do(SetMemberStatus(member, status))

    @rule()
    def back_to_normal(self) -> None:
        """Lift what stops trading (closure, halts, member measures, phase), one command each,
        so that the machine spends most of its steps trading."""
        if self.closed:
            self.do(ReopenMarket())
        for symbol in sorted(self.halted):
            self.do(ResumeInstrument(symbol))
        for member in MEMBERS:
            if self.status[member] != ACTIVE or self.killed[member]:
                self.do(SetMemberStatus(member, ACTIVE))
        if self.day_open and self.phase != CONTINUOUS:
            self.do(SetTradingPhase(CONTINUOUS))  # refused after POST_CLOSE

    @rule(wait_ms=st.sampled_from([1, 200, 1_000, 5_000]))
    def wait(self, wait_ms) -> None:
        """Let time pass (refills rate buckets): a harmless command after the pause."""
        self.do(CancelOrder(MEMBERS[0], SYM_A, UNKNOWN_ID), dt_ns=wait_ms * MS)

    # -- rules: the trading day ------------------------------------------------------------

    @rule(
        load_a=st.sampled_from([None, 0, 20, 100, -5]),
        load_b=st.sampled_from([None, 0, 20, 100, -5]),
        continuous=st.sampled_from([True, True, True, False]),
    )
    def day_cycle(self, load_a, load_b, continuous) -> None:
        if self.day_open:
            self.do(EndDay(), dt_ns=3_600_000 * MS)
        self.start_day(load_a, load_b, continuous)

    # -- rules: snapshots ------------------------------------------------------------------

    @rule()
    def snapshot_restore(self) -> None:
        """Continue on a core restored from a snapshot of the live one."""
        state = decode_state(encode_state(self.core.state()))
        fresh = ExchangeCore(INSTRUMENTS, self.stp, self.policy)
        fresh.restore(state)
        assert fresh.state_hash() == self.core.state_hash()
        self.core = fresh
        self.check_state()


RiskMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True,
)
TestRiskMachine = RiskMachine.TestCase
