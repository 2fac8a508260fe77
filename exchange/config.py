"""Configuration: a TOML file decoded into typed structs, defaults from the market rules.

An unknown or ill-typed key is a :class:`ConfigError` at start-up that names the key, e.g.
``config.toml: Object contains unknown field `tick` - at `$.instruments[0]```.

Prices in the file are decimal strings of yuan (``reference_price = "58.20"``), the only
place outside the wire where decimals appear; they become fen on loading, exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from exchange.model.enums import InstrumentKind, SelfTradePolicy
from exchange.model.instruments import Instrument
from exchange.model.units import parse_fen

PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=2**62)]


class ConfigError(Exception):
    """The configuration file is missing, unreadable, or has a bad key or value."""


class InstrumentConfig(msgspec.Struct, forbid_unknown_fields=True):
    symbol: str
    kind: Literal["allowance", "ccer"]
    reference_price: str
    vintage: int | None = None
    tick: str = "0.01"
    lot_t: PositiveInt = 1
    max_order_qty_t: PositiveInt = 99_999  # continuous trading takes < 100,000 t
    band_bps: Annotated[int, msgspec.Meta(ge=0, le=9_999)] = 1_000  # +-10 %

    def to_instrument(self) -> Instrument:
        try:
            return Instrument(
                symbol=self.symbol,
                kind=InstrumentKind.ALLOWANCE if self.kind == "allowance" else InstrumentKind.CCER,
                reference_price_fen=parse_fen(self.reference_price),
                vintage=self.vintage,
                tick_fen=parse_fen(self.tick),
                lot_t=self.lot_t,
                max_order_qty_t=self.max_order_qty_t,
                band_bps=self.band_bps,
            )
        except ValueError as error:
            raise ConfigError(f"instrument {self.symbol!r}: {error}") from None


class MarketConfig(msgspec.Struct, forbid_unknown_fields=True):
    self_trade_policy: Literal["cancel_newest", "cancel_oldest", "cancel_both"] = "cancel_newest"

    @property
    def stp(self) -> SelfTradePolicy:
        return SelfTradePolicy[self.self_trade_policy.upper()]


class EngineConfig(msgspec.Struct, forbid_unknown_fields=True):
    fsync: Literal["never", "batched", "every_command"] = "batched"
    fsync_batch_records: PositiveInt = 1_000
    snapshot_every_commands: PositiveInt = 1_000_000
    snapshots_kept: PositiveInt = 3
    # Freeze long-lived objects out of the garbage collector's sight every so many commands
    # (see exchange/engine/engine.py); 0 leaves the collector alone.
    gc_freeze_every_commands: Annotated[int, msgspec.Meta(ge=0, le=2**62)] = 10_000


def _default_instruments() -> list[InstrumentConfig]:
    return [
        InstrumentConfig("CEA-2024", "allowance", "56.40", vintage=2024),
        InstrumentConfig("CEA-2025", "allowance", "58.20", vintage=2025),
        InstrumentConfig("CCER", "ccer", "62.50"),
    ]


class Config(msgspec.Struct, forbid_unknown_fields=True):
    market: MarketConfig = msgspec.field(default_factory=MarketConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    instruments: list[InstrumentConfig] = msgspec.field(default_factory=_default_instruments)

    def listed_instruments(self) -> list[Instrument]:
        instruments = [item.to_instrument() for item in self.instruments]
        symbols = [i.symbol for i in instruments]
        duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
        if duplicates:
            raise ConfigError(f"instrument listed twice: {', '.join(duplicates)}")
        if not instruments:
            raise ConfigError("no instruments listed")
        return instruments


def parse_config(text: str | bytes, source: str = "config") -> Config:
    try:
        config = msgspec.toml.decode(text, type=Config)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ConfigError(f"{source}: {error}") from None
    config.listed_instruments()  # surface bad instrument values at start-up
    return config


def load_config(path: str | Path | None) -> Config:
    """The file's configuration, or the defaults when ``path`` is None."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    return parse_config(text, str(path))
