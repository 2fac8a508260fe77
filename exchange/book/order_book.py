"""The continuous price-time-priority order book of one instrument (open bidding).

Behaviour, in the order the book applies it:

* **Validation before any change.** A new order is checked in this order, and the first
  failure is the reject reason: quantity positive, a whole number of lots, not above the
  maximum for continuous trading; then for a market order no price and IOC/FOK only, for a
  limit order a positive price, a multiple of the tick, inside the day's band.
* **Matching.** An incoming order trades against the best opposite level while prices cross,
  oldest order first, always at the resting order's price. A market order is an order limited
  by the band (buy up to the upper limit, sell down to the lower) that never rests.
* **Self-trade prevention.** An incoming order never trades with a resting order of the same
  owner: the member itself, or the linked group the risk room names for it. With the default ``CANCEL_NEWEST`` the incoming remainder is cancelled when it
  reaches such an order; ``CANCEL_OLDEST`` cancels the resting order and goes on matching;
  ``CANCEL_BOTH`` cancels both.
* **Time in force.** DAY and GTC remainders rest; IOC and market remainders are cancelled; a
  FOK order first checks that it can fill completely (counting only what matching would
  reach) and otherwise is cancelled without touching the book.
* **Events** for a new order come in this order: ``OrderAccepted``, then each execution
  (``OrderFilled``, with any self-trade cancels of resting orders in between), then the
  cancel of an unfilled remainder, if any.
* **Amend**: the quantity is the new open quantity. Down at the same price keeps priority;
  a new price or a larger quantity sends the order to the back of its (new) level, and a new
  price that crosses trades at once as the aggressor.
* **The band holds for resting orders too.** At the open, and when the band is narrowed
  intraday, orders outside it are cancelled (``PRICE_OUTSIDE_BAND``), so nothing ever trades
  outside the band in force.
* **Mass cancel, expiry and the band checks** take orders in ascending order id, so their
  event order never depends on hashing.

How it is made fast (see ``bench/``). Each side is a dict ``price -> _Level`` plus a binary
heap of those prices; the heap's top is always a level with live orders, so the best price is
``heap[0]``. A level that empties away from the top stays in the dict and the heap, dormant,
and is reused when an order arrives at its price; it is dropped when it reaches the top. This
avoids creating and deleting levels in a sorted container on every order, one of the known
CPython traps. Within a level, orders wait in a deque; a cancel only zeroes the order's open
quantity (O(1) at any depth) and matching skips such entries; a level compacts its deque when
dead entries outnumber live ones, which keeps memory and the amortised cost bounded. Orders
are indexed per member (``member -> {order id -> order}``), which is what cancel and amend
look up, and keeps every dict small: one huge dict of all orders stalls for 100+ ms when it
resizes under churn. Resting orders are msgspec Structs with ``gc=False``: they hold only
atomic values, form no cycles, and the collector never walks them.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

import msgspec

from exchange.model.commands import AmendOrder, CancelOrder, SubmitOrder
from exchange.model.enums import CancelReason, OrderType, SelfTradePolicy, Side, TimeInForce
from exchange.model.events import (
    AmendRejected,
    CancelRejected,
    DayClosed,
    DayStarted,
    Event,
    InstrumentLimitsChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from exchange.model.instruments import Instrument
from exchange.model.rejects import RejectReason
from exchange.model.units import price_band, round_half_up_to_tick

BUY = Side.BUY
SELL = Side.SELL
DAY = TimeInForce.DAY
GTC = TimeInForce.GTC
IOC = TimeInForce.IOC
FOK = TimeInForce.FOK
LIMIT = OrderType.LIMIT
MARKET = OrderType.MARKET
CANCEL_NEWEST = SelfTradePolicy.CANCEL_NEWEST
CANCEL_OLDEST = SelfTradePolicy.CANCEL_OLDEST
R = RejectReason
# Enum members as module constants: looking one up on its class costs ~77 ns, ~10x more.
BY_FOK_UNFILLABLE = CancelReason.FOK_UNFILLABLE
BY_IOC_REMAINDER = CancelReason.IOC_REMAINDER
BY_MEMBER = CancelReason.MEMBER
BY_PRICE_OUTSIDE_BAND = CancelReason.PRICE_OUTSIDE_BAND
BY_SELF_TRADE = CancelReason.SELF_TRADE

_COMPACT_MIN_DEAD = 32


class RestingOrder(msgspec.Struct, gc=False):
    """An open order in the book. ``qty_t`` is the open (leaves) quantity; 0 marks a dead
    queue entry (cancelled, filled or moved by an amend). ``owner`` is the self-trade key."""

    order_id: int
    member_id: str
    side: Side
    price_fen: int
    qty_t: int
    tif: TimeInForce
    filled_t: int = 0
    owner: str = ""  # who may not trade with whom: the member, or its linked group


class TradeIds:
    """The exchange-wide trade id counter, shared by every book of an engine."""

    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        self.last = last


class _Level:
    """The orders at one price. A level with ``qty_t == 0`` has no live order (empty)."""

    __slots__ = ("price_fen", "orders", "qty_t", "dead")

    def __init__(self, price_fen: int) -> None:
        self.price_fen = price_fen
        self.orders: deque[RestingOrder] = deque()
        self.qty_t = 0  # sum of the live orders' open quantities
        self.dead = 0  # queue entries whose order left by cancel or amend

    @property
    def live(self) -> int:
        return len(self.orders) - self.dead

    def compact(self) -> None:
        self.orders = deque([order for order in self.orders if order.qty_t])
        self.dead = 0


class DayStatistics(msgspec.Struct):
    """The day's continuous trading figures of one instrument."""

    open_fen: int | None = None
    high_fen: int | None = None
    low_fen: int | None = None
    volume_t: int = 0
    turnover_fen: int = 0
    trade_count: int = 0


class OrderBook:
    """One instrument's book. Methods take a command and return the events it caused."""

    def __init__(
        self,
        instrument: Instrument,
        trade_ids: TradeIds | None = None,
        self_trade_policy: SelfTradePolicy = CANCEL_NEWEST,
    ) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.trade_ids = trade_ids if trade_ids is not None else TradeIds()
        self.self_trade_policy = self_trade_policy
        self._tick = instrument.tick_fen
        self._lot = instrument.lot_t
        self._max_qty = instrument.max_order_qty_t
        self.band_bps = instrument.band_bps
        self.prev_close_fen = instrument.reference_price_fen
        self.trading_day = ""
        self.lower_fen, self.upper_fen = price_band(self.prev_close_fen, self.band_bps, self._tick)
        self.stats = DayStatistics()
        self._bids: dict[int, _Level] = {}
        self._asks: dict[int, _Level] = {}
        self._bid_heap: list[int] = []  # negated prices: a min-heap gives the highest bid
        self._ask_heap: list[int] = []
        self._by_member: dict[str, dict[int, RestingOrder]] = {}

    # -- new orders ------------------------------------------------------------------------

    def submit(self, order_id: int, cmd: SubmitOrder, owner: str | None = None) -> list[Event]:
        """Validate, match and (for DAY/GTC) rest a new order with the given exchange id.
        ``owner`` is the self-trade key (default: the member)."""
        qty = cmd.qty_t
        price = cmd.price_fen
        # The common case in one expression; the reject reason is worked out only on failure.
        if not (
            cmd.order_type == LIMIT and price is not None and self.lower_fen <= price <= self.upper_fen
            and 0 < qty <= self._max_qty and not qty % self._lot and not price % self._tick
        ):
            reason, price = self.validate(cmd)
            if reason is not None:
                return [OrderRejected(cmd.member_id, self.symbol, cmd.client_order_id, reason)]
        member = cmd.member_id
        side = cmd.side
        tif = cmd.tif
        events: list[Event] = [
            OrderAccepted(order_id, member, self.symbol, side, cmd.order_type, tif, price, qty, cmd.client_order_id)
        ]
        owner = owner or member
        if tif == FOK and not self._can_fill(owner, side, price, qty):
            events.append(OrderCancelled(order_id, member, self.symbol, qty, BY_FOK_UNFILLABLE))
            return events
        self._enter(order_id, member, owner, side, price, qty, tif, 0, events)
        return events

    def validate(self, cmd: SubmitOrder) -> tuple[RejectReason | None, int]:
        """(the reject reason or None, the price the order may trade up or down to)."""
        qty = cmd.qty_t
        price = cmd.price_fen
        if (
            cmd.order_type == LIMIT and price is not None and self.lower_fen <= price <= self.upper_fen
            and 0 < qty <= self._max_qty and not qty % self._lot and not price % self._tick
        ):
            return None, price
        reason = self._check_qty(cmd.qty_t)
        price = cmd.price_fen
        if cmd.order_type == MARKET:
            reason = reason or self._check_market(price, cmd.tif)
            price = self.upper_fen if cmd.side == BUY else self.lower_fen
        else:
            reason = reason or self._check_price(price)
        return reason, price if price is not None else 0

    def validate_amend(self, cmd: AmendOrder) -> RejectReason | None:
        """The reason ``amend`` would refuse this amend, or None."""
        order = self._find(cmd.member_id, cmd.order_id)
        if order is None:
            return R.UNKNOWN_ORDER
        reason = self._check_qty(cmd.qty_t) or self._check_price(cmd.price_fen)
        if reason is None and cmd.price_fen == order.price_fen and cmd.qty_t == order.qty_t:
            reason = R.AMEND_NO_CHANGE
        return reason

    def _check_qty(self, qty: int) -> RejectReason | None:
        if qty <= 0:
            return R.QTY_NOT_POSITIVE
        if qty % self._lot:
            return R.QTY_NOT_LOT_MULTIPLE
        if qty > self._max_qty:
            return R.QTY_ABOVE_MAXIMUM
        return None

    def _check_price(self, price: int | None) -> RejectReason | None:
        if price is None or price <= 0:
            return R.PRICE_NOT_POSITIVE
        if price % self._tick:
            return R.PRICE_NOT_TICK_MULTIPLE
        if price < self.lower_fen or price > self.upper_fen:
            return R.PRICE_OUTSIDE_BAND
        return None

    @staticmethod
    def _check_market(price: int | None, tif: TimeInForce) -> RejectReason | None:
        if price is not None:
            return R.MARKET_ORDER_WITH_PRICE
        if tif == DAY or tif == GTC:
            return R.MARKET_ORDER_MUST_BE_IMMEDIATE
        return None

    def _enter(
        self, order_id: int, member: str, owner: str, side: Side, price: int, qty: int, tif: TimeInForce,
        filled: int, events: list[Event],
    ) -> None:
        """Match an accepted order, then rest or cancel what is left (``filled`` so far)."""
        if side == BUY:
            heap = self._ask_heap
            if heap and heap[0] <= price:
                left = self._match(order_id, member, owner, True, price, qty, self._asks, heap, 1, events)
                filled += qty - left
                qty = left
        else:
            heap = self._bid_heap
            if heap and -heap[0] >= price:
                left = self._match(order_id, member, owner, False, price, qty, self._bids, heap, -1, events)
                filled += qty - left
                qty = left
        if not qty:
            return
        if tif != DAY and tif != GTC:
            events.append(OrderCancelled(order_id, member, self.symbol, qty, BY_IOC_REMAINDER))
            return
        self._rest(RestingOrder(order_id, member, side, price, qty, tif, filled, owner))

    def _match(
        self, taker_id: int, member: str, owner: str, taker_is_buy: bool, limit_price: int, qty: int,
        levels: dict[int, _Level], heap: list[int], sign: int, events: list[Event],
    ) -> int:
        """Trade an incoming order against the opposite side while prices cross; return what
        is left of ``qty``.

        ``sign`` is +1 when the resting side is asks (the heap holds prices) and -1 for bids
        (the heap holds negated prices), so ``sign * heap[0]`` is the best resting price. The
        day's figures and the trade id are kept in locals and written back once.
        """
        limit = limit_price * sign
        symbol = self.symbol
        by_member = self._by_member
        trade_id = self.trade_ids.last
        volume = turnover = 0
        aggressor = BUY if taker_is_buy else SELL
        while qty and heap and heap[0] <= limit:
            level = levels[sign * heap[0]]
            price = level.price_fen
            queue = level.orders
            level_qty = level.qty_t
            level_volume = 0
            while qty and level_qty:
                maker = queue[0]
                maker_qty = maker.qty_t
                if not maker_qty:
                    queue.popleft()
                    level.dead -= 1
                    continue
                if maker.owner == owner:
                    level.qty_t = level_qty
                    policy = self.self_trade_policy
                    if policy != CANCEL_NEWEST:
                        events.append(OrderCancelled(
                            maker.order_id, maker.member_id, symbol, self._unlink(maker, level), BY_SELF_TRADE
                        ))
                        queue = level.orders  # the removal may have compacted the queue
                        level_qty = level.qty_t
                    if policy != CANCEL_OLDEST:
                        events.append(OrderCancelled(taker_id, member, symbol, qty, BY_SELF_TRADE))
                        qty = 0
                    continue
                fill = qty if qty < maker_qty else maker_qty
                qty -= fill
                maker_qty -= fill
                maker.qty_t = maker_qty
                maker.filled_t += fill
                level_qty -= fill
                level_volume += fill
                if not maker_qty:
                    queue.popleft()
                    del by_member[maker.member_id][maker.order_id]
                trade_id += 1
                if taker_is_buy:
                    events.append(OrderFilled(
                        trade_id, symbol, price, fill, aggressor,
                        taker_id, member, qty, maker.order_id, maker.member_id, maker_qty,
                    ))
                else:
                    events.append(OrderFilled(
                        trade_id, symbol, price, fill, aggressor,
                        maker.order_id, maker.member_id, maker_qty, taker_id, member, qty,
                    ))
            level.qty_t = level_qty
            if level_volume:
                volume += level_volume
                turnover += level_volume * price
                self._record_price(price)
            if not level_qty:
                self._drop_empty_top(levels, heap, sign)
        stats = self.stats
        stats.trade_count += trade_id - self.trade_ids.last
        stats.volume_t += volume
        stats.turnover_fen += turnover
        self.trade_ids.last = trade_id
        return qty

    def _record_price(self, price: int) -> None:
        stats = self.stats
        high, low = stats.high_fen, stats.low_fen
        if high is None or low is None:  # the day's first trade: open, high and low are set together
            stats.open_fen = stats.high_fen = stats.low_fen = price
        elif price > high:
            stats.high_fen = price
        elif price < low:
            stats.low_fen = price

    def _can_fill(self, owner: str, side: Side, price: int, qty: int) -> bool:
        """Whether matching would fill the whole quantity (the FOK pre-check). It counts what
        matching would reach: under ``CANCEL_OLDEST`` the member's own orders are skipped (they
        would be cancelled), otherwise matching stops at the first of them."""
        if side == BUY:
            levels, prices = self._asks, sorted(p for p in self._asks if p <= price)
        else:
            levels, prices = self._bids, sorted((p for p in self._bids if p >= price), reverse=True)
        skip_own = self.self_trade_policy == CANCEL_OLDEST
        for level_price in prices:
            for maker in levels[level_price].orders:
                if not maker.qty_t:
                    continue
                if maker.owner == owner:
                    if skip_own:
                        continue
                    return False
                qty -= maker.qty_t
                if qty <= 0:
                    return True
        return False

    # -- resting orders --------------------------------------------------------------------

    def _rest(self, order: RestingOrder) -> None:
        price = order.price_fen
        if order.side == BUY:
            levels, heap, key = self._bids, self._bid_heap, -price
        else:
            levels, heap, key = self._asks, self._ask_heap, price
        level = levels.get(price)
        if level is None:
            level = levels[price] = _Level(price)
            heapq.heappush(heap, key)
        level.orders.append(order)
        level.qty_t += order.qty_t
        orders = self._by_member.get(order.member_id)
        if orders is None:
            orders = self._by_member[order.member_id] = {}
        orders[order.order_id] = order

    def _unlink(self, order: RestingOrder, level: _Level) -> int:
        """Take a live order out of its level and the index; return its open quantity.

        The queue entry stays behind, dead (``qty_t == 0``), until matching or compaction
        drops it, so a cancel costs the same at any depth. The level may be left empty; the
        caller decides what happens to it.
        """
        qty = order.qty_t
        order.qty_t = 0
        level.qty_t -= qty
        level.dead += 1
        del self._by_member[order.member_id][order.order_id]
        dead = level.dead
        if dead > _COMPACT_MIN_DEAD and dead + dead > len(level.orders):
            level.compact()
        return qty

    def _withdraw(self, order: RestingOrder) -> int:
        """Remove a resting order from the book and return its open quantity."""
        if order.side == BUY:
            levels, heap, sign = self._bids, self._bid_heap, -1
        else:
            levels, heap, sign = self._asks, self._ask_heap, 1
        level = levels[order.price_fen]
        qty = self._unlink(order, level)
        if not level.qty_t:
            level.orders.clear()
            level.dead = 0
            self._drop_empty_top(levels, heap, sign)
        return qty

    @staticmethod
    def _drop_empty_top(levels: dict[int, _Level], heap: list[int], sign: int) -> None:
        """Restore the invariant that the heap's top is a level with live orders."""
        while heap:
            level = levels[sign * heap[0]]
            if level.qty_t:
                return
            heapq.heappop(heap)
            del levels[level.price_fen]

    # -- cancel and amend ------------------------------------------------------------------

    def _find(self, member_id: str, order_id: int) -> RestingOrder | None:
        orders = self._by_member.get(member_id)
        return orders.get(order_id) if orders else None

    def cancel(self, cmd: CancelOrder) -> list[Event]:
        orders = self._by_member.get(cmd.member_id)
        order = orders.get(cmd.order_id) if orders else None
        if order is None:
            return [CancelRejected(cmd.member_id, self.symbol, cmd.order_id, R.UNKNOWN_ORDER)]
        qty = self._withdraw(order)
        return [OrderCancelled(order.order_id, order.member_id, self.symbol, qty, BY_MEMBER)]

    def amend(self, cmd: AmendOrder) -> list[Event]:
        reason = self.validate_amend(cmd)
        if reason is not None:
            return [AmendRejected(cmd.member_id, self.symbol, cmd.order_id, reason)]
        order = self._find(cmd.member_id, cmd.order_id)
        assert order is not None
        if cmd.price_fen == order.price_fen and cmd.qty_t < order.qty_t:
            self._reduce(order, cmd.qty_t)
            return [OrderAmended(order.order_id, order.member_id, self.symbol, order.price_fen, order.qty_t, True)]
        self._withdraw(order)
        events: list[Event] = [OrderAmended(order.order_id, order.member_id, self.symbol, cmd.price_fen, cmd.qty_t, False)]
        self._enter(
            order.order_id, order.member_id, order.owner, order.side, cmd.price_fen, cmd.qty_t, order.tif,
            order.filled_t, events,
        )
        return events

    def _reduce(self, order: RestingOrder, qty: int) -> None:
        levels = self._bids if order.side == BUY else self._asks
        levels[order.price_fen].qty_t -= order.qty_t - qty
        order.qty_t = qty

    def mass_cancel(self, member_id: str, reason: CancelReason = BY_MEMBER) -> list[OrderCancelled]:
        """Cancel every open order of a member, in ascending order id."""
        orders = self._by_member.get(member_id)
        if not orders:
            return []
        return self._cancel_all(sorted(orders.values(), key=_order_id), reason)

    def _cancel_all(self, orders: Iterable[RestingOrder], reason: CancelReason) -> list[OrderCancelled]:
        symbol = self.symbol
        return [
            OrderCancelled(order.order_id, order.member_id, symbol, self._withdraw(order), reason)
            for order in orders
        ]

    # -- the trading day -------------------------------------------------------------------

    def start_day(self, trading_day: str) -> list[Event]:
        """Open a day: new band from the previous close; GTC orders outside it are cancelled."""
        self.trading_day = trading_day
        self.stats = DayStatistics()
        self.lower_fen, self.upper_fen = price_band(self.prev_close_fen, self.band_bps, self._tick)
        events: list[Event] = [DayStarted(trading_day, self.symbol, self.prev_close_fen, self.lower_fen, self.upper_fen)]
        events.extend(self._cancel_outside_band())
        return events

    def end_day(self) -> list[Event]:
        """Close the day: day orders expire; the close is the day's VWAP, half-up to the tick."""
        events: list[Event] = []
        for order in self._all_orders():
            if order.tif == DAY:
                events.append(OrderExpired(order.order_id, order.member_id, self.symbol, self._withdraw(order)))
        self._purge_dormant_levels()
        stats = self.stats
        if stats.volume_t:
            self.prev_close_fen = round_half_up_to_tick(stats.turnover_fen, stats.volume_t, self._tick)
        lower, upper = price_band(self.prev_close_fen, self.band_bps, self._tick)
        events.append(DayClosed(
            self.trading_day, self.symbol, stats.open_fen, stats.high_fen, stats.low_fen, self.prev_close_fen,
            stats.volume_t, stats.turnover_fen, stats.trade_count, lower, upper,
        ))
        return events

    def cancel_entered_since(self, first_order_id: int, reason: CancelReason) -> list[OrderCancelled]:
        """Cancel every open order whose id is ``first_order_id`` or later (what was entered
        since then: ids are sequence numbers), in ascending order id. Voiding a day uses it."""
        return self._cancel_all([o for o in self._all_orders() if o.order_id >= first_order_id], reason)

    def _purge_dormant_levels(self) -> None:
        for levels, heap, sign in ((self._bids, self._bid_heap, -1), (self._asks, self._ask_heap, 1)):
            for price in [p for p, level in levels.items() if not level.qty_t]:
                del levels[price]
            heap[:] = sorted(sign * price for price in levels)

    def _all_orders(self) -> list[RestingOrder]:
        """Every open order, in ascending order id."""
        return sorted((o for orders in self._by_member.values() for o in orders.values()), key=_order_id)

    def set_limits(self, band_bps: int | None, max_order_qty_t: int | None) -> list[Event]:
        """Change the band (from the previous close) or the maximum order quantity at once.

        Orders resting outside a narrowed band are cancelled (``PRICE_OUTSIDE_BAND``, as at the
        open), so no trade ever prints outside the band in force. A lower maximum applies to
        new orders and amends; resting orders above it keep their place."""
        if band_bps is not None:
            self.band_bps = band_bps
            self.lower_fen, self.upper_fen = price_band(self.prev_close_fen, band_bps, self._tick)
        if max_order_qty_t is not None:
            self._max_qty = max_order_qty_t
        events: list[Event] = [InstrumentLimitsChanged(self.symbol, self.band_bps, self._max_qty, self.lower_fen, self.upper_fen)]
        events.extend(self._cancel_outside_band())
        return events

    def _cancel_outside_band(self) -> list[OrderCancelled]:
        outside = [o for o in self._all_orders() if not self.lower_fen <= o.price_fen <= self.upper_fen]
        return self._cancel_all(outside, BY_PRICE_OUTSIDE_BAND)

    # -- queries ---------------------------------------------------------------------------

    def best_bid(self) -> tuple[int, int] | None:
        """(price, total open quantity) of the best bid, or None."""
        if not self._bid_heap:
            return None
        level = self._bids[-self._bid_heap[0]]
        return level.price_fen, level.qty_t

    def best_ask(self) -> tuple[int, int] | None:
        if not self._ask_heap:
            return None
        level = self._asks[self._ask_heap[0]]
        return level.price_fen, level.qty_t

    def depth(self, max_levels: int | None = None) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """L2: (bids best first, asks best first), each level (price, quantity, order count)."""
        bids = [(p, lv.qty_t, lv.live) for p, lv in sorted(self._bids.items(), reverse=True) if lv.live]
        asks = [(p, lv.qty_t, lv.live) for p, lv in sorted(self._asks.items()) if lv.live]
        return bids[:max_levels], asks[:max_levels]

    def queue(self, side: Side, price_fen: int) -> list[RestingOrder]:
        """The live orders at one price, in time priority."""
        level = (self._bids if side == BUY else self._asks).get(price_fen)
        return [o for o in level.orders if o.qty_t] if level else []

    def open_orders(self, member_id: str) -> list[RestingOrder]:
        """A member's open orders in this book, in ascending order id."""
        return sorted(self._by_member.get(member_id, {}).values(), key=_order_id)

    def order(self, member_id: str, order_id: int) -> RestingOrder | None:
        """A member's open order by id; another member's order is not visible."""
        return self._find(member_id, order_id)

    def open_order_count(self) -> int:
        return sum(len(orders) for orders in self._by_member.values())

    # -- state -----------------------------------------------------------------------------

    def state(self) -> BookState:
        """Everything needed to rebuild the book: levels in price order, orders in priority."""
        bids = [o for _, lv in sorted(self._bids.items(), reverse=True) for o in lv.orders if o.qty_t]
        asks = [o for _, lv in sorted(self._asks.items()) for o in lv.orders if o.qty_t]
        return BookState(
            self.symbol, self.trading_day, self.prev_close_fen, self.lower_fen, self.upper_fen,
            self.band_bps, self._max_qty, msgspec.structs.replace(self.stats), bids, asks,
        )

    def restore(self, state: BookState) -> None:
        assert state.symbol == self.symbol and not self._by_member
        self.trading_day = state.trading_day
        self.prev_close_fen = state.prev_close_fen
        self.lower_fen, self.upper_fen = state.lower_fen, state.upper_fen
        self.band_bps, self._max_qty = state.band_bps, state.max_order_qty_t
        self.stats = msgspec.structs.replace(state.stats)
        for order in (*state.bids, *state.asks):
            self._rest(msgspec.structs.replace(order, owner=order.owner or order.member_id))


class BookState(msgspec.Struct, array_like=True):
    symbol: str
    trading_day: str
    prev_close_fen: int
    lower_fen: int
    upper_fen: int
    band_bps: int
    max_order_qty_t: int
    stats: DayStatistics
    bids: list[RestingOrder]
    asks: list[RestingOrder]


def _order_id(order: RestingOrder) -> int:
    return order.order_id
