"""Accounts and two-phase holds: the ledger of the risk room.

A **hold** sets aside an amount of one asset of one account for one thing that may later
need it: an order on the book today; a block quote, an auction bid or a buy-back offer as
those rooms arrive. What is held leaves ``available`` for ``reserved`` until the hold is

* **committed** (in whole or in part): the committed amount leaves ``reserved``; what is
  ``paid`` of it becomes the account's obligation for the day (+, to deliver or pay at
  settlement) and the rest goes back to ``available`` (a buy filled below its limit), or
* **released**: what is left goes back to ``available`` (a cancel, an expiry, a withdrawn
  bid).

The receiving side of a trade is credited by the room that made it (a buyer's allowances
are locked for T+1, a seller's proceeds may wait for settlement): that is venue rule, not
ledger mechanics.

Decisions:

* A hold id names what it backs: a ``HoldKind`` and an integer id (the exchange order id,
  the quote id, the bid id). Each kind has its own ``HoldBook``, a dict keyed by the bare int,
  so the order path allocates no tuple per order and ids of different rooms never collide.
* Assets are instrument symbols and ``CASH``: money is held in fen, allowances in tonnes.
  ``CASH`` is lower case, which no ``Symbol`` can be.
* A cash hold that backs a quantity remembers its price (``price_fen``, the limit of a buy
  or the price of a bid), so that a commit per tonne can release the price improvement.
* Misuse is a broken invariant, not an expected failure: holding more than is available,
  holding under an id in use, committing more than is held and committing or releasing an
  unknown (or already released) id all fail an assertion. A caller checks first
  (``Ledger.check_hold`` answers with the numbered reason), then holds; there is no rollback.
* A hold committed down to zero closes by itself; releasing it afterwards is an error like
  any unknown id.
"""

from __future__ import annotations

import msgspec

from exchange.model.enums import AccountKind, HoldKind
from exchange.model.rejects import RejectReason
from exchange.risk.accounts import HOUSE_ACCOUNTS, Account, house_account

CASH = "cash"  # the asset name of money (fen); instrument symbols are upper case


class Hold(msgspec.Struct, gc=False):
    """What one hold still sets aside."""

    account: Account
    asset: str  # CASH or an instrument symbol
    amount: int  # fen for CASH, else tonnes; always > 0 while the hold is open
    price_fen: int = 0  # a cash hold backing a quantity: the price per tonne it was held at


class HoldBook:
    """The open holds of one kind, by integer id."""

    __slots__ = ("kind", "held")

    def __init__(self, kind: HoldKind) -> None:
        self.kind = kind
        self.held: dict[int, Hold] = {}

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, hold_id: int) -> bool:
        return hold_id in self.held

    def get(self, hold_id: int) -> Hold | None:
        return self.held.get(hold_id)

    def hold(self, hold_id: int, account: Account, asset: str, amount: int, price_fen: int = 0) -> None:
        """Set ``amount`` of ``asset`` aside from the account's available balance."""
        held = self.held
        assert hold_id not in held, f"hold {self.kind.name} {hold_id} is already open"
        assert amount > 0, f"hold {self.kind.name} {hold_id} of {amount}"
        if asset == CASH:
            assert account.cash_available_fen >= amount, f"hold {self.kind.name} {hold_id}: {account.member_id} lacks the cash"
            account.cash_available_fen -= amount
            account.cash_reserved_fen += amount
        else:
            holding = account.holdings.get(asset)
            assert holding is not None and holding.available_t >= amount, (
                f"hold {self.kind.name} {hold_id}: {account.member_id} lacks the {asset}"
            )
            holding.available_t -= amount
            holding.reserved_t += amount
        held[hold_id] = Hold(account, asset, amount, price_fen)

    def adjust(self, hold_id: int, amount: int, price_fen: int | None = None) -> Hold:
        """Hold ``amount`` in total from now on (more, from available; less, back to it)."""
        hold = self.held.get(hold_id)
        assert hold is not None, f"adjust of unknown hold {self.kind.name} {hold_id}"
        assert amount > 0, f"adjust of hold {self.kind.name} {hold_id} to {amount}"
        change = amount - hold.amount
        account = hold.account
        if hold.asset == CASH:
            assert change <= account.cash_available_fen, f"adjust of hold {self.kind.name} {hold_id} without the cash"
            account.cash_available_fen -= change
            account.cash_reserved_fen += change
        else:
            holding = account.holdings[hold.asset]
            assert change <= holding.available_t, f"adjust of hold {self.kind.name} {hold_id} without the {hold.asset}"
            holding.available_t -= change
            holding.reserved_t += change
        hold.amount = amount
        if price_fen is not None:
            hold.price_fen = price_fen
        return hold

    def commit(self, hold_id: int, amount: int, paid: int | None = None) -> Hold:
        """Take ``amount`` out of the hold: ``paid`` of it (all, by default) becomes the
        account's obligation, the rest returns to available. Returns the hold (closed, and
        forgotten, when nothing is left in it)."""
        held = self.held
        hold = held.get(hold_id)
        assert hold is not None, f"commit of unknown hold {self.kind.name} {hold_id}"
        left = hold.amount - amount
        if paid is None:
            paid = amount
        assert 0 < amount and left >= 0 and 0 <= paid <= amount, (
            f"commit of {amount} (paid {paid}) from hold {self.kind.name} {hold_id} holding {hold.amount}"
        )
        account = hold.account
        if hold.asset == CASH:
            account.cash_reserved_fen -= amount
            account.cash_obligation_fen += paid
            account.cash_available_fen += amount - paid
        else:
            holding = account.holdings[hold.asset]
            holding.reserved_t -= amount
            holding.obligation_t += paid
            holding.available_t += amount - paid
        hold.amount = left
        if not left:
            del held[hold_id]
        return hold

    def commit_qty(self, hold_id: int, qty: int, price_fen: int) -> Hold:
        """Commit ``qty`` tonnes' worth of a priced cash hold (a buy, a bid) executed at
        ``price_fen``: the hold gives up its own price x qty, price_fen x qty is paid and the
        difference (the price improvement) returns to available."""
        hold = self.held.get(hold_id)
        assert hold is not None, f"commit of unknown hold {self.kind.name} {hold_id}"
        assert hold.asset == CASH and 0 < price_fen <= hold.price_fen, (
            f"commit at {price_fen} from hold {self.kind.name} {hold_id} at {hold.price_fen}"
        )
        return self.commit(hold_id, hold.price_fen * qty, price_fen * qty)

    def release(self, hold_id: int) -> Hold:
        """Close the hold and return what is left in it to available."""
        hold = self.held.pop(hold_id, None)
        assert hold is not None, f"release of unknown or already closed hold {self.kind.name} {hold_id}"
        amount = hold.amount
        account = hold.account
        if hold.asset == CASH:
            account.cash_reserved_fen -= amount
            account.cash_available_fen += amount
        else:
            holding = account.holdings[hold.asset]
            holding.reserved_t -= amount
            holding.available_t += amount
        return hold


class Ledger:
    """Every account the exchange keeps (the members' and the house's) and the holds on them."""

    def __init__(self) -> None:
        self.members: dict[str, Account] = {}  # by member id, in registration order
        self.house: dict[str, Account] = {
            account_id: house_account(kind) for kind, account_id in HOUSE_ACCOUNTS.items()
        }
        self.holds: dict[HoldKind, HoldBook] = {kind: HoldBook(kind) for kind in HoldKind}
        self.orders = self.holds[HoldKind.ORDER]  # the hot path's book, bound once

    def account(self, account_id: str) -> Account | None:
        """A member's or a house account by id; None when no such account is registered."""
        return self.members.get(account_id) or self.house.get(account_id)

    def house_account(self, kind: AccountKind) -> Account:
        return self.house[HOUSE_ACCOUNTS[kind]]

    def all_accounts(self) -> list[Account]:
        """Members in registration order, then the house accounts in their fixed order."""
        return [*self.members.values(), *self.house.values()]

    @staticmethod
    def check_hold(account: Account, asset: str, amount: int) -> RejectReason | None:
        """Why ``amount`` of ``asset`` cannot be held on the account now, or None."""
        if amount <= 0:
            return RejectReason.AMOUNT_NOT_POSITIVE
        if asset == CASH:
            return None if amount <= account.cash_available_fen else RejectReason.INSUFFICIENT_FUNDS
        return allowance_shortfall(account, asset, amount)


def allowance_shortfall(account: Account, symbol: str, qty: int) -> RejectReason | None:
    """Why ``qty`` tonnes of ``symbol`` cannot be held (sold, offered) now, or None: allowances
    still inside the holding period are owned but not yet sellable (T+1)."""
    holding = account.holdings.get(symbol)
    available = holding.available_t if holding is not None else 0
    if qty <= available:
        return None
    if holding is not None and qty <= available + holding.locked_t:
        return RejectReason.ALLOWANCES_NOT_YET_SELLABLE
    return RejectReason.INSUFFICIENT_ALLOWANCES
