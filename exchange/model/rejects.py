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

    def __new__(cls, code: int, text: str) -> RejectReason:
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
    # -- 2xx: member accounts and pre-trade risk ----------------------------------------
    UNKNOWN_MEMBER = 201, "The member is not registered with the exchange."
    MEMBER_RESTRICTED = 202, "The member is restricted: it may only cancel or reduce orders."
    MEMBER_SUSPENDED = 203, "The member is suspended: it may only cancel orders."
    MEMBER_FROZEN = 204, "The member is frozen: it may only cancel orders, and may not withdraw."
    MEMBER_KILLED = 205, "The member's kill switch is on: new orders are refused until it is restored."
    INSUFFICIENT_FUNDS = 206, "Available cash does not cover price x quantity of the buy order."
    INSUFFICIENT_ALLOWANCES = 207, "Available allowances do not cover the sell order (no short selling)."
    ALLOWANCES_NOT_YET_SELLABLE = 208, "The allowances were bought too recently to be sold (the T+1 rule)."
    ORDER_VALUE_ABOVE_MAXIMUM = 209, "Price x quantity exceeds the member's maximum order value."
    POSITION_LIMIT = 210, "Holdings plus pending buys would exceed the member's position limit."
    INSTRUMENT_HALTED = 211, "Trading in the instrument is suspended."
    MARKET_CLOSED = 212, "The market is temporarily closed."
    OUTSIDE_TRADING_HOURS = 213, "Continuous trading is not in session."
    THROTTLED = 214, "The member sends orders faster than its order rate allows."
    TOO_MANY_OPEN_ORDERS = 215, "The member already has its maximum number of open orders."
    INSUFFICIENT_AVAILABLE = 216, "A withdrawal larger than what is available."
    MEMBER_ALREADY_REGISTERED = 217, "A member with that id is already registered."
    AMOUNT_NOT_POSITIVE = 218, "A deposit, withdrawal or limit that is zero or negative."
    STATUS_UNCHANGED = 219, "The member or instrument is already in the requested state."
    HOLDING_LOAD_DURING_TRADING = 220, "Holdings load from the registry only before trading starts or after the close."
    HOLDING_BELOW_COMMITTED = 221, "The registry holding is less than open sell orders and locked purchases commit."
    LIMIT_OUT_OF_RANGE = 222, "A limit above its allowed maximum."
    REFERENCE_REUSED = 223, "The member already used this reference for a different deposit or withdrawal (another amount or direction)."
    PROCEEDS_NOT_SETTLED = 224, "A withdrawal larger than the settled cash: today's sale proceeds buy at once but are paid out after settlement."
    # -- 5xx: the engine ------------------------------------------------------------------
    UNKNOWN_INSTRUMENT = 501, "The command names an instrument the exchange does not list."
    DAY_NOT_OPEN = 502, "An order command arrived while no trading day is open."
    DAY_ALREADY_OPEN = 503, "A start-of-day arrived while a trading day is open."
    DAY_NOT_AFTER_PREVIOUS = 504, "A start-of-day named a date not after the last trading day."
    PHASE_OUT_OF_ORDER = 505, "A trading-phase change that does not follow the day's schedule."
    DAY_NOT_A_DATE = 506, "A start-of-day named a day that is not a calendar date (YYYY-MM-DD)."
    VOID_NO_DAY_OPEN = 507, "A void arrived while no trading day is open; a closed day is binding: settle it."
    VOID_NOT_THE_OPEN_DAY = 508, "The void names another day than the trading day that is open."
    VOID_DAY_HAS_TRADES = 509, "The day has trades, so it is binding: end it and settle it as it is."
    DAY_IS_WEEKEND = 510, "A start-of-day named a day of the calendar's weekend ([calendar] weekend): no trading day."
    DAY_IS_HOLIDAY = 511, "A start-of-day named a holiday of the calendar ([calendar] holidays): no trading day."
