"""The exchange core: every pure room composed behind one ``apply``.

``ExchangeCore.apply(seq, ts_ns, command)`` returns the events the command caused. It reads no
clock (the engine passes the time), touches no I/O and iterates nothing in hash order, so the
same commands always give the same events and the same state. Later rooms (risk, block deals,
auctions) join here: one command stream, one event stream.

Decisions worth knowing:

* An order's exchange id is the sequence number of the command that submitted it: unique,
  gap-free across the exchange and reproducible on replay.
* Orders and amends need an open trading day; cancels and mass cancels are accepted at any
  time, so a member can always take risk off (GTC orders rest between days).
* A command naming an unlisted instrument is refused with ``UNKNOWN_INSTRUMENT``.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import msgspec

from exchange.book import BookState, OrderBook, TradeIds
from exchange.model.commands import AmendOrder, CancelOrder, Command, EndDay, MassCancel, StartDay, SubmitOrder
from exchange.model.enums import SelfTradePolicy
from exchange.model.events import AmendRejected, CancelRejected, CommandRejected, OrderRejected
from exchange.model.instruments import Instrument
from exchange.model.rejects import RejectReason


class CoreState(msgspec.Struct, array_like=True):
    """Everything needed to rebuild the core; its msgpack bytes are hashed for the state hash."""

    last_seq: int
    trading_day: str
    day_open: bool
    last_trade_id: int
    books: list[BookState]


class ExchangeCore:
    def __init__(
        self,
        instruments: Sequence[Instrument],
        self_trade_policy: SelfTradePolicy = SelfTradePolicy.CANCEL_NEWEST,
    ) -> None:
        self.trade_ids = TradeIds()
        self.books: dict[str, OrderBook] = {
            i.symbol: OrderBook(i, self.trade_ids, self_trade_policy) for i in instruments
        }
        self._symbols = sorted(self.books)
        self.last_seq = 0
        self.trading_day = ""
        self.day_open = False

    def apply(self, seq: int, ts_ns: int, command: Command) -> list:
        assert seq == self.last_seq + 1, f"sequence gap: {self.last_seq} -> {seq}"
        self.last_seq = seq
        kind = type(command)
        # The two commands of nearly every sequence number skip the general dispatch.
        if kind is SubmitOrder:
            book = self.books.get(command.instrument)  # type: ignore[union-attr]
            if book is not None and self.day_open:
                return book.submit(seq, command)  # type: ignore[arg-type]
            return self._refuse_order(command)  # type: ignore[arg-type]
        if kind is CancelOrder:
            book = self.books.get(command.instrument)  # type: ignore[union-attr]
            if book is not None:
                return book.cancel(command)  # type: ignore[arg-type]
        match command:
            case CancelOrder():
                return [CancelRejected(command.member_id, command.instrument, command.order_id, RejectReason.UNKNOWN_INSTRUMENT)]
            case AmendOrder():
                return self._amend(command)
            case MassCancel():
                return self._mass_cancel(command)
            case StartDay():
                return self._start_day(command)
            case EndDay():
                return self._end_day()
        raise AssertionError(f"unhandled command {type(command).__name__}")

    def _refuse_order(self, command: SubmitOrder) -> list:
        known = command.instrument in self.books
        reason = RejectReason.DAY_NOT_OPEN if known else RejectReason.UNKNOWN_INSTRUMENT
        return [OrderRejected(command.member_id, command.instrument, command.client_order_id, reason)]

    def _amend(self, command: AmendOrder) -> list:
        book = self.books.get(command.instrument)
        if book is None:
            reason = RejectReason.UNKNOWN_INSTRUMENT
        elif not self.day_open:
            reason = RejectReason.DAY_NOT_OPEN
        else:
            return book.amend(command)
        return [AmendRejected(command.member_id, command.instrument, command.order_id, reason)]

    def _mass_cancel(self, command: MassCancel) -> list:
        if command.instrument is None:
            symbols = self._symbols
        elif command.instrument in self.books:
            symbols = [command.instrument]
        else:
            return [CommandRejected("MassCancel", RejectReason.UNKNOWN_INSTRUMENT)]
        events: list = []
        for symbol in symbols:
            events.extend(self.books[symbol].mass_cancel(command.member_id))
        return events

    def _start_day(self, command: StartDay) -> list:
        if self.day_open:
            return [CommandRejected("StartDay", RejectReason.DAY_ALREADY_OPEN)]
        if command.trading_day <= self.trading_day:
            return [CommandRejected("StartDay", RejectReason.DAY_NOT_AFTER_PREVIOUS)]
        self.trading_day = command.trading_day
        self.day_open = True
        events: list = []
        for symbol in self._symbols:
            events.extend(self.books[symbol].start_day(command.trading_day))
        return events

    def _end_day(self) -> list:
        if not self.day_open:
            return [CommandRejected("EndDay", RejectReason.DAY_NOT_OPEN)]
        self.day_open = False
        events: list = []
        for symbol in self._symbols:
            events.extend(self.books[symbol].end_day())
        return events

    # -- state -----------------------------------------------------------------------------

    def state(self) -> CoreState:
        return CoreState(
            self.last_seq, self.trading_day, self.day_open, self.trade_ids.last,
            [self.books[symbol].state() for symbol in self._symbols],
        )

    def restore(self, state: CoreState) -> None:
        """Load a snapshot into a freshly built core (same instruments)."""
        assert self.last_seq == 0, "restore needs a fresh core"
        assert [b.symbol for b in state.books] == self._symbols, "snapshot lists other instruments"
        self.last_seq = state.last_seq
        self.trading_day = state.trading_day
        self.day_open = state.day_open
        self.trade_ids.last = state.last_trade_id
        for book_state in state.books:
            self.books[book_state.symbol].restore(book_state)

    def state_hash(self) -> str:
        """SHA-256 of the canonical state bytes: equal states, equal hashes."""
        return hashlib.sha256(encode_state(self.state())).hexdigest()


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(CoreState)


def encode_state(state: CoreState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(data: bytes) -> CoreState:
    return _state_decoder.decode(data)
