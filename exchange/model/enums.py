"""Small closed vocabularies. ``IntEnum`` so they encode as compact integers in the journal
(``CommandName`` is the one ``StrEnum``: it names commands in reject events)."""

from __future__ import annotations

import enum


class Side(enum.IntEnum):
    BUY = 1
    SELL = 2


class OrderType(enum.IntEnum):
    LIMIT = 1
    MARKET = 2  # executes only inside the day's price band and never rests


class TimeInForce(enum.IntEnum):
    DAY = 1  # rests until cancelled or the end of the trading day
    GTC = 2  # rests across days until cancelled (optional in the market rules)
    IOC = 3  # fills what it can at once; the remainder is cancelled
    FOK = 4  # fills completely at once or not at all


class CancelReason(enum.IntEnum):
    MEMBER = 1  # the member asked (cancel or mass cancel)
    IOC_REMAINDER = 2  # an IOC or market order's unfilled remainder
    FOK_UNFILLABLE = 3  # a FOK order that could not fill completely
    SELF_TRADE = 4  # self-trade prevention
    PRICE_OUTSIDE_BAND = 5  # a GTC order left outside the new day's band at the open
    KILL_SWITCH = 6  # the member's kill switch was turned on
    DAY_VOIDED = 7  # accepted on a trading day that was voided (VoidDay)
    # Reasons a MassCancel carries (MassCancel.reason), so that a member can tell who cancelled:
    CANCEL_ON_DISCONNECT = 8  # the member's last session ended (or logged out) with cancel-on-disconnect
    DEAD_MAN_TIMER = 9  # the member's dead-man timer (cancel_after) ran out
    EXCHANGE = 10  # the exchange's operator cancelled the member's orders


class SelfTradePolicy(enum.IntEnum):
    """What happens when an incoming order meets a resting order of the same member."""

    CANCEL_NEWEST = 1  # cancel the incoming remainder (the market-rules default)
    CANCEL_OLDEST = 2  # cancel the resting order and keep matching
    CANCEL_BOTH = 3  # cancel both


class InstrumentKind(enum.IntEnum):
    ALLOWANCE = 1  # tCO2, by vintage: CEA-2024, CEA-2025 ...
    CCER = 2  # certified reductions, tCO2e


class MemberKind(enum.IntEnum):
    COVERED = 1  # a covered entity (>= 10,000 tCO2 a year) with an annual allocation
    VOLUNTARY = 2  # a voluntary participant


class MemberStatus(enum.IntEnum):
    ACTIVE = 1
    RESTRICTED = 2  # may only cancel orders or reduce them
    SUSPENDED = 3  # may only cancel orders
    FROZEN = 4  # may only cancel orders; funds and allowances may not be withdrawn


class TradingPhase(enum.IntEnum):
    """Where the trading day is; the session schedule moves it by command."""

    PRE_OPEN = 1  # the day has started, continuous trading has not
    CONTINUOUS = 2  # 09:30-11:30 and 13:00-15:00
    BREAK = 3  # the midday break
    POST_CLOSE = 4  # after 15:00 until the end of the day


class CommandName(enum.StrEnum):
    """The name of a command, as ``CommandRejected.command`` reports it.

    The values are exactly the command classes' names (the bytes the events carried when this
    was a free string), so msgspec encodes the same bytes. A ``StrEnum`` (a ``str`` and an
    ``Enum``): ``event.command == "StartDay"`` still holds, and ``str()``/f-strings give the value.
    """

    SUBMIT_ORDER = "SubmitOrder"
    CANCEL_ORDER = "CancelOrder"
    AMEND_ORDER = "AmendOrder"
    MASS_CANCEL = "MassCancel"
    START_DAY = "StartDay"
    END_DAY = "EndDay"
    REGISTER_MEMBER = "RegisterMember"
    SET_MEMBER_STATUS = "SetMemberStatus"
    KILL_SWITCH = "KillSwitch"
    DEPOSIT = "Deposit"
    WITHDRAW = "Withdraw"
    LOAD_HOLDING = "LoadHolding"
    HALT_INSTRUMENT = "HaltInstrument"
    RESUME_INSTRUMENT = "ResumeInstrument"
    CLOSE_MARKET = "CloseMarket"
    REOPEN_MARKET = "ReopenMarket"
    SET_TRADING_PHASE = "SetTradingPhase"
    SET_RISK_LIMITS = "SetRiskLimits"
    SET_INSTRUMENT_LIMITS = "SetInstrumentLimits"
    SET_SESSION_GUARD = "SetSessionGuard"
    VOID_DAY = "VoidDay"


class AccountKind(enum.IntEnum):
    """Whose account it is. Only a MEMBER trades on the book; the others are the exchange's
    and the regulator's own accounts, kept beside the members' so that conservation counts
    every fen and tonne (auctions sell from the reserve, buy-backs pay from the fund)."""

    MEMBER = 1
    ADJUSTMENT_RESERVE = 2  # the regulator's allowances for auctions, adjustments and buy-backs
    BUYBACK_FUND = 3  # the special fund that pays for buy-backs
    AUCTION_PROCEEDS = 4  # what auction winners pay
    EXCHANGE_FEES = 5  # the exchange's own fee account


class HoldKind(enum.IntEnum):
    """What a hold backs; with an integer id (the order id, the quote id ...) it names a hold."""

    ORDER = 1  # a resting or incoming order on the book (id: the exchange order id)
    BLOCK_QUOTE = 2  # a negotiated block quote or counter-offer
    AUCTION_BID = 3  # a sealed bid in a regulator auction
    BUYBACK_OFFER = 4  # an offer into a regulator buy-back
