"""One case per reject reason, through the engine's door. Every code must have a row."""

from __future__ import annotations

import pytest

from exchange.engine import Engine, ExchangeCore, MemoryJournal
from exchange.model import (
    AmendOrder,
    CancelOrder,
    EndDay,
    Instrument,
    InstrumentKind,
    MassCancel,
    OrderType,
    RejectReason,
    Side,
    StartDay,
    SubmitOrder,
    TimeInForce,
)

SYMBOL = "CEA-2025"
# tick 5 fen, lot 10 t, at most 1,000 t; band +-10 % of 100.00 = 90.00 .. 110.00
INSTRUMENT = Instrument(SYMBOL, InstrumentKind.ALLOWANCE, 10_000, vintage=2025, tick_fen=5, lot_t=10, max_order_qty_t=1_000)
DAY = StartDay("2026-11-23")


def buy(qty: int = 100, price: int | None = 10_000, **kw) -> SubmitOrder:
    return SubmitOrder("alice", SYMBOL, Side.BUY, qty, price, **kw)


RESTING = buy(100, 9_000)  # becomes order id 2 (after StartDay, id 1)

CASES: dict[RejectReason, list] = {
    RejectReason.QTY_NOT_POSITIVE: [DAY, buy(0)],
    RejectReason.QTY_NOT_LOT_MULTIPLE: [DAY, buy(15)],
    RejectReason.QTY_ABOVE_MAXIMUM: [DAY, buy(1_010)],
    RejectReason.PRICE_NOT_POSITIVE: [DAY, buy(100, None)],
    RejectReason.PRICE_NOT_TICK_MULTIPLE: [DAY, buy(100, 10_002)],
    RejectReason.PRICE_OUTSIDE_BAND: [DAY, buy(100, 11_005)],
    RejectReason.MARKET_ORDER_WITH_PRICE: [DAY, buy(100, 10_000, order_type=OrderType.MARKET, tif=TimeInForce.IOC)],
    RejectReason.MARKET_ORDER_MUST_BE_IMMEDIATE: [DAY, buy(100, None, order_type=OrderType.MARKET)],
    RejectReason.UNKNOWN_ORDER: [DAY, RESTING, CancelOrder("bob", SYMBOL, 2)],
    RejectReason.AMEND_NO_CHANGE: [DAY, RESTING, AmendOrder("alice", SYMBOL, 2, 100, 9_000)],
    RejectReason.UNKNOWN_INSTRUMENT: [DAY, SubmitOrder("alice", "CEA-1999", Side.BUY, 10, 10_000)],
    RejectReason.DAY_NOT_OPEN: [buy()],
    RejectReason.DAY_ALREADY_OPEN: [DAY, DAY],
    RejectReason.DAY_NOT_AFTER_PREVIOUS: [DAY, EndDay(), StartDay("2026-11-20")],
}


def run(commands: list) -> list:
    engine = Engine(ExchangeCore([INSTRUMENT]), MemoryJournal(), clock=lambda: 1)
    events: list = []
    for command in commands:
        events = engine.execute(command)
    return events


def test_every_reason_has_a_case() -> None:
    assert set(CASES) == set(RejectReason)


@pytest.mark.parametrize("reason", sorted(CASES), ids=lambda r: f"{int(r)}-{r.name}")
def test_reason_is_produced(reason: RejectReason) -> None:
    events = run(CASES[reason])
    assert [getattr(e, "reason", None) for e in events] == [reason]
    assert reason.text  # every code is documented for the wire


@pytest.mark.parametrize(
    "command",
    [
        CancelOrder("alice", "NOPE", 1),
        AmendOrder("alice", "NOPE", 1, 10, 10_000),
        MassCancel("alice", "NOPE"),
    ],
    ids=["cancel", "amend", "mass-cancel"],
)
def test_unknown_instrument_on_every_order_command(command) -> None:
    assert [e.reason for e in run([DAY, command])] == [RejectReason.UNKNOWN_INSTRUMENT]


@pytest.mark.parametrize("reason", sorted(CASES), ids=lambda r: f"{int(r)}-{r.name}")
def test_a_rejected_command_changes_nothing_but_the_sequence(reason: RejectReason) -> None:
    engine = Engine(ExchangeCore([INSTRUMENT]), MemoryJournal(), clock=lambda: 1)
    *prefix, last = CASES[reason]
    for command in prefix:
        engine.execute(command)
    before = engine.core.state()
    engine.execute(last)
    after = engine.core.state()
    assert after.last_seq == before.last_seq + 1
    assert (after.books, after.trading_day, after.day_open, after.last_trade_id) == (
        before.books, before.trading_day, before.day_open, before.last_trade_id,
    )
