"""A trading day's obligations, worked out from its trades: gross per trade, net per member.

Every trade owes two things: the seller delivers the allowances to the buyer (a registry
transfer) and the buyer pays the seller price x quantity (a cash ledger transfer). Each leg
carries an idempotency id derived from the trading day, the trade id and the leg, so that a
leg posted once is never posted again, however often settlement runs:

    settle:2026-11-23:T1234:allowance      seller -> buyer, in the registry
    settle:2026-11-23:T1234:cash           buyer -> seller, in the cash ledger

The registry unit of an instrument is its symbol (``CEA-2025``, ``CCER``), and a member's
registry account and cash account are both named by its member id.

The net per member and asset (``+`` to deliver or pay, ``-`` to receive) goes on the
statements, is what each member's cash is held for before delivery, and must equal the
exchange's own view of the day's obligations (the closing positions).
"""

from __future__ import annotations

import hashlib
import msgspec

CASH = "cash"  # the asset name of money; instrument symbols are upper case


class TradeLeg(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One trade as settlement sees it (a row of the trade store, in trade id order)."""

    trade_id: int
    instrument: str
    price_fen: int
    qty_t: int
    buyer: str
    seller: str


class DayObligations:
    """The day's trades with what each member owes, per asset: ``received`` and ``delivered``
    count tonnes of an instrument, or fen of ``cash`` (delivered = paid)."""

    def __init__(self, trading_day: str, trades: list[TradeLeg]) -> None:
        self.trading_day = trading_day
        self.trades = trades
        self.received: dict[tuple[str, str], int] = {}  # (member, asset) -> amount
        self.delivered: dict[tuple[str, str], int] = {}
        self.value_fen = self.volume_t = 0
        self._add_up()
        self.digest = trades_digest(trading_day, trades)

    @classmethod
    def from_trades(cls, trading_day: str, rows: list[tuple]) -> "DayObligations":
        """``rows`` are the day's trades in trade id order as (trade id, instrument, price,
        quantity, buyer, seller): ``TradeStore.day_trade_legs``."""
        return cls(trading_day, [TradeLeg(*row) for row in rows])

    def _add_up(self) -> None:
        # The tightest loop of settlement set-up: plain dicts of ints, one pass.
        received, delivered = self.received, self.delivered
        value_total = volume = 0
        for trade in self.trades:
            qty, buyer, seller = trade.qty_t, (trade.buyer, trade.instrument), (trade.seller, trade.instrument)
            value = trade.price_fen * qty
            value_total += value
            volume += qty
            received[buyer] = received.get(buyer, 0) + qty
            delivered[seller] = delivered.get(seller, 0) + qty
            payer, payee = (trade.buyer, CASH), (trade.seller, CASH)
            delivered[payer] = delivered.get(payer, 0) + value
            received[payee] = received.get(payee, 0) + value
        self.value_fen, self.volume_t = value_total, volume

    def members(self) -> list[str]:
        return sorted({member for member, _ in self.received} | {member for member, _ in self.delivered})

    def net(self, member: str, asset: str) -> int:
        """+ to deliver (or pay), - to receive."""
        return self.delivered.get((member, asset), 0) - self.received.get((member, asset), 0)

    def nets(self) -> dict[tuple[str, str], int]:
        """Every (member, asset) with a non-zero net."""
        keys = self.received.keys() | self.delivered.keys()
        return {key: net for key in keys if (net := self.net(*key))}

    def gross_pay_fen(self, member: str) -> int:
        return self.delivered.get((member, CASH), 0)

    def net_pay_fen(self, member: str) -> int:
        return self.net(member, CASH)


def leg_id(trading_day: str, trade_id: int, leg: str) -> str:
    return f"settle:{trading_day}:T{trade_id}:{leg}"


def member_leg_id(trading_day: str, member: str, leg: str) -> str:
    return f"settle:{trading_day}:M:{member}:{leg}"


def trades_digest(trading_day: str, trades: list[TradeLeg]) -> str:
    """A fingerprint of the day's trades, taken when settlement freezes them: a later run
    that finds other trades for the day stops instead of settling something else."""
    return hashlib.blake2b(msgspec.msgpack.encode([trading_day, trades]), digest_size=16).hexdigest()
