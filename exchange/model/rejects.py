"""Numbered reasons for refusing a command. One range per room; codes are never reused.

=====  ======================================================================
range  room
=====  ======================================================================
1xx    order validation and the order book (``exchange/book``)
2xx    member accounts and pre-trade risk (``exchange/risk``)
3xx    negotiated block transfers (``exchange/block``)
4xx    regulator auctions and buy-backs (``exchange/auction``)
5xx    the engine: routing and the trading-day lifecycle (``exchange/engine``)
=====  ======================================================================

Each code has a test that produces it (``tests/test_reject_reasons.py``).
"""

from __future__ import annotations

import enum


class RejectReason(enum.IntEnum):
    """A reject code with its one-line explanation (``reason.text``) for error messages."""

    text: str

    def __new__(cls, code: int, text: str) -> "RejectReason":
        member = int.__new__(cls, code)
        member._value_ = code
        member.text = text
        return member

    # -- 1xx: order validation and the book ---------------------------------------------
    QTY_NOT_POSITIVE = 101, "The quantity is zero or negative."
    QTY_NOT_LOT_MULTIPLE = 102, "The quantity is not a whole number of lots."
    QTY_ABOVE_MAXIMUM = 103, "The quantity exceeds the instrument's maximum for continuous trading (block trade it)."
    PRICE_NOT_POSITIVE = 104, "A limit order without a positive price."
    PRICE_NOT_TICK_MULTIPLE = 105, "The price is not a multiple of the instrument's tick."
    PRICE_OUTSIDE_BAND = 106, "The price lies outside the day's price band."
    MARKET_ORDER_WITH_PRICE = 107, "A market order carried a price; market orders execute inside the band at any price."
    MARKET_ORDER_MUST_BE_IMMEDIATE = 108, "A market order asked to rest (DAY or GTC); market orders are IOC or FOK."
    UNKNOWN_ORDER = 109, "Cancel or amend of an order that is not open, or not the member's own."
    AMEND_NO_CHANGE = 110, "An amend that changes neither price nor quantity."
    # -- 5xx: the engine ------------------------------------------------------------------
    UNKNOWN_INSTRUMENT = 501, "The command names an instrument the exchange does not list."
    DAY_NOT_OPEN = 502, "An order command arrived while no trading day is open."
    DAY_ALREADY_OPEN = 503, "A start-of-day arrived while a trading day is open."
    DAY_NOT_AFTER_PREVIOUS = 504, "A start-of-day named a date not after the last trading day."
