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
  The numbers follow from the journal alone (they travel in the snapshots and the replay
  continues them), so a restart goes on from where the feed was; subscriptions do not
  survive a reconnect anyway.
* **Order within one command.** Trades and status changes come in the order of the events
  that caused them, then one ``book_update`` per instrument whose view changed (netted over
  the command's events, instruments in name order).
* **Trades are public**: instrument, trade id, price, quantity and the aggressor's side; no
  member ids, no order ids.
* **The L2 book** (:class:`Depth`: resting quantity and order count per price level) is
  kept from the same events, netted per command: an accepted order is added at its price,
  fills and cancels take it away, an amend moves it. IOC, FOK and market orders are added too
  and leave again within the same events, so the changes are compared per level before and
  after the whole list: market data never shows a transient level. A market order is added
  at its band limit; any fill is at the resting order's price, and the aggressor's own fills
  reduce only its not-yet-rested quantity.
* **A snapshotted projection.** :class:`MarketData` follows the engine's stream
  (:class:`~exchange.model.stream.Applied` records, durable ones only), keeps an outbox of
  ``(seq, instrument, message)`` for the hub once the hub opened it (the records replayed at
  start-up build state only), and puts its state (every resting order and every
  instrument's feed) in the engine's snapshots as sorted msgspec bytes.
* **Instrument status** is sent when an instrument's halt flag, the trading phase, the
  market-wide closure, its reference price or its band changes, for each instrument it
  affects, and only then (one message per change, built from the event stream alone). The
  phase follows the core: ``pre_open`` from each ``DayStarted``, ``post_close`` after the
  close and before any day. The reference price (the previous close) and the band come from
  ``DayStarted`` and move with ``InstrumentLimitsChanged`` (a new band mid-day); they stay
  the last day's after its close, until the next ``DayStarted``, and are null before the
  first one (nothing has set a band yet). The same struct is the ``logon_ack``'s list.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple
from collections.abc import Iterable, Sequence

import msgspec

from exchange.gateway.member.wire import (
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
from exchange.model.enums import Side, TradingPhase
from exchange.model.events import (
    DayClosed,
    DayStarted,
    InstrumentLimitsChanged,
    InstrumentStatusChanged,
    MarketStatusChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    TradingPhaseChanged,
)
from exchange.model.stream import Applied

# -- the L2 book ------------------------------------------------------------------------------------

DepthLevel = tuple[int, int, int]  # (price in fen, quantity in tonnes, number of orders)


class LevelChanges(NamedTuple):
    """One instrument's changed levels after a command, best first; (price, 0, 0) = gone."""

    bids: list[DepthLevel]
    asks: list[DepthLevel]


class _Resting(msgspec.Struct, array_like=True, gc=False):
    instrument: str
    side: Side
    price_fen: int
    qty_t: int


class _Side:
    """One side of one instrument: price -> [quantity, orders], and the prices in order."""

    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.levels: dict[int, list[int]] = {}
        self.prices: list[int] = []  # ascending

    def best_first(self, side: Side, limit: int | None = None) -> list[DepthLevel]:
        prices = self.prices[::-1] if side == Side.BUY else self.prices
        chosen = prices if limit is None else prices[:limit]
        return [(price, *self.levels[price]) for price in chosen]  # type: ignore[misc]


class Depth:
    """The L2 book of every instrument, from events, with per-command net changes."""

    def __init__(self) -> None:
        self._resting: dict[int, _Resting] = {}
        self._sides: dict[tuple[str, Side], _Side] = {}
        self._before: dict[tuple[str, Side, int], tuple[int, int]] = {}  # this command's touched levels

    def apply(self, events: Iterable[object]) -> dict[str, LevelChanges]:
        """Work through one command's events; return the levels that changed, per instrument."""
        for event in events:
            match event:
                case OrderAccepted():
                    self._add(event.order_id, _Resting(event.instrument, event.side, event.price_fen, event.qty_t))
                case OrderFilled():
                    self._fill(event.buy_order_id, event.qty_t, event.buy_leaves_t)
                    self._fill(event.sell_order_id, event.qty_t, event.sell_leaves_t)
                case OrderCancelled() | OrderExpired():
                    self._remove(event.order_id)
                case OrderAmended():
                    old = self._remove(event.order_id)
                    self._add(event.order_id, _Resting(old.instrument, old.side, event.price_fen, event.qty_t))
        return self._net_changes()

    def levels(self, instrument: str, limit: int | None = None) -> tuple[list[DepthLevel], list[DepthLevel]]:
        """(bids best first, asks best first), as ``OrderBook.depth`` gives them."""
        return (
            self._side(instrument, Side.BUY).best_first(Side.BUY, limit),
            self._side(instrument, Side.SELL).best_first(Side.SELL, limit),
        )

    def resting_qty(self, order_id: int) -> int:
        """An order's resting quantity as the depth counts it (0 when not resting)."""
        resting = self._resting.get(order_id)
        return 0 if resting is None else resting.qty_t

    # -- changes -------------------------------------------------------------------------------

    def _side(self, instrument: str, side: Side) -> _Side:
        book = self._sides.get((instrument, side))
        if book is None:
            book = self._sides[(instrument, side)] = _Side()
        return book

    def _level(self, resting: _Resting) -> list[int]:
        """The order's level, remembering how it looked before this command touched it."""
        book = self._side(resting.instrument, resting.side)
        price = resting.price_fen
        level = book.levels.get(price)
        key = (resting.instrument, resting.side, price)
        if key not in self._before:
            self._before[key] = (level[0], level[1]) if level else (0, 0)
        if level is None:
            level = book.levels[price] = [0, 0]
            bisect.insort(book.prices, price)
        return level

    def _drop_if_empty(self, resting: _Resting, level: list[int]) -> None:
        if level[1]:
            assert level[0] > 0, level
            return
        assert level[0] == 0, level
        book = self._side(resting.instrument, resting.side)
        del book.levels[resting.price_fen]
        del book.prices[bisect.bisect_left(book.prices, resting.price_fen)]

    def _add(self, order_id: int, resting: _Resting) -> None:
        assert order_id not in self._resting and resting.qty_t > 0, (order_id, resting)
        level = self._level(resting)
        level[0] += resting.qty_t
        level[1] += 1
        self._resting[order_id] = resting

    def _fill(self, order_id: int, qty_t: int, leaves_t: int) -> None:
        resting = self._resting[order_id]
        assert resting.qty_t - qty_t == leaves_t, (order_id, resting, qty_t, leaves_t)
        if not leaves_t:
            self._remove(order_id)
            return
        level = self._level(resting)
        level[0] -= qty_t
        resting.qty_t = leaves_t

    def _remove(self, order_id: int) -> _Resting:
        resting = self._resting.pop(order_id)
        level = self._level(resting)
        level[0] -= resting.qty_t
        level[1] -= 1
        self._drop_if_empty(resting, level)
        return resting

    def _net_changes(self) -> dict[str, LevelChanges]:
        changes: dict[str, LevelChanges] = {}
        for (instrument, side, price), before in self._before.items():
            level = self._sides[(instrument, side)].levels.get(price)
            after = (level[0], level[1]) if level else (0, 0)
            if after == before:
                continue
            entry = changes.get(instrument)
            if entry is None:
                entry = changes[instrument] = LevelChanges([], [])
            (entry.bids if side == Side.BUY else entry.asks).append((price, *after))
        self._before = {}
        for entry in changes.values():
            entry.bids.sort(reverse=True)
            entry.asks.sort()
        return changes

    # -- snapshots -----------------------------------------------------------------------------

    def resting(self) -> list[tuple[int, _Resting]]:
        """Every resting order, by exchange id (for a snapshot)."""
        return sorted(self._resting.items())

    def load(self, resting: Iterable[tuple[int, _Resting]]) -> None:
        """Rebuild the levels from the resting orders (an empty depth; after a restore)."""
        assert not self._resting
        for order_id, order in resting:
            self._add(order_id, order)
        self._before = {}


# -- the feed ------------------------------------------------------------------------------------

DEFAULT_LEVELS = 10

View = dict[int, tuple[int, int]]  # price -> (quantity, orders), as last published


class _Published(msgspec.Struct, array_like=True):
    """One instrument's feed state: its sequence number and the view subscribers hold."""

    seq: int = 0
    bids: View = msgspec.field(default_factory=dict)
    asks: View = msgspec.field(default_factory=dict)
    halted: bool = False
    phase: TradingPhase = TradingPhase.POST_CLOSE
    market_closed: bool = False
    # appended (older snapshots decode with None): the day's reference price and band
    reference_fen: int | None = None
    lower_fen: int | None = None
    upper_fen: int | None = None


class MarketDataState(msgspec.Struct, array_like=True):
    """What a snapshot holds of the feed: resting orders by id, each instrument's feed."""

    resting: list[tuple[int, _Resting]]
    feeds: list[tuple[str, _Published]]


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(MarketDataState)

PublicOutbox = list[tuple[int, str, PublicMessage]]  # (seq, instrument, message)


class MarketData:
    """Turns each record's events into the public messages of each instrument."""

    name = "gateway.market_data"

    def __init__(self, instruments: Sequence[str], levels: int = DEFAULT_LEVELS, depth: Depth | None = None) -> None:
        assert levels >= 1
        self.levels = levels
        self.depth = depth if depth is not None else Depth()
        self.last_seq = 0
        self.restored_seq = 0  # the snapshot's position this feed was restored at (0: none)
        self.records_applied = 0
        self.outbox: PublicOutbox | None = None
        self._feeds: dict[str, _Published] = {symbol: _Published() for symbol in sorted(instruments)}

    # -- the projection ----------------------------------------------------------------------

    def apply(self, applied: Applied) -> None:
        """One durable record: queue its trades and status, then its book updates."""
        assert applied.seq > self.last_seq, (applied.seq, self.last_seq)
        self.last_seq = applied.seq
        self.records_applied += 1
        messages = self.messages(applied.events)
        if self.outbox is not None:
            seq = applied.seq
            self.outbox.extend((seq, instrument, message) for instrument, message in messages)

    def messages(self, events: Sequence[object]) -> list[tuple[str, PublicMessage]]:
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

    def flush(self) -> None:
        """In memory: nothing to write (the engine's snapshots carry the state)."""

    def open_outbox(self) -> None:
        if self.outbox is None:
            self.outbox = []

    def drain(self) -> PublicOutbox:
        out = self.outbox or []
        if self.outbox is not None:
            self.outbox = []
        return out

    def snapshot_state(self) -> bytes:
        return _state_encoder.encode(MarketDataState(self.depth.resting(), sorted(self._feeds.items())))

    def restore_state(self, data: bytes, seq: int) -> None:
        assert self.last_seq == 0, "restore needs a fresh feed"
        state = _state_decoder.decode(data)
        self.depth.load(state.resting)
        self._feeds.update(state.feeds)
        self.last_seq = self.restored_seq = seq

    # -- reads ---------------------------------------------------------------------------------

    def snapshot(self, instrument: str) -> BookSnapshot:
        """The top-N book at the current ``seq``: what a new subscriber starts from."""
        feed = self._feed(instrument)
        bids = [_level(price, *feed.bids[price]) for price in sorted(feed.bids, reverse=True)]
        asks = [_level(price, *feed.asks[price]) for price in sorted(feed.asks)]
        return BookSnapshot(instrument, feed.seq, bids, asks)

    def status(self, instrument: str) -> InstrumentStatus:
        feed = self._feed(instrument)
        return InstrumentStatus(
            instrument, feed.halted, PHASE_NAMES[feed.phase], feed.market_closed,
            _price(feed.reference_fen), _price(feed.lower_fen), _price(feed.upper_fen),
        )

    def statuses(self, instruments: Iterable[str]) -> list[InstrumentStatus]:
        """The status of each instrument, as given (the ``logon_ack``'s list)."""
        return [self.status(instrument) for instrument in instruments]

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
                self._set_status(
                    event.instrument, out, phase=TradingPhase.PRE_OPEN, reference_fen=event.prev_close_fen,
                    lower_fen=event.lower_fen, upper_fen=event.upper_fen)
            case InstrumentLimitsChanged():
                self._set_status(event.instrument, out, lower_fen=event.lower_fen, upper_fen=event.upper_fen)
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
        before = _status_of(feed)
        for name, value in changes.items():
            setattr(feed, name, value)
        if _status_of(feed) != before:
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


def _status_of(feed: _Published) -> tuple[object, ...]:
    """What an ``instrument_status`` shows of a feed: a change in any of it is published."""
    return (feed.halted, feed.phase, feed.market_closed, feed.reference_fen, feed.lower_fen, feed.upper_fen)


def _price(fen: int | None) -> str | None:
    return None if fen is None else format_price(fen)


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
