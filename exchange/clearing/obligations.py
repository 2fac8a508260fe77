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
from dataclasses import dataclass, field

import msgspec

CASH = "cash"  # the asset name of money; instrument symbols are upper case


@dataclass(slots=True)
class NetPosition:
    """One member's day in one asset: what it bought and sold, and the net it owes."""

    bought: int = 0  # tonnes received, or fen received for cash
    sold: int = 0  # tonnes delivered, or fen paid for cash

    @property
    def net(self) -> int:
        """+ to deliver (or pay), - to receive."""
        return self.sold - self.bought


@dataclass(slots=True)
class TradeLeg:
    """One trade as settlement sees it: the rows of the trade store, in trade id order."""

    trade_id: int
    instrument: str
    price_fen: int
    qty_t: int
    buyer: str
    seller: str

    @property
    def value_fen(self) -> int:
        return self.price_fen * self.qty_t


@dataclass
class DayObligations:
    trading_day: str
    trades: list[TradeLeg]
    net: dict[str, dict[str, NetPosition]] = field(default_factory=dict)  # member -> asset -> net
    digest: str = ""
    value_fen: int = 0
    volume_t: int = 0

    @classmethod
    def from_trades(cls, trading_day: str, rows: list[tuple]) -> "DayObligations":
        """``rows`` are the day's trades in trade id order as (trade id, instrument, price,
        quantity, buyer, seller): ``TradeStore.day_trade_legs``."""
        trades = [TradeLeg(*row) for row in rows]
        day = cls(trading_day, trades)
        day._add_up()
        day.digest = trades_digest(trading_day, trades)
        return day

    def _add_up(self) -> None:
        net = self.net
        for trade in self.trades:
            value = trade.price_fen * trade.qty_t
            self.value_fen += value
            self.volume_t += trade.qty_t
            buyer = net.get(trade.buyer) or net.setdefault(trade.buyer, {})
            seller = net.get(trade.seller) or net.setdefault(trade.seller, {})
            _position(buyer, trade.instrument).bought += trade.qty_t
            _position(buyer, CASH).sold += value
            _position(seller, trade.instrument).sold += trade.qty_t
            _position(seller, CASH).bought += value

    def members(self) -> list[str]:
        return sorted(self.net)

    def gross_pay_fen(self, member: str) -> int:
        position = self.net.get(member, {}).get(CASH)
        return position.sold if position else 0

    def net_pay_fen(self, member: str) -> int:
        position = self.net.get(member, {}).get(CASH)
        return position.net if position else 0


def _position(assets: dict[str, NetPosition], asset: str) -> NetPosition:
    found = assets.get(asset)
    if found is None:
        found = assets[asset] = NetPosition()
    return found


def leg_id(trading_day: str, trade_id: int, leg: str) -> str:
    return f"settle:{trading_day}:T{trade_id}:{leg}"


def member_leg_id(trading_day: str, member: str, leg: str) -> str:
    return f"settle:{trading_day}:M:{member}:{leg}"


def trades_digest(trading_day: str, trades: list[TradeLeg]) -> str:
    """A fingerprint of the day's trades, taken when settlement freezes them: a later run
    that finds other trades for the day stops instead of settling something else."""
    rows = [(t.trade_id, t.instrument, t.price_fen, t.qty_t, t.buyer, t.seller) for t in trades]
    return hashlib.blake2b(msgspec.msgpack.encode([trading_day, rows]), digest_size=16).hexdigest()
