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
* Every order command passes the risk gate (``exchange.risk``) before it reaches a book, and
  the gate books every event a book produces (reservations, obligations, releases). Cancels
  are never refused for risk.
* ``SetInstrumentLimits``: a negative band or a maximum quantity of zero or less is
  ``AMOUNT_NOT_POSITIVE``; a band of 10,000 bps (100 %) or more is ``LIMIT_OUT_OF_RANGE``.
* Start of day rolls the accounts (the previous day taken as settled) before the books open,
  so GTC orders cancelled at the open release into the new day's accounts. Its date must be a
  calendar date (``units.parse_trading_day``): ``2026-13-45`` is ``DAY_NOT_A_DATE``, decided
  from the command alone, so a journal that holds one replays the same refusal. Whether the
  date is near today is the shell's question (it has the wall clock; the core has none).
* A start of day on a day the calendar does not trade (``calendar``, the configuration's
  ``[calendar]``: a weekend day is ``DAY_IS_WEEKEND``, a holiday ``DAY_IS_HOLIDAY``) is
  refused, whoever sends it. The calendar is configuration handed to the core, like the
  instruments: replay needs the same one, so a holiday is added ahead of its date, never for a
  day already traded. A core built without a calendar (the unit tests' rooms) trades any date.
* ``VoidDay`` takes back a day opened by mistake. It must name the open day
  (``VOID_NOT_THE_OPEN_DAY``; no open day: ``VOID_NO_DAY_OPEN``) and nothing may have
  traded on it (``VOID_DAY_HAS_TRADES``: a trade is binding, the day is ended and settled as
  it is). Then every order accepted since the day's ``StartDay`` is cancelled
  (``CancelReason.DAY_VOIDED``, holds released), GTC orders from earlier days keep resting
  (as they would across any day; an amend made on the voided day stays, as acknowledged, and
  a GTC order the mistaken band cancelled at the open stays cancelled), the day count and the
  phase go back, and the last trading day is the one before again (``DayVoided``), so the
  right date can be opened. What the day's start changed outside the books stays: the
  accounts' roll (the previous day was taken as settled, as the next start takes it again),
  holdings loaded from the registry, deposits, limits. ``CoreState.opening`` keeps what a void
  needs (the start's sequence number and the day before) while a day is open, None otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date

import msgspec

from exchange.book import BookState, OrderBook, TradeIds
from exchange.model.commands import (
    AmendOrder,
    CancelOrder,
    CloseMarket,
    Command,
    Deposit,
    EndDay,
    HaltInstrument,
    KillSwitch,
    LoadHolding,
    MassCancel,
    RegisterMember,
    ReopenMarket,
    ResumeInstrument,
    SetInstrumentLimits,
    SetSessionGuard,
    SetMemberStatus,
    SetRiskLimits,
    SetTradingPhase,
    StartDay,
    SubmitOrder,
    VoidDay,
    Withdraw,
)
from exchange.model.enums import CancelReason, CommandName, InstrumentKind, SelfTradePolicy
from exchange.model.events import (
    AmendRejected, CancelRejected, CommandRejected, DayVoided, Event, OrderRejected, SessionGuardSet,
)
from exchange.model.instruments import Instrument
from exchange.model.rejects import RejectReason
from exchange.model.units import is_trading_day
from exchange.risk import RiskGate, RiskPolicy
from exchange.risk.schedule import SessionSchedule
from exchange.risk.state import RiskState


class DayOpening(msgspec.Struct, array_like=True, frozen=True):
    """How the open day was opened, for a void: the ``StartDay``'s sequence number (orders
    with that id or later were entered on the day) and the last trading day before it."""

    start_seq: int
    previous_trading_day: str


class CoreState(msgspec.Struct, array_like=True):
    """Everything needed to rebuild the core; its msgpack bytes are hashed for the state hash.
    ``opening`` came last, with a default, so a snapshot written before it still decodes (a
    day open in such a snapshot cannot be voided: what to restore is not known)."""

    last_seq: int
    trading_day: str
    day_open: bool
    last_trade_id: int
    books: list[BookState]
    risk: RiskState
    opening: DayOpening | None = None


class ExchangeCore:
    def __init__(
        self,
        instruments: Sequence[Instrument],
        self_trade_policy: SelfTradePolicy = SelfTradePolicy.CANCEL_NEWEST,
        risk_policy: RiskPolicy | None = None,
        calendar: SessionSchedule | None = None,
    ) -> None:
        self.calendar = calendar
        self.trade_ids = TradeIds()
        self.books: dict[str, OrderBook] = {
            i.symbol: OrderBook(i, self.trade_ids, self_trade_policy) for i in instruments
        }
        self._symbols = sorted(self.books)
        allowances = [i.symbol for i in instruments if i.kind == InstrumentKind.ALLOWANCE]
        self.risk = RiskGate(risk_policy or RiskPolicy(), allowances)
        self.last_seq = 0
        self.trading_day = ""
        self.day_open = False
        self.opening: DayOpening | None = None  # while a day is open

    def apply(self, seq: int, ts_ns: int, command: Command) -> list[Event]:
        assert seq == self.last_seq + 1, f"sequence gap: {self.last_seq} -> {seq}"
        self.last_seq = seq
        # The two commands of nearly every sequence number skip the general dispatch
        # (``type(command) is``: exact, cheaper than isinstance or match, and it narrows).
        if type(command) is SubmitOrder:
            return self._submit(seq, ts_ns, command)
        if type(command) is CancelOrder:
            book = self.books.get(command.instrument)
            if book is not None:
                events = book.cancel(command)
                self.risk.apply(events)
                return events
        return self._dispatch(ts_ns, command)

    # An order or an amend needs a listed instrument, an open day and the risk gate's approval;
    # the first refusal is the reason. Written out in each (no helper call on the order path).

    def _submit(self, seq: int, ts_ns: int, command: SubmitOrder) -> list[Event]:
        book = self.books.get(command.instrument)
        reason: RejectReason | None
        if book is None:
            reason = RejectReason.UNKNOWN_INSTRUMENT
        elif not self.day_open:
            reason = RejectReason.DAY_NOT_OPEN
        else:
            risk = self.risk
            reason = risk.check_submit(ts_ns, command, book)
            if reason is None:
                events = book.submit(seq, command, risk.accounts[command.member_id].owner)
                reports = risk.apply(events)
                if reports:
                    events.extend(reports)
                return events
        return [OrderRejected(
            command.member_id, command.instrument, command.client_order_id, reason,
            command.side, command.order_type, command.tif, command.price_fen, command.qty_t,
        )]

    def _dispatch(self, ts_ns: int, command: Command) -> list[Event]:
        risk = self.risk
        match command:
            case CancelOrder():
                return [CancelRejected(command.member_id, command.instrument, command.order_id, RejectReason.UNKNOWN_INSTRUMENT)]
            case AmendOrder():
                return self._amend(ts_ns, command)
            case MassCancel():
                return self._mass_cancel(command)
            case StartDay():
                return self._start_day(command)
            case VoidDay():
                return self._void_day(command)
            case EndDay():
                return self._end_day()
            case SetTradingPhase():
                return risk.set_phase(command.phase, self.day_open)
            case RegisterMember():
                return risk.register(command)
            case SetMemberStatus():
                return risk.set_status(command)
            case KillSwitch():
                return self._kill(command)
            case Deposit():
                return risk.deposit(command)
            case Withdraw():
                return risk.withdraw(command)
            case LoadHolding():
                if command.instrument not in self.books:
                    return [CommandRejected(CommandName.LOAD_HOLDING, RejectReason.UNKNOWN_INSTRUMENT, command.instrument)]
                return risk.load_holding(command)
            case HaltInstrument() | ResumeInstrument():
                halting = type(command) is HaltInstrument
                if command.instrument not in self.books:
                    name = CommandName.HALT_INSTRUMENT if halting else CommandName.RESUME_INSTRUMENT
                    return [CommandRejected(name, RejectReason.UNKNOWN_INSTRUMENT, command.instrument)]
                return risk.halt(command.instrument, halting)
            case CloseMarket():
                return risk.close_market(True)
            case ReopenMarket():
                return risk.close_market(False)
            case SetRiskLimits():
                return risk.set_limits(command)
            case SetInstrumentLimits():
                return self._set_instrument_limits(command)
            case SetSessionGuard():
                return self._set_session_guard(command)
        raise AssertionError(f"unhandled command {type(command).__name__}")

    def _amend(self, ts_ns: int, command: AmendOrder) -> list[Event]:
        book = self.books.get(command.instrument)
        reason: RejectReason | None
        if book is None:
            reason = RejectReason.UNKNOWN_INSTRUMENT
        elif not self.day_open:
            reason = RejectReason.DAY_NOT_OPEN
        else:
            order = book.order(command.member_id, command.order_id)
            before = (order.side, order.price_fen, order.qty_t) if order is not None else None
            reason = self.risk.check_amend(ts_ns, command, before, book)
            if reason is None:
                events = book.amend(command)
                reports = self.risk.apply(events, before)
                if reports:
                    events.extend(reports)
                return events
        return [AmendRejected(command.member_id, command.instrument, command.order_id, reason)]

    def _mass_cancel(self, command: MassCancel) -> list[Event]:
        if command.instrument is None:
            symbols = self._symbols
        elif command.instrument in self.books:
            symbols = [command.instrument]
        else:
            return [CommandRejected(CommandName.MASS_CANCEL, RejectReason.UNKNOWN_INSTRUMENT, command.instrument)]
        events: list[Event] = []
        for symbol in symbols:
            events.extend(self.books[symbol].mass_cancel(command.member_id, command.reason))
        self.risk.apply(events)
        return events

    def _kill(self, command: KillSwitch) -> list[Event]:
        events = self.risk.kill(command.member_id)
        if type(events[0]) is CommandRejected:
            return events
        for symbol in self._symbols:
            events.extend(self.books[symbol].mass_cancel(command.member_id, CancelReason.KILL_SWITCH))
        self.risk.apply(events)
        return events

    def _set_session_guard(self, command: SetSessionGuard) -> list[Event]:
        if command.member_id not in self.risk.accounts:
            return [CommandRejected(CommandName.SET_SESSION_GUARD, RejectReason.UNKNOWN_MEMBER, command.member_id)]
        return [SessionGuardSet(command.member_id, command.cancel_on_disconnect, command.dead_man_ms)]

    def _set_instrument_limits(self, command: SetInstrumentLimits) -> list[Event]:
        book = self.books.get(command.instrument)
        if book is None:
            return [CommandRejected(CommandName.SET_INSTRUMENT_LIMITS, RejectReason.UNKNOWN_INSTRUMENT, command.instrument)]
        band, max_qty = command.band_bps, command.max_order_qty_t
        if (band is not None and band < 0) or (max_qty is not None and max_qty <= 0):
            return [CommandRejected(CommandName.SET_INSTRUMENT_LIMITS, RejectReason.AMOUNT_NOT_POSITIVE, command.instrument)]
        if band is not None and band >= 10_000:  # a band of 100 % or more would let the price reach 0
            return [CommandRejected(CommandName.SET_INSTRUMENT_LIMITS, RejectReason.LIMIT_OUT_OF_RANGE, command.instrument)]
        events = book.set_limits(command.band_bps, command.max_order_qty_t)
        self.risk.apply(events)
        return events

    def _start_day(self, command: StartDay) -> list[Event]:
        if not is_trading_day(command.trading_day):
            return [CommandRejected(CommandName.START_DAY, RejectReason.DAY_NOT_A_DATE, command.trading_day)]
        not_trading = self.calendar.why_not_trading(date.fromisoformat(command.trading_day)) if self.calendar else None
        if not_trading is not None:
            reason = RejectReason.DAY_IS_WEEKEND if not_trading == "weekend" else RejectReason.DAY_IS_HOLIDAY
            return [CommandRejected(CommandName.START_DAY, reason, command.trading_day)]
        if self.day_open:
            return [CommandRejected(CommandName.START_DAY, RejectReason.DAY_ALREADY_OPEN)]
        if command.trading_day <= self.trading_day:
            return [CommandRejected(CommandName.START_DAY, RejectReason.DAY_NOT_AFTER_PREVIOUS)]
        self.opening = DayOpening(self.last_seq, self.trading_day)
        self.trading_day = command.trading_day
        self.day_open = True
        self.risk.start_day()
        events: list[Event] = []
        for symbol in self._symbols:
            events.extend(self.books[symbol].start_day(command.trading_day))
        self.risk.apply(events)
        return events

    def _end_day(self) -> list[Event]:
        if not self.day_open:
            return [CommandRejected(CommandName.END_DAY, RejectReason.DAY_NOT_OPEN)]
        self.day_open = False
        self.opening = None  # an ended day is binding
        events: list[Event] = []
        for symbol in self._symbols:
            events.extend(self.books[symbol].end_day())
        self.risk.apply(events)
        events.extend(self.risk.end_day(self.trading_day))
        return events

    def _void_day(self, command: VoidDay) -> list[Event]:
        reason = self._void_refusal(command)
        if reason is not None:
            return [CommandRejected(CommandName.VOID_DAY, reason, command.trading_day)]
        assert self.opening is not None
        start_seq, previous = self.opening.start_seq, self.opening.previous_trading_day
        events: list[Event] = []
        for symbol in self._symbols:
            events.extend(self.books[symbol].cancel_entered_since(start_seq, CancelReason.DAY_VOIDED))
        cancelled = len(events)
        self.risk.apply(events)
        events.extend(self.risk.void_day())
        self.trading_day, self.day_open, self.opening = previous, False, None
        events.append(DayVoided(command.trading_day, previous, cancelled))
        return events

    def _void_refusal(self, command: VoidDay) -> RejectReason | None:
        if not self.day_open or self.opening is None:
            return RejectReason.VOID_NO_DAY_OPEN
        if command.trading_day != self.trading_day:
            return RejectReason.VOID_NOT_THE_OPEN_DAY
        if any(book.stats.trade_count for book in self.books.values()):
            return RejectReason.VOID_DAY_HAS_TRADES
        return None

    # -- state -----------------------------------------------------------------------------

    def state(self) -> CoreState:
        return CoreState(
            self.last_seq, self.trading_day, self.day_open, self.trade_ids.last,
            [self.books[symbol].state() for symbol in self._symbols], self.risk.state(), self.opening,
        )

    def restore(self, state: CoreState) -> None:
        """Load a snapshot into a freshly built core (same instruments)."""
        assert self.last_seq == 0, "restore needs a fresh core"
        assert [b.symbol for b in state.books] == self._symbols, "snapshot lists other instruments"
        self.last_seq = state.last_seq
        self.trading_day = state.trading_day
        self.day_open = state.day_open
        self.opening = state.opening
        self.trade_ids.last = state.last_trade_id
        for book_state in state.books:
            self.books[book_state.symbol].restore(book_state)
        self.risk.restore(state.risk)

    def state_hash(self) -> str:
        """SHA-256 of the canonical state bytes: equal states, equal hashes."""
        return hashlib.sha256(encode_state(self.state())).hexdigest()


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(CoreState)


def encode_state(state: CoreState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(data: bytes) -> CoreState:
    return _state_decoder.decode(data)
