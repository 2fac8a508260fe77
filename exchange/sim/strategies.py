"""What simulated members and the operator decide to do next: pure, seeded, written once.

Every simulated run (the in-process session, the served run over WebSockets, the gateway load
generator) asks these functions for the next *intent* and translates it into its own form: an
engine command, a wire message, an HTTP call. So the styles exist once:

* **makers** quote both sides near their fair value (1 to 30 fen off it);
* **takers** cross the spread: market orders (IOC or FOK) and limit orders at the best
  opposite price (FOK, IOC or day);
* **traders** place day and GTC limit orders around fair value (sometimes through it) and,
  one time in five, trade like takers;
* everyone cancels and amends (reduce, or move and grow), mass-cancels now and then, and sends
  deliberately bad orders (too large, outside the band, more than it can pay for or deliver,
  a zero quantity, a cancel of an id that is not its own) so that rejects show;
* the **operator** now and then halts an instrument or pulls a member's kill switch (each
  undone a few hundred commands later), deposits or withdraws money;
* the **load** mix (:func:`load_turn`, the gateway benchmark's default) is not a member
  style: small day limit orders within 5 ticks of a fixed price and, a fifth of the time, a
  cancel of the member's oldest open order, the request mix the gateway load generator sent
  before it used these strategies (so its figures stay comparable with older runs).

Why the functions look as they do: the in-process run's journal is pinned byte for byte for a
seed (``tests/test_golden_run.py``), so the draws on the generator happen in exactly one
order, the one of the original in-process session. A function never draws more than the
branch it takes needs, and whatever a caller adds (a reference by client order id, a
translation the wire needs) it draws after the intent is made.

Nothing here reads a clock, a socket or the engine: what a member sees comes in through a
:class:`MarketView` (the engine's books in process, the member's own view of the public feed
and of its reports over the wire).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar
from collections.abc import Sequence

from exchange.model import OrderType, Side, TimeInForce

STYLES = ("maker", "taker", "trader", "trader")  # drawn uniformly: half the members are traders
FAIR_MARGIN_FEN = 50  # fair value stays this far inside the band
PASSIVE_QTY_T = (10, 50, 100, 200, 500, 1000, 5000)
AGGRESSIVE_QTY_T = (10, 100, 300, 1000, 3000)
BLOCK_SIZE_QTY_T = 150_000  # too big for open bidding: a block trade
UNAFFORDABLE_QTY_T = 99_000  # more than a member can pay for or deliver
UNDO_AFTER = (100, 500)  # an operator's halt or kill switch is undone this many commands later

# A member's turn, by the roll of one uniform draw: below each bound, that kind of turn.
OPERATOR_SHARE = 0.002
CANCEL_OR_AMEND_BELOW = 0.14
MASS_CANCEL_BELOW = 0.145
BAD_ORDER_BELOW = 0.16

# The load mix (:func:`load_turn`): the gateway load generator's requests before the redesign.
LOAD_CANCEL_SHARE = 0.2  # of turns, when the member has an open order: a cancel of the oldest
LOAD_SPREAD_TICKS = 5  # new orders: uniform over fair value -5 .. +5 ticks (fen)
LOAD_QTY_T = (1, 10)  # new orders: uniform over 1 .. 10 t


class OpenOrder(Protocol):
    """One of the member's open orders as its view knows it."""

    @property
    def order_id(self) -> int | None: ...

    @property
    def price_fen(self) -> int | None: ...

    @property
    def qty_t(self) -> int:
        """The open (leaves) quantity."""
        ...


OrderT = TypeVar("OrderT", bound=OpenOrder)
OrderT_co = TypeVar("OrderT_co", bound=OpenOrder, covariant=True)  # a view only hands orders out


class MarketView(Protocol[OrderT_co]):
    """What a member can see when it decides."""

    def band(self, symbol: str) -> tuple[int, int]:
        """Today's (lower, upper) price band."""
        ...

    def best_price(self, symbol: str, side: Side) -> int | None:
        """The best opposite price an order of ``side`` would trade at, if any."""
        ...

    def market_price(self, symbol: str) -> int | None:
        """A price the market shows (last trade, mid), which pulls fair value; None: none."""
        ...

    def open_orders(self, member_id: str, symbol: str) -> Sequence[OrderT_co]:
        ...

    def unknown_order_id(self, rnd: random.Random) -> int:
        """An order id to cancel that is most likely not the member's (one draw)."""
        ...


@dataclass
class Member:
    """A simulated member's identity and its idea of fair value per instrument (a dict the
    caller may share between members, as the in-process session does)."""

    member_id: str
    style: str
    symbols: list[str]
    fair_fen: dict[str, int]


# -- intents ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewOrderIntent:
    symbol: str
    side: Side
    qty_t: int
    price_fen: int | None  # None: a market order
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    deliberately_bad: bool = False


@dataclass(frozen=True, slots=True)
class CancelIntent(Generic[OrderT]):
    symbol: str
    order: OrderT | None  # None: ``unknown_order_id``, an id that is not the member's
    unknown_order_id: int = 0


@dataclass(frozen=True, slots=True)
class AmendIntent(Generic[OrderT]):
    symbol: str
    order: OrderT
    qty_t: int  # the new open quantity
    price_fen: int


@dataclass(frozen=True, slots=True)
class MassCancelIntent:
    symbol: str | None  # None: every instrument


@dataclass(frozen=True, slots=True)
class OperatorTurn:
    """The member's turn goes to the operator (in process); a served member skips it."""

    member_id: str
    symbol: str


MemberIntent = NewOrderIntent | CancelIntent | AmendIntent | MassCancelIntent | OperatorTurn

OperatorKind = Literal["halt", "resume", "kill", "restore", "deposit", "withdraw"]


@dataclass(frozen=True, slots=True)
class OperatorAction:
    kind: OperatorKind
    symbol: str = ""
    member_id: str = ""
    amount_fen: int = 0


@dataclass(frozen=True, slots=True)
class OperatorDecision:
    """An action and, for a halt or a kill switch, the action undoing it ``undo_after`` later."""

    action: OperatorAction
    undo: OperatorAction | None
    undo_after: int


# -- members -----------------------------------------------------------------------------------


def draw_style(rnd: random.Random) -> str:
    return rnd.choice(STYLES)


def member_turn(rnd: random.Random, member: Member, view: MarketView) -> MemberIntent:
    """The member's next intent: an instrument, fair value moved, then one roll for the kind."""
    symbol = rnd.choice(member.symbols)
    fair = drift_fair(rnd, member, symbol, view)
    roll = rnd.random()
    if roll < OPERATOR_SHARE:
        return OperatorTurn(member.member_id, symbol)
    if roll < CANCEL_OR_AMEND_BELOW:
        return cancel_or_amend(rnd, member, symbol, view)
    if roll < MASS_CANCEL_BELOW:
        return MassCancelIntent(symbol if rnd.random() < 0.5 else None)
    if roll < BAD_ORDER_BELOW:
        return bad_order(rnd, symbol, fair, view)
    return trade(rnd, member, symbol, fair, view)


def trade(rnd: random.Random, member: Member, symbol: str, fair: int, view: MarketView) -> NewOrderIntent:
    """An order in the member's style: takers (and traders one time in five) cross."""
    style = member.style
    if style == "taker" or (style == "trader" and rnd.random() < 0.2):
        return aggressive_order(rnd, symbol, fair, view)
    return passive_order(rnd, style, symbol, fair, view)


def drift_fair(rnd: random.Random, member: Member, symbol: str, view: MarketView) -> int:
    """Fair value random-walks by up to 2 fen; where the view shows a market price it is
    first pulled a quarter of the way toward it. It stays inside the band."""
    previous = member.fair_fen[symbol]
    market = view.market_price(symbol)
    target = previous if market is None else (3 * previous + market + 2) // 4
    lower, upper = view.band(symbol)
    fair = min(max(target + rnd.randint(-2, 2), lower + FAIR_MARGIN_FEN), upper - FAIR_MARGIN_FEN)
    member.fair_fen[symbol] = fair
    return fair


def clamp(price_fen: int, band: tuple[int, int]) -> int:
    return min(max(price_fen, band[0]), band[1])


def passive_order(rnd: random.Random, style: str, symbol: str, fair: int, view: MarketView) -> NewOrderIntent:
    """A limit order near fair value: a maker's inside it, a trader's anywhere from 5 fen
    through it to 60 fen away; one in ten good till cancelled."""
    side = rnd.choice((Side.BUY, Side.SELL))
    offset = rnd.randint(1, 30) if style == "maker" else rnd.randint(-5, 60)
    price = clamp(fair - offset if side is Side.BUY else fair + offset, view.band(symbol))
    tif = TimeInForce.GTC if rnd.random() < 0.1 else TimeInForce.DAY
    qty = rnd.choice(PASSIVE_QTY_T)
    return NewOrderIntent(symbol, side, qty, price, OrderType.LIMIT, tif)


def aggressive_order(rnd: random.Random, symbol: str, fair: int, view: MarketView) -> NewOrderIntent:
    """A market order (IOC, or FOK), or a limit at the best opposite price (FOK, IOC, day)."""
    side = rnd.choice((Side.BUY, Side.SELL))
    qty = rnd.choice(AGGRESSIVE_QTY_T)
    kind = rnd.random()
    if kind < 0.3:
        tif = TimeInForce.FOK if rnd.random() < 0.3 else TimeInForce.IOC
        return NewOrderIntent(symbol, side, qty, None, OrderType.MARKET, tif)
    best = view.best_price(symbol, side)
    price = fair if best is None else best
    tif = TimeInForce.FOK if kind < 0.45 else TimeInForce.IOC if kind < 0.8 else TimeInForce.DAY
    return NewOrderIntent(symbol, side, qty, price, OrderType.LIMIT, tif)


def cancel_or_amend(rnd: random.Random, member: Member, symbol: str, view: MarketView) -> CancelIntent | AmendIntent:
    """Mostly a cancel of one of its open orders; else an amend that halves it, or one that
    moves it up to 10 fen and grows it by 10 t. Sometimes a cancel of an id not its own."""
    orders = view.open_orders(member.member_id, symbol)
    if not orders or rnd.random() < 0.05:
        return CancelIntent(symbol, None, view.unknown_order_id(rnd))
    order = rnd.choice(orders)
    if rnd.random() < 0.75 or order.price_fen is None:
        return CancelIntent(symbol, order)
    if rnd.random() < 0.5 and order.qty_t > 1:
        return AmendIntent(symbol, order, order.qty_t // 2, order.price_fen)
    price = clamp(order.price_fen + rnd.randint(-10, 10), view.band(symbol))
    return AmendIntent(symbol, order, order.qty_t + 10, price)


def bad_order(rnd: random.Random, symbol: str, fair: int, view: MarketView) -> NewOrderIntent:
    """An order the exchange must refuse: a block-sized quantity, a price above the band, a
    quantity the member cannot pay for or deliver, a zero quantity."""
    side = rnd.choice((Side.BUY, Side.SELL))
    choice = rnd.randrange(4)
    if choice == 0:
        return NewOrderIntent(symbol, side, BLOCK_SIZE_QTY_T, fair, deliberately_bad=True)
    if choice == 1:
        return NewOrderIntent(symbol, side, 100, view.band(symbol)[1] + rnd.randint(1, 100), deliberately_bad=True)
    if choice == 2:
        return NewOrderIntent(symbol, side, UNAFFORDABLE_QTY_T, fair, deliberately_bad=True)
    return NewOrderIntent(symbol, side, 0, fair, deliberately_bad=True)



# -- the load mix ------------------------------------------------------------------------------


def load_turn(rnd: random.Random, member: Member, view: MarketView) -> NewOrderIntent | CancelIntent:
    """The gateway benchmark's request mix (not a member style): one roll; below
    ``LOAD_CANCEL_SHARE``, and if the member has an open order, a cancel of its oldest one
    (the first of ``view.open_orders``: a view for this mix lists them oldest first); else a
    day limit order, buy or sell with even odds, 1 to 10 t, priced uniformly within
    ``LOAD_SPREAD_TICKS`` of the member's fair value (which does not move: about half of the
    orders cross and trade), kept inside the band. The instrument is the member's first.

    The draws (roll, side, price, quantity) are those of the load generator before the
    redesign, in the same order: the same seed gives the same requests."""
    symbol = member.symbols[0]
    roll = rnd.random()
    orders = view.open_orders(member.member_id, symbol)
    if orders and roll < LOAD_CANCEL_SHARE:
        return CancelIntent(symbol, orders[0])
    side = Side.BUY if rnd.random() < 0.5 else Side.SELL
    offset = rnd.randrange(2 * LOAD_SPREAD_TICKS + 1) - LOAD_SPREAD_TICKS
    price = clamp(member.fair_fen[symbol] + offset, view.band(symbol))
    qty = rnd.randint(*LOAD_QTY_T)
    return NewOrderIntent(symbol, side, qty, price, OrderType.LIMIT, TimeInForce.DAY)


# -- the operator ------------------------------------------------------------------------------


def operator_action(rnd: random.Random, member_id: str, symbol: str, halted: bool, killed: bool) -> OperatorDecision:
    """A short halt of ``symbol`` (unless halted) or ``member_id``'s kill switch (unless
    pulled), each undone later; else a deposit or a withdrawal (most withdrawals exceed what
    a member has, so they show as refusals)."""
    choice = rnd.randrange(4)
    undo_after = rnd.randrange(*UNDO_AFTER)
    if choice == 0 and not halted:
        return OperatorDecision(OperatorAction("halt", symbol=symbol), OperatorAction("resume", symbol=symbol), undo_after)
    if choice == 1 and not killed:
        return OperatorDecision(
            OperatorAction("kill", member_id=member_id), OperatorAction("restore", member_id=member_id), undo_after
        )
    if choice == 2:
        return OperatorDecision(OperatorAction("deposit", member_id=member_id, amount_fen=rnd.randrange(1, 1_000_000) * 100), None, 0)
    amount = rnd.randrange(1, 2_000_000) * 10_000
    return OperatorDecision(OperatorAction("withdraw", member_id=member_id, amount_fen=amount), None, 0)
