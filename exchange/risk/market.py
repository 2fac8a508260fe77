"""Market state: the trading phase, instrument halts and temporary closure of the market.

Pure and small on purpose: the pre-trade checks read it on every order, the shell's schedule
and the operators change it by command. The phase follows the day's schedule (pre-open,
continuous, break, continuous, post-close); a halt keeps resting orders and allows cancels;
a closure stops all new orders. ``day_number`` counts trading days started: the holding
period (T+1) is measured in it; a voided day (``VoidDay``) is taken back out of the count.
"""

from __future__ import annotations

from exchange.model.enums import CommandName, TradingPhase
from exchange.model.events import CommandRejected, Event, InstrumentStatusChanged, MarketStatusChanged, TradingPhaseChanged
from exchange.model.rejects import RejectReason

R = RejectReason
_NEXT_PHASES = {
    TradingPhase.PRE_OPEN: (TradingPhase.CONTINUOUS, TradingPhase.POST_CLOSE),
    TradingPhase.CONTINUOUS: (TradingPhase.BREAK, TradingPhase.POST_CLOSE),
    TradingPhase.BREAK: (TradingPhase.CONTINUOUS, TradingPhase.POST_CLOSE),
    TradingPhase.POST_CLOSE: (),
}


class MarketState:
    __slots__ = ("halted", "market_closed", "phase", "day_number")

    def __init__(self) -> None:
        self.halted: dict[str, bool] = {}  # symbol -> halted; absent means trading
        self.market_closed = False
        self.phase = TradingPhase.POST_CLOSE
        self.day_number = 0  # trading days started; the holding period counts these

    def halt(self, symbol: str, halted: bool) -> list[Event]:
        """Halt or resume one instrument; resting orders stay, cancels are allowed."""
        if bool(self.halted.get(symbol)) == halted:
            command = CommandName.HALT_INSTRUMENT if halted else CommandName.RESUME_INSTRUMENT
            return [CommandRejected(command, R.STATUS_UNCHANGED, symbol)]
        if halted:
            self.halted[symbol] = True
        else:
            del self.halted[symbol]
        return [InstrumentStatusChanged(symbol, halted)]

    def close_market(self, closed: bool) -> list[Event]:
        if self.market_closed == closed:
            command = CommandName.CLOSE_MARKET if closed else CommandName.REOPEN_MARKET
            return [CommandRejected(command, R.STATUS_UNCHANGED)]
        self.market_closed = closed
        return [MarketStatusChanged(closed)]

    def set_phase(self, phase: TradingPhase, day_open: bool) -> list[Event]:
        """Follow the day's schedule: pre-open, continuous, break, continuous, post-close."""
        allowed = _NEXT_PHASES.get(self.phase, ()) if day_open else ()
        if phase not in allowed:
            return [CommandRejected(CommandName.SET_TRADING_PHASE, R.PHASE_OUT_OF_ORDER, phase.name)]
        self.phase = phase
        return [TradingPhaseChanged(phase)]

    def start_day(self) -> None:
        self.day_number += 1
        self.phase = TradingPhase.PRE_OPEN

    def end_day(self) -> None:
        self.phase = TradingPhase.POST_CLOSE

    def void_day(self) -> list[Event]:
        """Take back a voided day's start: it does not count as a trading day (so the holding
        period counts the right ones), and the phase is post-close again, as with no day."""
        assert self.day_number > 0, "a voided day was started"
        self.day_number -= 1
        if self.phase == TradingPhase.POST_CLOSE:
            return []
        self.phase = TradingPhase.POST_CLOSE
        return [TradingPhaseChanged(TradingPhase.POST_CLOSE)]
