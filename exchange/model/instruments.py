"""Listed instruments: allowances by vintage and certified reductions."""

from __future__ import annotations

from typing import Annotated

import msgspec

from exchange.model.enums import InstrumentKind
from exchange.model.units import BASIS_POINTS, MAX_PRICE_FEN, MAX_QTY_T

PriceFen = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRICE_FEN)]
QtyT = Annotated[int, msgspec.Meta(ge=0, le=MAX_QTY_T)]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Z0-9][A-Z0-9-]*$")]


class Instrument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One tradable product and its continuous-trading parameters (market-rules defaults).

    ``reference_price_fen`` is the previous close at listing; from then on the engine keeps the
    close day by day.
    """

    symbol: Symbol
    kind: InstrumentKind
    reference_price_fen: Annotated[int, msgspec.Meta(ge=1, le=MAX_PRICE_FEN)]
    vintage: Annotated[int, msgspec.Meta(ge=2000, le=2100)] | None = None
    tick_fen: Annotated[int, msgspec.Meta(ge=1, le=MAX_PRICE_FEN)] = 1
    lot_t: Annotated[int, msgspec.Meta(ge=1, le=MAX_QTY_T)] = 1
    max_order_qty_t: Annotated[int, msgspec.Meta(ge=1, le=MAX_QTY_T)] = 99_999
    band_bps: Annotated[int, msgspec.Meta(ge=0, le=BASIS_POINTS - 1)] = 1_000

    def __post_init__(self) -> None:
        if self.reference_price_fen % self.tick_fen:
            raise ValueError(f"{self.symbol}: reference_price_fen is not a multiple of tick_fen")
        if self.kind == InstrumentKind.ALLOWANCE and self.vintage is None:
            raise ValueError(f"{self.symbol}: an allowance needs its vintage")
