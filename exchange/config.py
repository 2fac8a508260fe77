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
from exchange.risk.limits import LIMIT_MAXIMA, RiskLimits, RiskPolicy
from exchange.risk.schedule import SessionSchedule
# The calendar's steps, handed on to the shell that runs them (the gateway's calendar driver),
# which sees the risk room only through the configuration.
from exchange.risk.schedule import DayAction as DayAction, DayStep as DayStep, next_action as next_action

PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=2**62)]
TimeoutMs = Annotated[int, msgspec.Meta(ge=1, le=3_600_000)]  # up to an hour


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


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    max_order_value_fen: Annotated[int, msgspec.Meta(ge=1, le=LIMIT_MAXIMA["max_order_value_fen"])] = RiskLimits().max_order_value_fen
    orders_per_second: Annotated[int, msgspec.Meta(ge=1, le=LIMIT_MAXIMA["orders_per_second"])] = RiskLimits().orders_per_second
    order_burst: Annotated[int, msgspec.Meta(ge=1, le=LIMIT_MAXIMA["order_burst"])] = RiskLimits().order_burst
    max_open_orders: Annotated[int, msgspec.Meta(ge=1, le=LIMIT_MAXIMA["max_open_orders"])] = RiskLimits().max_open_orders


class RiskConfig(msgspec.Struct, forbid_unknown_fields=True):
    position_limit_t: PositiveInt = 1_000_000  # others; covered entities add their allocation
    large_holder_bps: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 8_000
    holding_days: Annotated[int, msgspec.Meta(ge=0, le=30)] = 1  # T+1
    same_day_proceeds: bool = True
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)

    def policy(self) -> RiskPolicy:
        limits = RiskLimits(**msgspec.structs.asdict(self.limits))
        return RiskPolicy(self.position_limit_t, self.large_holder_bps, self.holding_days, self.same_day_proceeds, limits)


class CalendarConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The trading calendar (``docs/trading-day.md``): sessions in local exchange time, the
    weekend and holidays (no trading day), and when ``exchange serve`` runs the day's steps."""

    sessions: list[tuple[str, str]] = msgspec.field(default_factory=lambda: [("09:30", "11:30"), ("13:00", "15:00")])
    holidays: list[str] = msgspec.field(default_factory=list)
    utc_offset_hours: Annotated[int, msgspec.Meta(ge=-12, le=14)] = 8
    weekend: list[str] = msgspec.field(default_factory=lambda: ["saturday", "sunday"])
    # The operator API opens a day only this many days before or after today's date (local
    # exchange time): a typo such as 2062-11-25 would otherwise lock out every earlier date.
    max_days_from_today: Annotated[int, msgspec.Meta(ge=0, le=36_600)] = 7
    # ``exchange serve`` runs the day by this calendar (start of day, phases, end of day,
    # settlement); false leaves every step to the operator API.
    automatic: bool = True
    start_of_day_lead_minutes: Annotated[int, msgspec.Meta(ge=0, le=720)] = 15  # before the first session
    settle_delay_minutes: Annotated[int, msgspec.Meta(ge=0, le=720)] = 30  # after the close

    def schedule(self) -> SessionSchedule:
        try:
            return SessionSchedule(
                self.sessions, self.holidays, self.utc_offset_hours, self.weekend,
                self.start_of_day_lead_minutes, self.settle_delay_minutes,
            )
        except ValueError as error:
            raise ConfigError(f"calendar: {error}") from None


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The member gateway's flood limits (``exchange/gateway/member/budget.py``): a budget left
    out is derived from ``[risk.limits]``, so lifting the order rate lifts these too; and its
    connection caps and timeouts (``exchange/gateway/connections.py``, docs/security.md)."""

    session_frames_per_second: PositiveInt | None = None  # 2 x orders_per_second
    session_frame_burst: PositiveInt | None = None  # 2 x order_burst
    member_frames_per_second: PositiveInt | None = None  # 4 x orders_per_second, all sessions together
    member_frame_burst: PositiveInt | None = None  # 4 x order_burst
    member_max_pending: PositiveInt | None = None  # commands waiting for the engine: 4 x order_burst

    # Connections before logon (exchange/gateway/connections.py, issue 10 finding 1). The
    # total cap is further lowered at start to RLIMIT_NOFILE - descriptors open - the
    # reserve, so connections never take the descriptors the stores need.
    max_connections: PositiveInt = 10_000
    max_connections_per_address: PositiveInt = 100
    descriptor_reserve: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 128
    # A connection's first request head (TLS handshake included) within this of the accept.
    header_timeout_ms: TimeoutMs = 10_000
    # A request body, complete, within this of its head (then 408 and the connection closed).
    body_timeout_ms: TimeoutMs = 10_000
    # A kept-alive HTTP connection with no request for this long is closed (aiohttp's keepalive_timeout).
    idle_timeout_ms: TimeoutMs = 30_000
    # A WebSocket that has not logged on this long after its upgrade is closed (logon_timeout).
    logon_timeout_ms: TimeoutMs = 10_000


class OperatorConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The operator API (``exchange/gateway/operator/api.py``)."""

    # How long a token made by rotation stays valid unless the request says; 0: no expiry.
    token_lifetime_days: Annotated[int, msgspec.Meta(ge=0, le=3_660)] = 0


class Config(msgspec.Struct, forbid_unknown_fields=True):
    market: MarketConfig = msgspec.field(default_factory=MarketConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    calendar: CalendarConfig = msgspec.field(default_factory=CalendarConfig)
    operator: OperatorConfig = msgspec.field(default_factory=OperatorConfig)
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
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
    config.listed_instruments()  # surface bad values at start-up
    config.calendar.schedule()
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
