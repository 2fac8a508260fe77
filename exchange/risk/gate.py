"""The risk gate: the risk room's rooms composed behind the one object the core talks to.

The risk room is split by responsibility, one module each:

* ``holds``    the ledger: every account (members' and the house's) and the two-phase holds
               on them, by hold id (a ``HoldKind`` and an integer id);
* ``checks``   pre-trade checks and the risk limits in force (the check order is documented
               there);
* ``orders``   booking what the order book did into holds, commits and releases;
* ``members``  member administration, money in and out, registry holdings, the day's roll;
* ``market``   market state: trading phase, instrument halts, temporary closure.

``RiskGate`` builds them over one ledger and one market state and keeps the surface the
core (and tools such as ``bench/``, which swap in a pass-through gate) call: ``check_submit``,
``check_amend`` and ``apply`` on the order path, the member and market commands, and
``state``/``restore``. It holds no state of its own beyond the rooms.

Decision: the two rooms on the order path, ``PreTradeChecks`` and ``OrderBooking``, are bases
of the gate rather than members it delegates to. Each is a class of its own module over the
shared ledger and market state (and can be built alone), but a delegating call on every
check and every booking cost measurably (about 2 % of the engine's throughput), and a
subclass that overrides ``check_submit``/``apply`` still sees them as the gate's methods.
The other rooms (``members``, ``market``) are reached through attributes of the same names.
``accounts`` (the members, by id) and ``default_limits`` are attributes; ``halted``,
``market_closed``, ``phase`` and ``day_number`` read through to the market state.
"""

from __future__ import annotations

from collections.abc import Iterable

from exchange.model.commands import Deposit, LoadHolding, RegisterMember, SetMemberStatus, Withdraw
from exchange.model.enums import TradingPhase
from exchange.model.events import Event, MemberPosition
from exchange.risk.checks import OrderValidator, PreTradeChecks
from exchange.risk.holds import Ledger
from exchange.risk.limits import RiskLimits, RiskPolicy
from exchange.risk.market import MarketState
from exchange.risk.members import MemberDesk
from exchange.risk.orders import OrderBooking
from exchange.risk.state import RiskState, account_state, holds_state, restore_ledger

__all__ = ["OrderValidator", "RiskGate"]


class RiskGate(PreTradeChecks, OrderBooking):
    def __init__(self, policy: RiskPolicy, position_symbols: Iterable[str] = ()) -> None:
        """``position_symbols``: the instruments the position limit counts (the allowances;
        certified reductions are another product and do not count)."""
        self.policy = policy
        self.position_symbols = sorted(position_symbols)
        self._compose(Ledger(), MarketState(), policy.limits)

    def _compose(self, ledger: Ledger, market: MarketState, default_limits: RiskLimits) -> None:
        self.ledger = ledger
        PreTradeChecks.__init__(self, ledger, market, default_limits, self.position_symbols)
        OrderBooking.__init__(self, ledger, market, self.policy, self.position_symbols)
        self.members = MemberDesk(ledger, market, self.policy, self.position_symbols)

    # -- read-through views of the market state ------------------------------------------------

    @property
    def halted(self) -> dict[str, bool]:
        return self.market.halted

    @property
    def market_closed(self) -> bool:
        return self.market.market_closed

    @property
    def phase(self) -> TradingPhase:
        return self.market.phase

    @property
    def day_number(self) -> int:
        return self.market.day_number

    # -- members, money and limits ------------------------------------------------------------

    def register(self, cmd: RegisterMember) -> list[Event]:
        return self.members.register(cmd)

    def set_status(self, cmd: SetMemberStatus) -> list[Event]:
        return self.members.set_status(cmd)

    def kill(self, member_id: str) -> list[Event]:
        return self.members.kill(member_id)

    def deposit(self, cmd: Deposit) -> list[Event]:
        return self.members.deposit(cmd)

    def withdraw(self, cmd: Withdraw) -> list[Event]:
        return self.members.withdraw(cmd)

    def load_holding(self, cmd: LoadHolding) -> list[Event]:
        return self.members.load_holding(cmd)

    # -- market controls and the trading day --------------------------------------------------

    def halt(self, symbol: str, halted: bool) -> list[Event]:
        return self.market.halt(symbol, halted)

    def close_market(self, closed: bool) -> list[Event]:
        return self.market.close_market(closed)

    def set_phase(self, phase: TradingPhase, day_open: bool) -> list[Event]:
        return self.market.set_phase(phase, day_open)

    def start_day(self) -> None:
        """A new trading day: the day count and phase move, then every account rolls."""
        self.market.start_day()
        self.members.start_day()

    def void_day(self) -> list[Event]:
        """Take back a voided day's start (after its orders were cancelled and released).

        The accounts' roll into the day stays: it took the previous day as settled, which the
        next start would take again, and nothing traded since (a day with trades is binding)."""
        return self.market.void_day()

    def end_day(self, trading_day: str) -> list[MemberPosition]:
        """Close the day: the phase goes to post-close, and each member's closing position
        is reported, sorted by member id, for settlement to post and reconcile against."""
        self.market.end_day()
        return self.members.positions(trading_day)

    # -- state ----------------------------------------------------------------------------

    def state(self) -> RiskState:
        market, ledger = self.market, self.ledger
        return RiskState(
            market.day_number, market.phase, market.market_closed, sorted(market.halted), self.default_limits,
            [account_state(a) for a in ledger.members.values()],
            [account_state(a) for a in ledger.house.values()],
            holds_state(ledger),
        )

    def restore(self, state: RiskState) -> None:
        assert not self.ledger.members, "restore needs a fresh gate"
        market = MarketState()
        market.day_number = state.day_number
        market.phase = state.phase
        market.market_closed = state.market_closed
        market.halted = {symbol: True for symbol in state.halted}
        self._compose(restore_ledger(state.accounts, state.house, state.holds), market, state.default_limits)
