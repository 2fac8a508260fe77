"""The obligation record: what one trade owes, whatever venue made it.

Every trade, on whatever venue (the continuous book today; block deals, auctions and
buy-backs as those rooms arrive), becomes the same :class:`Obligation`: the seller's account
delivers ``qty_t`` tonnes of ``instrument`` to the buyer's account, and the buyer's account
pays the seller's ``price_fen x qty_t`` fen. Settlement, the trade store and the statements
read nothing else, so a new venue is one more case in :func:`obligation_of`, not a change to
clearing.

Decisions:

* **Accounts, not members.** The counterparties are account ids: a member's (its member id)
  or a house account's (the adjustment reserve, the buy-back fund, the auction proceeds).
  Nothing downstream looks an account up in a table of members.
* **Sources are generic.** ``buy_source`` and ``sell_source`` are the ids of what each side's
  hold backed, in the venue's own id space (for the book: the buy and the sell order id; a
  quote id, a bid id, an offer id later). The venue says which space; a side that had no hold
  (a house account delivering from its own pot) has ``None``.
* **One trade-id space.** Settlement names its legs by the trade id alone
  (``settle:DAY:T<trade>:...``), so every venue's trades must be numbered from the core's one
  trade counter.
* **Pure.** This module imports only the model and msgspec, so the core's risk room can use
  the same record when it books obligations at each fill (it moves to ``exchange.model``
  unchanged when it does: rooms of the core may not import clearing).
"""

from __future__ import annotations

import enum

import msgspec

from exchange.model.events import OrderFilled

CASH = "cash"  # the asset name of money; instrument symbols are upper case


class Venue(enum.IntEnum):
    """Where a trade was made (stored as a small integer in the trade store)."""

    BOOK = 1  # the continuous order book
    BLOCK = 2  # reserved: negotiated block deals and click-to-trade
    AUCTION = 3  # reserved: the regulator's auctions
    BUYBACK = 4  # reserved: the regulator's buy-backs


class Obligation(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One trade as clearing sees it: the seller delivers, the buyer pays.

    ``array_like`` and ``gc=False`` because settlement holds a million of these: they encode
    as plain arrays for the day's digest and cost the garbage collector nothing. The trade
    store's columns carry the fields' names (``TradeStore.day_obligations`` builds records
    positionally from them)."""

    trade_id: int
    venue: Venue
    instrument: str
    qty_t: int
    price_fen: int
    buyer: str  # account id
    seller: str  # account id
    buy_source: int | None  # what the buyer's hold backed (the book: the buy order id)
    sell_source: int | None  # what the seller's hold backed (the book: the sell order id)

    @property
    def value_fen(self) -> int:
        """What the buyer pays the seller."""
        return self.price_fen * self.qty_t


TradeEvent = OrderFilled  # grows into a union as venues arrive (a block deal, an auction award)


def obligation_of(event: TradeEvent) -> Obligation:
    """The obligation of one trade event: the only place a venue's event becomes clearing's
    record, so every consumer agrees on who owes what."""
    return Obligation(
        event.trade_id, Venue.BOOK, event.instrument, event.qty_t, event.price_fen,
        event.buy_member_id, event.sell_member_id, event.buy_order_id, event.sell_order_id,
    )
