"""A deliberately naive reference order book: the oracle for ``exchange.book.OrderBook``.

Written from the specification (the docstring of ``exchange/book/order_book.py`` and of the
model), not from the real book's structure. Everything is a plain list and a linear scan:

* every resting order of both sides lives in ONE list, ``self.orders``; each carries a
  priority ``stamp`` taken from a counter when it (re)enters the book;
* the best price is a ``max``/``min`` over that list; the next maker is the best-priced, then
  lowest-stamped order of the opposite side;
* a FOK order's "can it fill completely?" is answered by running the very same matching on a
  deep copy of the book and adding up the fills (a self-trade cancel is not a fill), so it
  counts exactly what matching would reach, by construction;
* self-trade prevention compares each order's ``owner`` (the member, or the linked group the
  caller names), exactly as the spec words it;
* the day's statistics are the list of the day's trades, summarised at the close;
* ``set_limits`` changes what new orders and amends are checked against, and cancels the
  orders a narrowed band leaves outside it, as the open does.

Slow on purpose; correct by inspection. It returns the same event objects as the real book.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

from exchange.model.commands import AmendOrder, CancelOrder, SubmitOrder
from exchange.model.enums import CancelReason, OrderType, SelfTradePolicy, Side, TimeInForce
from exchange.model.events import (
    AmendRejected,
    CancelRejected,
    DayClosed,
    DayStarted,
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


class TradeIdCounter(Protocol):
    """What the book needs of a trade id counter: ``Counter`` or ``exchange.book.TradeIds``."""

    last: int


class Counter:
    """A trade id counter (same shape as ``exchange.book.TradeIds``: one ``last`` field)."""

    def __init__(self, last: int = 0) -> None:
        self.last = last


@dataclass
class RefOrder:
    order_id: int
    member_id: str
    side: Side
    price_fen: int
    qty_t: int  # open (leaves) quantity
    tif: TimeInForce
    stamp: int  # time priority: smaller is older
    owner: str = ""  # the self-trade key: the member, or its linked group


class ReferenceBook:
    def __init__(
        self,
        instrument: Instrument,
        trade_ids: TradeIdCounter | None = None,
        self_trade_policy: SelfTradePolicy = SelfTradePolicy.CANCEL_NEWEST,
    ) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.trade_ids: TradeIdCounter = trade_ids if trade_ids is not None else Counter()
        self.self_trade_policy = self_trade_policy
        self.band_bps = instrument.band_bps
        self.max_order_qty_t = instrument.max_order_qty_t
        self.prev_close_fen = instrument.reference_price_fen
        self.trading_day = ""
        self.lower_fen, self.upper_fen = self._band(self.prev_close_fen)
        self.orders: list[RefOrder] = []  # every resting order, both sides
        self.trades_today: list[tuple[int, int]] = []  # (price, qty) in trade order
        self.next_stamp = 0

    # -- helpers -------------------------------------------------------------------------

    def _band(self, close: int) -> tuple[int, int]:
        return price_band(close, self.band_bps, self.instrument.tick_fen)

    def _stamp(self) -> int:
        self.next_stamp += 1
        return self.next_stamp

    def _qty_problem(self, qty: int) -> RejectReason | None:
        if qty <= 0:
            return RejectReason.QTY_NOT_POSITIVE
        if qty % self.instrument.lot_t != 0:
            return RejectReason.QTY_NOT_LOT_MULTIPLE
        if qty > self.max_order_qty_t:
            return RejectReason.QTY_ABOVE_MAXIMUM
        return None

    def _limit_price_problem(self, price: int | None) -> RejectReason | None:
        if price is None or price <= 0:
            return RejectReason.PRICE_NOT_POSITIVE
        if price % self.instrument.tick_fen != 0:
            return RejectReason.PRICE_NOT_TICK_MULTIPLE
        if price < self.lower_fen or price > self.upper_fen:
            return RejectReason.PRICE_OUTSIDE_BAND
        return None

    def _find(self, member_id: str, order_id: int) -> RefOrder | None:
        for order in self.orders:
            if order.order_id == order_id and order.member_id == member_id:
                return order
        return None

    @staticmethod
    def _crosses(taker: RefOrder, maker: RefOrder) -> bool:
        if maker.side == taker.side:
            return False
        if taker.side == Side.BUY:
            return maker.price_fen <= taker.price_fen
        return maker.price_fen >= taker.price_fen

    def _next_maker(self, taker: RefOrder) -> RefOrder | None:
        """The best-priced, then oldest, resting order the taker's price reaches."""
        best: RefOrder | None = None
        for order in self.orders:
            if not self._crosses(taker, order):
                continue
            if best is None:
                best = order
                continue
            if taker.side == Side.BUY:
                better_price = order.price_fen < best.price_fen
            else:
                better_price = order.price_fen > best.price_fen
            if better_price or (order.price_fen == best.price_fen and order.stamp < best.stamp):
                best = order
        return best

    # -- matching ------------------------------------------------------------------------

    def _match(self, taker: RefOrder, events: list) -> None:
        """Trade ``taker`` (not in the book) until it is done or nothing crosses."""
        policy = self.self_trade_policy
        while taker.qty_t > 0:
            maker = self._next_maker(taker)
            if maker is None:
                return
            if maker.owner == taker.owner:
                if policy in (SelfTradePolicy.CANCEL_OLDEST, SelfTradePolicy.CANCEL_BOTH):
                    self.orders.remove(maker)
                    events.append(OrderCancelled(
                        maker.order_id, maker.member_id, self.symbol, maker.qty_t, CancelReason.SELF_TRADE))
                if policy in (SelfTradePolicy.CANCEL_NEWEST, SelfTradePolicy.CANCEL_BOTH):
                    events.append(OrderCancelled(
                        taker.order_id, taker.member_id, self.symbol, taker.qty_t, CancelReason.SELF_TRADE))
                    taker.qty_t = 0
                continue
            qty = min(taker.qty_t, maker.qty_t)
            taker.qty_t -= qty
            maker.qty_t -= qty
            if maker.qty_t == 0:
                self.orders.remove(maker)
            price = maker.price_fen  # always the resting order's price
            self.trades_today.append((price, qty))
            self.trade_ids.last += 1
            buy, sell = (taker, maker) if taker.side == Side.BUY else (maker, taker)
            events.append(OrderFilled(
                self.trade_ids.last, self.symbol, price, qty, taker.side,
                buy.order_id, buy.member_id, buy.qty_t,
                sell.order_id, sell.member_id, sell.qty_t,
            ))

    def _would_fill_completely(self, taker: RefOrder) -> bool:
        scratch = copy.deepcopy(self)
        trial: list = []
        scratch._match(copy.deepcopy(taker), trial)
        return sum(e.qty_t for e in trial if isinstance(e, OrderFilled)) == taker.qty_t

    def _enter(self, taker: RefOrder, events: list) -> None:
        self._match(taker, events)
        if taker.qty_t == 0:
            return
        if taker.tif in (TimeInForce.DAY, TimeInForce.GTC):
            taker.stamp = self._stamp()
            self.orders.append(taker)
        else:
            events.append(OrderCancelled(
                taker.order_id, taker.member_id, self.symbol, taker.qty_t, CancelReason.IOC_REMAINDER))

    # -- commands ------------------------------------------------------------------------

    def validate(self, cmd: SubmitOrder) -> tuple[RejectReason | None, int]:
        """(the reject reason or None, the price the order may trade up or down to)."""
        reason = self._qty_problem(cmd.qty_t)
        if cmd.order_type == OrderType.MARKET:
            if reason is None and cmd.price_fen is not None:
                reason = RejectReason.MARKET_ORDER_WITH_PRICE
            if reason is None and cmd.tif not in (TimeInForce.IOC, TimeInForce.FOK):
                reason = RejectReason.MARKET_ORDER_MUST_BE_IMMEDIATE
            return reason, self.upper_fen if cmd.side == Side.BUY else self.lower_fen
        if reason is None:
            reason = self._limit_price_problem(cmd.price_fen)
        return reason, cmd.price_fen if cmd.price_fen is not None else 0

    def submit(self, order_id: int, cmd: SubmitOrder, owner: str | None = None) -> list:
        reason, price = self.validate(cmd)
        if reason is not None:
            return [OrderRejected(cmd.member_id, self.symbol, cmd.client_order_id, reason)]
        events: list = [OrderAccepted(
            order_id, cmd.member_id, self.symbol, cmd.side, cmd.order_type, cmd.tif, price, cmd.qty_t,
            cmd.client_order_id,
        )]
        taker = RefOrder(order_id, cmd.member_id, cmd.side, price, cmd.qty_t, cmd.tif, -1, owner or cmd.member_id)
        if cmd.tif == TimeInForce.FOK and not self._would_fill_completely(taker):
            events.append(OrderCancelled(
                order_id, cmd.member_id, self.symbol, cmd.qty_t, CancelReason.FOK_UNFILLABLE))
            return events
        self._enter(taker, events)
        return events

    def cancel(self, cmd: CancelOrder) -> list:
        order = self._find(cmd.member_id, cmd.order_id)
        if order is None:
            return [CancelRejected(cmd.member_id, self.symbol, cmd.order_id, RejectReason.UNKNOWN_ORDER)]
        self.orders.remove(order)
        return [OrderCancelled(order.order_id, order.member_id, self.symbol, order.qty_t, CancelReason.MEMBER)]

    def validate_amend(self, cmd: AmendOrder) -> RejectReason | None:
        order = self._find(cmd.member_id, cmd.order_id)
        if order is None:
            return RejectReason.UNKNOWN_ORDER
        reason = self._qty_problem(cmd.qty_t) or self._limit_price_problem(cmd.price_fen)
        if reason is None and cmd.price_fen == order.price_fen and cmd.qty_t == order.qty_t:
            reason = RejectReason.AMEND_NO_CHANGE
        return reason

    def amend(self, cmd: AmendOrder) -> list:
        reason = self.validate_amend(cmd)
        order = self._find(cmd.member_id, cmd.order_id)
        if reason is not None:
            return [AmendRejected(cmd.member_id, self.symbol, cmd.order_id, reason)]
        assert order is not None
        if cmd.price_fen == order.price_fen and cmd.qty_t < order.qty_t:
            order.qty_t = cmd.qty_t  # stamp unchanged: priority kept
            return [OrderAmended(order.order_id, order.member_id, self.symbol, order.price_fen, order.qty_t, True)]
        self.orders.remove(order)
        events: list = [OrderAmended(order.order_id, order.member_id, self.symbol, cmd.price_fen, cmd.qty_t, False)]
        moved = RefOrder(order.order_id, order.member_id, order.side, cmd.price_fen, cmd.qty_t, order.tif, -1, order.owner)
        self._enter(moved, events)
        return events

    def mass_cancel(self, member_id: str, reason: CancelReason = CancelReason.MEMBER) -> list:
        mine = sorted((o for o in self.orders if o.member_id == member_id), key=lambda o: o.order_id)
        events = []
        for order in mine:
            self.orders.remove(order)
            events.append(OrderCancelled(order.order_id, order.member_id, self.symbol, order.qty_t, reason))
        return events

    def start_day(self, trading_day: str) -> list:
        self.trading_day = trading_day
        self.trades_today = []
        self.lower_fen, self.upper_fen = self._band(self.prev_close_fen)
        events: list = [DayStarted(trading_day, self.symbol, self.prev_close_fen, self.lower_fen, self.upper_fen)]
        for order in sorted(self.orders, key=lambda o: o.order_id):
            if order.price_fen < self.lower_fen or order.price_fen > self.upper_fen:
                self.orders.remove(order)
                events.append(OrderCancelled(
                    order.order_id, order.member_id, self.symbol, order.qty_t, CancelReason.PRICE_OUTSIDE_BAND))
        return events

    def end_day(self) -> list:
        events: list = []
        for order in sorted(self.orders, key=lambda o: o.order_id):
            if order.tif == TimeInForce.DAY:
                self.orders.remove(order)
                events.append(OrderExpired(order.order_id, order.member_id, self.symbol, order.qty_t))
        trades = self.trades_today
        volume = sum(q for _, q in trades)
        turnover = sum(p * q for p, q in trades)
        open_fen: int | None
        high: int | None
        low: int | None
        if trades:
            prices = [p for p, _ in trades]
            open_fen, high, low = prices[0], max(prices), min(prices)
            self.prev_close_fen = round_half_up_to_tick(turnover, volume, self.instrument.tick_fen)
        else:
            open_fen = high = low = None
        lower, upper = self._band(self.prev_close_fen)
        events.append(DayClosed(
            self.trading_day, self.symbol, open_fen, high, low, self.prev_close_fen,
            volume, turnover, len(trades), lower, upper,
        ))
        return events

    def set_limits(self, band_bps: int | None, max_order_qty_t: int | None) -> list:
        """A new band (from the previous close) and/or maximum for new orders and amends, at
        once; orders resting outside the new band are cancelled."""
        if band_bps is not None:
            self.band_bps = band_bps
            self.lower_fen, self.upper_fen = self._band(self.prev_close_fen)
        if max_order_qty_t is not None:
            self.max_order_qty_t = max_order_qty_t
        events: list = [InstrumentLimitsChanged(
            self.symbol, self.band_bps, self.max_order_qty_t, self.lower_fen, self.upper_fen)]
        for order in sorted(self.orders, key=lambda o: o.order_id):
            if order.price_fen < self.lower_fen or order.price_fen > self.upper_fen:
                self.orders.remove(order)
                events.append(OrderCancelled(
                    order.order_id, order.member_id, self.symbol, order.qty_t, CancelReason.PRICE_OUTSIDE_BAND))
        return events

    # -- queries -------------------------------------------------------------------------

    def _side(self, side: Side) -> list[RefOrder]:
        return [o for o in self.orders if o.side == side]

    def best_bid(self) -> tuple[int, int] | None:
        bids = self._side(Side.BUY)
        if not bids:
            return None
        price = max(o.price_fen for o in bids)
        return price, sum(o.qty_t for o in bids if o.price_fen == price)

    def best_ask(self) -> tuple[int, int] | None:
        asks = self._side(Side.SELL)
        if not asks:
            return None
        price = min(o.price_fen for o in asks)
        return price, sum(o.qty_t for o in asks if o.price_fen == price)

    def depth(self, max_levels: int | None = None):
        result = []
        for side, best_first in ((Side.BUY, True), (Side.SELL, False)):
            orders = self._side(side)
            prices = sorted({o.price_fen for o in orders}, reverse=best_first)
            levels = []
            for price in prices:
                at = [o for o in orders if o.price_fen == price]
                levels.append((price, sum(o.qty_t for o in at), len(at)))
            result.append(levels if max_levels is None else levels[:max_levels])
        return result[0], result[1]

    def queue(self, side: Side, price_fen: int) -> list[RefOrder]:
        return sorted((o for o in self.orders if o.side == side and o.price_fen == price_fen), key=lambda o: o.stamp)

    def open_orders(self, member_id: str) -> list[RefOrder]:
        return sorted((o for o in self.orders if o.member_id == member_id), key=lambda o: o.order_id)

    def order(self, member_id: str, order_id: int) -> RefOrder | None:
        return self._find(member_id, order_id)

    def open_order_count(self) -> int:
        return len(self.orders)
