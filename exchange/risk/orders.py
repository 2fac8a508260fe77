"""Booking what the order book did: its events turned into holds, commits and releases.

``OrderBooking.apply`` runs after the book, over the events it returned: at acceptance a buy
holds price x quantity of cash and a sell holds the allowances, under the order's id
(``HoldKind.ORDER``); each fill commits both holds (the buyer's at its limit, releasing the
price improvement) and credits the other side of each leg: the buyer's allowances are locked
for the holding period, the seller's proceeds are available at once or pending until
settlement (``RiskPolicy.same_day_proceeds``); a cancel or expiry releases what is left; an
amend adjusts the hold. It returns report-only events (a member crossing the large-holder
threshold).

The order-specific figures stay on the account: open-order count, pending buy quantity and
position (allowances owned or bought plus pending buys), for the limits the checks apply.

Decisions: the account behind a fill is found through the hold (one dict lookup per side,
no member lookup); a hold that does not match its order's event (wrong member, wrong
quantity) is a broken invariant and fails an assertion. The hold operations of the order
path are written out inline (see ``OrderBooking``): it runs for nearly every command and a
call per leg cost a fifth of the engine's throughput when measured.
"""

from __future__ import annotations

from collections.abc import Iterable

from exchange.model.enums import Side
from exchange.model.events import (
    Event,
    LargeHolderThresholdCrossed,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
)
from exchange.risk.accounts import Account, watch_position
from exchange.risk.holds import CASH, Hold, Ledger
from exchange.risk.limits import RiskPolicy
from exchange.risk.market import MarketState

BUY = Side.BUY


class OrderBooking:
    """Books order events. Used as a base of ``RiskGate`` (so the order path pays no
    delegation), it also stands alone over a ledger and a market state."""

    def __init__(self, ledger: Ledger, market: MarketState, policy: RiskPolicy, positioned: Iterable[str]) -> None:
        self.accounts = ledger.members
        self.orders = ledger.orders
        self.order_holds = ledger.orders.held
        self.market = market
        self.holding_days = policy.holding_days
        self.same_day_proceeds = policy.same_day_proceeds
        self.positioned: dict[str, bool] = {symbol: True for symbol in sorted(positioned)}

    def apply(self, events: list[Event], amended: tuple[Side, int, int] | None = None) -> list[LargeHolderThresholdCrossed]:
        """Book the order book's events into the accounts; return report-only events.
        ``amended``: the amended order's (side, price, open quantity) before the amend."""
        reports: list[LargeHolderThresholdCrossed] = []
        # ``type(event) is`` (not isinstance, not match): exact, the cheapest test, and it narrows.
        for event in events:
            if type(event) is OrderAccepted:
                self._hold(event, reports)
            elif type(event) is OrderFilled:
                self._fill(event)
            elif type(event) is OrderCancelled or type(event) is OrderExpired:
                self._release(event.order_id, event.member_id, event.instrument, event.qty_t)
            elif type(event) is OrderAmended:
                assert amended is not None
                self._adjust(event, amended, reports)
        return reports

    # The order path is the hot path: it performs HoldBook.hold / commit / release inline on
    # the ORDER book's dict (same arithmetic, no call per leg). The hold unit tests pin the
    # generic methods and the state machine checks after every command that reserved
    # balances equal the open holds and the open holds equal the resting orders.

    def _hold(self, event: OrderAccepted, reports: list[LargeHolderThresholdCrossed]) -> None:
        account = self.accounts.get(event.member_id)
        assert account is not None, f"an order of {event.member_id!r}, who is not a member, was accepted"
        account.open_orders += 1
        qty = event.qty_t
        if event.side == BUY:
            price = event.price_fen
            value = price * qty
            account.cash_available_fen -= value
            account.cash_reserved_fen += value
            assert account.cash_available_fen >= 0, "a buy was accepted without the cash"
            self.order_holds[event.order_id] = Hold(account, CASH, value, price)
            if self.positioned.get(event.instrument):
                account.pending_buy_t += qty
                account.position_t += qty
                if account.position_t >= account.large_holder_t:
                    watch_position(account, reports)
        else:
            symbol = event.instrument
            holding = account.holdings.get(symbol)
            assert holding is not None and holding.available_t >= qty, "a sell was accepted without the allowances"
            holding.available_t -= qty
            holding.reserved_t += qty
            self.order_holds[event.order_id] = Hold(account, symbol, qty)

    def _fill(self, event: OrderFilled) -> None:
        qty = event.qty_t
        value = event.price_fen * qty
        symbol = event.instrument
        held = self.order_holds
        # The buyer's cash hold: commit its limit x qty, pay price x qty, the improvement back.
        bought = held.get(event.buy_order_id)
        assert bought is not None, "a fill without the buy's hold"
        buyer = bought.account
        committed = bought.price_fen * qty
        buyer.cash_reserved_fen -= committed
        buyer.cash_available_fen += committed - value
        buyer.cash_obligation_fen += value
        bought.amount -= committed
        positioned = self.positioned.get(symbol, False)
        if positioned:
            buyer.pending_buy_t -= qty  # pending becomes owned: the position stays
        holding = buyer.holding(symbol)
        holding.locked_t += qty
        holding.obligation_t -= qty
        self._lock_until(buyer, symbol, qty)
        if not event.buy_leaves_t:
            assert not bought.amount, "a filled buy left cash held"
            del held[event.buy_order_id]
            buyer.open_orders -= 1
        # The seller's allowance hold: commit qty, all of it owed; the proceeds credited.
        sold = held.get(event.sell_order_id)
        assert sold is not None, "a fill without the sell's hold"
        seller = sold.account
        holding = seller.holdings[symbol]
        holding.reserved_t -= qty
        holding.obligation_t += qty
        sold.amount -= qty
        if positioned:
            seller.position_t -= qty
        seller.cash_obligation_fen -= value
        if self.same_day_proceeds:
            seller.cash_available_fen += value
        else:
            seller.cash_pending_fen += value
        if not event.sell_leaves_t:
            assert not sold.amount, "a filled sell left allowances held"
            del held[event.sell_order_id]
            seller.open_orders -= 1
        if seller.large_holder:
            watch_position(seller, None)

    def _lock_until(self, account: Account, symbol: str, qty: int) -> None:
        """Bought allowances unlock once ``holding_days`` trading days have passed."""
        unlock_day = self.market.day_number + self.holding_days
        unlocks = account.unlocks
        if unlocks and unlocks[-1][0] == unlock_day and unlocks[-1][1] == symbol:
            unlocks[-1] = (unlock_day, symbol, unlocks[-1][2] + qty)
        else:
            unlocks.append((unlock_day, symbol, qty))

    def _release(self, order_id: int, member_id: str, symbol: str, qty: int) -> None:
        hold = self.order_holds.pop(order_id, None)
        assert hold is not None and hold.account.member_id == member_id, "a cancel without the order's hold"
        account = hold.account
        amount = hold.amount
        account.open_orders -= 1
        if hold.asset == CASH:
            assert amount == hold.price_fen * qty, "a buy's hold differs from its open quantity"
            account.cash_reserved_fen -= amount
            account.cash_available_fen += amount
            if self.positioned.get(symbol):
                account.pending_buy_t -= qty
                account.position_t -= qty
                if account.large_holder:
                    watch_position(account, None)
        else:
            assert amount == qty and hold.asset == symbol, "a sell's hold differs from its open quantity"
            holding = account.holdings[symbol]
            holding.reserved_t -= amount
            holding.available_t += amount

    def _adjust(self, event: OrderAmended, before: tuple[Side, int, int], reports: list[LargeHolderThresholdCrossed]) -> None:
        """An amend is rare: the generic ``HoldBook.adjust``."""
        side, _, qty = before
        if side == BUY:
            hold = self.orders.adjust(event.order_id, event.price_fen * event.qty_t, event.price_fen)
            account = hold.account
            if self.positioned.get(event.instrument):
                account.pending_buy_t += event.qty_t - qty
                account.position_t += event.qty_t - qty
                watch_position(account, reports)
        else:
            self.orders.adjust(event.order_id, event.qty_t)
