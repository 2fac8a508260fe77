"""Public market data per instrument: the top of the book, trades and trading status.

Decisions:

* **A top-N book.** The feed publishes the best ``levels`` price levels of each side (10 by
  default, one N for the whole feed). A ``book_update`` carries every level whose entry in
  that top-N view changed, best first: ``[price, qty, orders]``, and ``[price, 0, 0]`` when
  a level left the view (emptied, or pushed below the N-th level by a better one). A level
  that moves up into the view arrives with its full quantity. So a subscriber that applies
  updates to a snapshot holds exactly the server's top N at every step, with nothing to
  trim; changes deeper in the book send nothing at all.
* **Sequence numbers.** Each instrument's ``seq`` starts at 0 and grows by exactly 1 per
  ``book_update``; every update names its ``prev_seq``. A snapshot is taken at the current
  ``seq``. A subscriber takes the snapshot (``seq`` S), drops updates with ``seq <= S`` and
  checks that each applied update's ``prev_seq`` is the last ``seq`` it applied; a gap means
  re-subscribing. Trades and status messages are not counted (``trade_id`` orders trades).
  Sequence numbers start again at 0 when the gateway restarts: subscriptions do not survive
  a reconnect anyway.
* **Order within one command.** Trades and status changes come in the order of the events
  that caused them, then one ``book_update`` per instrument whose view changed (netted over
  the command's events, instruments in name order).
* **Trades are public**: instrument, trade id, price, quantity and the aggressor's side; no
  member ids, no order ids.
* **Instrument status** is sent when an instrument's halt flag, the trading phase or the
  market-wide closure changes, for each instrument it affects. The phase follows the core:
  ``pre_open`` from each ``DayStarted``, ``post_close`` after the close and before any day.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import msgspec

from exchange.gateway.orders import Depth, DepthLevel
from exchange.gateway.wire import (
    PHASE_NAMES,
    SIDE_NAMES,
    BookSnapshot,
    BookUpdate,
    InstrumentStatus,
    Level,
    PublicMessage,
    Trade,
    format_price,
)
from exchange.model.enums import TradingPhase
from exchange.model.events import (
    DayClosed,
    DayStarted,
    InstrumentStatusChanged,
    MarketStatusChanged,
    OrderFilled,
    TradingPhaseChanged,
)

DEFAULT_LEVELS = 10

View = dict[int, tuple[int, int]]  # price -> (quantity, orders), as last published


class _Published(msgspec.Struct):
    """One instrument's feed state: its sequence number and the view subscribers hold."""

    seq: int = 0
    bids: View = msgspec.field(default_factory=dict)
    asks: View = msgspec.field(default_factory=dict)
    halted: bool = False
    phase: TradingPhase = TradingPhase.POST_CLOSE
    market_closed: bool = False


class MarketData:
    """Turns each command's events into the public messages of each instrument."""

    def __init__(self, instruments: Sequence[str], levels: int = DEFAULT_LEVELS, depth: Depth | None = None) -> None:
        assert levels >= 1
        self.levels = levels
        self.depth = depth if depth is not None else Depth()
        self._feeds: dict[str, _Published] = {symbol: _Published() for symbol in sorted(instruments)}

    def apply(self, events: Sequence[object]) -> list[tuple[str, PublicMessage]]:
        """(instrument, message) for one command's events: trades and status, then updates."""
        changed = self.depth.apply(events)
        out: list[tuple[str, PublicMessage]] = []
        for event in events:
            self._event(event, out)
        for instrument in sorted(changed):
            update = self._book_update(instrument)
            if update is not None:
                out.append((instrument, update))
        return out

    def snapshot(self, instrument: str) -> BookSnapshot:
        """The top-N book at the current ``seq``: what a new subscriber starts from."""
        feed = self._feed(instrument)
        bids = [_level(price, *feed.bids[price]) for price in sorted(feed.bids, reverse=True)]
        asks = [_level(price, *feed.asks[price]) for price in sorted(feed.asks)]
        return BookSnapshot(instrument, feed.seq, bids, asks)

    def status(self, instrument: str) -> InstrumentStatus:
        feed = self._feed(instrument)
        return InstrumentStatus(instrument, feed.halted, PHASE_NAMES[feed.phase], feed.market_closed)

    def load_status(self, phase: TradingPhase, halted: Iterable[str], market_closed: bool) -> None:
        """Start from the core's state (after a recovery) instead of the defaults."""
        halted_set = set(halted)
        for symbol, feed in self._feeds.items():
            feed.phase, feed.halted, feed.market_closed = phase, symbol in halted_set, market_closed

    # -- events --------------------------------------------------------------------------------

    def _feed(self, instrument: str) -> _Published:
        feed = self._feeds.get(instrument)
        if feed is None:
            feed = self._feeds[instrument] = _Published()
        return feed

    def _event(self, event: object, out: list[tuple[str, PublicMessage]]) -> None:
        match event:
            case OrderFilled():
                trade = Trade(event.instrument, event.trade_id, format_price(event.price_fen), event.qty_t, SIDE_NAMES[event.aggressor])
                out.append((event.instrument, trade))
            case InstrumentStatusChanged():
                self._set_status(event.instrument, out, halted=event.halted)
            case DayStarted():
                self._set_status(event.instrument, out, phase=TradingPhase.PRE_OPEN)
            case DayClosed():
                self._set_status(event.instrument, out, phase=TradingPhase.POST_CLOSE)
            case TradingPhaseChanged():
                for symbol in sorted(self._feeds):
                    self._set_status(symbol, out, phase=event.phase)
            case MarketStatusChanged():
                for symbol in sorted(self._feeds):
                    self._set_status(symbol, out, market_closed=event.closed)

    def _set_status(self, instrument: str, out: list[tuple[str, PublicMessage]], **changes: object) -> None:
        """Change an instrument's status; say so only if something changed."""
        feed = self._feed(instrument)
        before = (feed.halted, feed.phase, feed.market_closed)
        for name, value in changes.items():
            setattr(feed, name, value)
        if (feed.halted, feed.phase, feed.market_closed) != before:
            out.append((instrument, self.status(instrument)))

    # -- the book ------------------------------------------------------------------------------

    def _book_update(self, instrument: str) -> BookUpdate | None:
        feed = self._feed(instrument)
        bids, asks = self.depth.levels(instrument, self.levels)
        new_bids, new_asks = _view(bids), _view(asks)
        bid_changes = _changes(feed.bids, new_bids, best_is_high=True)
        ask_changes = _changes(feed.asks, new_asks, best_is_high=False)
        if not bid_changes and not ask_changes:
            return None
        feed.bids, feed.asks = new_bids, new_asks
        feed.seq += 1
        return BookUpdate(instrument, feed.seq, feed.seq - 1, bid_changes, ask_changes)


def _view(levels: list[DepthLevel]) -> View:
    return {price: (qty, orders) for price, qty, orders in levels}


def _changes(old: View, new: View, best_is_high: bool) -> list[Level]:
    """The levels a subscriber holding ``old`` must change to hold ``new``, best first."""
    prices = sorted(set(old) | set(new), reverse=best_is_high)
    changes: list[Level] = []
    for price in prices:
        now = new.get(price, (0, 0))
        if old.get(price) != now:
            changes.append(_level(price, *now))
    return changes


def _level(price_fen: int, qty_t: int, orders: int) -> Level:
    return (format_price(price_fen), qty_t, orders)
