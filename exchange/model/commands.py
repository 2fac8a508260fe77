"""Commands: what members and operators ask of the core. Imperative names, frozen Structs.

The ``Command`` union is what the engine journals; it is tagged so that one decoder, built
once, turns journal records back into commands. Commands encode as arrays (the tag, then
the fields in declaration order): half the bytes of a map and twice as fast to write. So
fields are only ever appended, never reordered or removed, once a journal exists. The
gateway's wire messages are their own structs and are not tied to this layout. Bounds on fields are checked when decoding at
the edge; business rules (lot, tick, band, size) are checked by the core and answered with a
numbered reject.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from exchange.model.enums import OrderType, Side, TimeInForce
from exchange.model.instruments import PriceFen, QtyT, Symbol
from exchange.model.units import MAX_ID

MemberId = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
ClientOrderId = Annotated[str, msgspec.Meta(max_length=64)]
OrderId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
TradingDay = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class SubmitOrder(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """A new order. ``price_fen`` is required for limit orders and absent for market orders."""

    member_id: MemberId
    instrument: Symbol
    side: Side
    qty_t: QtyT
    price_fen: PriceFen | None = None
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    client_order_id: ClientOrderId = ""


class CancelOrder(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    member_id: MemberId
    instrument: Symbol
    order_id: OrderId


class AmendOrder(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Change a resting order's price and/or its open (leaves) quantity.

    ``qty_t`` is the new open quantity, not the original size. Reducing it at the same price
    keeps time priority; a new price or a larger quantity loses it (the order goes to the back
    of its new level, and a price that now crosses trades at once as the aggressor).
    """

    member_id: MemberId
    instrument: Symbol
    order_id: OrderId
    qty_t: QtyT
    price_fen: PriceFen


class MassCancel(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Cancel all of a member's open orders, on one instrument or (``None``) on all."""

    member_id: MemberId
    instrument: Symbol | None = None


class StartDay(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Open a trading day: bands follow from each instrument's previous close."""

    trading_day: TradingDay


class EndDay(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Close the trading day: day orders expire, each instrument's close is struck."""


Command = SubmitOrder | CancelOrder | AmendOrder | MassCancel | StartDay | EndDay
