"""The vocabulary of the exchange: units, instruments, enums, commands, events, rejects."""

from exchange.model.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    EndDay,
    MassCancel,
    StartDay,
    SubmitOrder,
)
from exchange.model.enums import CancelReason, InstrumentKind, OrderType, SelfTradePolicy, Side, TimeInForce
from exchange.model.events import (
    AmendRejected,
    CancelRejected,
    CommandRejected,
    DayClosed,
    DayStarted,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from exchange.model.instruments import Instrument
from exchange.model.rejects import RejectReason

__all__ = [
    "AmendOrder", "AmendRejected", "CancelOrder", "CancelReason", "CancelRejected", "Command",
    "CommandRejected", "DayClosed", "DayStarted", "EndDay", "Event", "Instrument",
    "InstrumentKind", "MassCancel", "OrderAccepted", "OrderAmended", "OrderCancelled",
    "OrderExpired", "OrderFilled", "OrderRejected", "OrderType", "RejectReason",
    "SelfTradePolicy", "Side", "StartDay", "SubmitOrder", "TimeInForce",
]
