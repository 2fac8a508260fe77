"""The member protocol on the wire: JSON text frames, one message per frame.

``docs/protocol.md`` describes every message with an example; a test decodes each example, so
the document and this module cannot drift apart.

Decisions:

* **One tagged union each way.** Every message is a frozen msgspec Struct; the tag field is
  ``"type"`` and its values are snake_case (``"new_order"``). One decoder per direction is
  built once; the session dispatches the decoded struct with ``match``. Nothing is ever
  decoded into ``Any``.
* **Strict input.** Inbound structs forbid unknown fields (a misspelt ``"qyt"`` is an error,
  not a silently ignored field). An optional inbound field is ``UNSET`` when absent and
  ``null`` is refused: absent is the only way to leave a field out. JSON numbers are not
  accepted where a string is expected and vice versa (msgspec's strict mode: ``5.0`` is not an
  ``int``, ``true`` is not an ``int``). Identifier fields use ``\\Z`` in their patterns, so a
  trailing newline never passes as part of an id.
* **Prices are strings with exactly two decimal places** (``"58.20"``): yuan and fen, exact,
  never through ``float``. ``exchange.model.units.parse_fen`` is lenient on purpose (it reads
  ``"58.2"``, ``" 58"`` and negative amounts for reports and the config file), so the wire
  has its own strict :func:`parse_price`: ``0``-``1000000.00``, ASCII digits, no sign, no
  leading zeros, no exponent, no spaces; ``format_price(parse_price(s)) == s`` for every
  string it accepts. Quantities are JSON integers of tonnes.
* **Price required for limit orders, absent for market orders.** The wire refuses the other
  combinations (field ``price``) instead of passing them to the engine.
* **Time in force defaults by order type:** ``"day"`` for a limit order, ``"ioc"`` for a
  market order, because a market order never rests and the engine would refuse a DAY market
  order (reject 108).
* **The member id never comes from a frame.** The conversions to engine commands take the
  member id the session authenticated.
* **Cancel and amend name the order by exactly one of** ``order_id`` (the exchange's id) or
  ``client_order_id``. The conversion functions take the resolved exchange id; the session
  resolves a client order id through ``OrderTracker.resolve`` and answers an unknown one with
  a ``cancel_reject`` (reject 109) without troubling the engine.
* **``session_seq``.** Private messages (to one member's session: ``logon_ack``,
  ``execution_report``, ``cancel_reject``, ``mass_cancel_report``, ``error``, ``heartbeat``,
  ``session_closing``) have a ``session_seq`` field, 0 in the struct; ``encode(message, session_seq)`` stamps it
  at send time, so one tracker message can go to several sessions of the same member, each
  with its own gap-free count (1 for ``logon_ack``, +1 per private message). Public market
  data (``book_snapshot``, ``book_update``, ``trade``, ``instrument_status``) carries no
  ``session_seq``: it is encoded once per instrument and sent to every subscriber byte for
  byte; its order is the per-instrument ``seq``.
* **Errors name the field.** :func:`decode_inbound` raises :class:`WireError` with a code
  (:class:`ErrorCode`), the field's path (``"qty"``, ``"instruments[2]"``; ``None`` when the
  frame as a whole is at fault) and a short problem text. msgspec's validation messages carry
  the path (``- at `$.qty```), which is taken from there. Echoed input is truncated.
* **A key given twice is refused** (error 4 naming the field), not resolved last-wins as
  msgspec would: a cheap count proves almost every frame clean (:func:`_keys_distinct`), and
  only the frames it cannot are parsed a second time, keeping every key.
* **The protocol's answers.** ``logout`` is answered by ``session_closing`` (``logged_out``);
  ``mass_cancel`` by a ``mass_cancel_report`` to the asking session (how many orders it
  cancelled, 0 included, or the reject of an unlisted instrument), so every request a member
  sends has an answer it can wait for. ``logon_ack`` lists every instrument's status (phase,
  halt, reference price and band), the same struct the public feed sends on every change.
* **Limits** (frame size, errors per minute, subscriptions per message, dead-man timer) are
  the constants below; the server enforces them. :class:`ErrorBudget` is the pure counter the
  hub keeps per member for the error budget (so reconnecting does not reset it). The frame
  budgets (error 13) are in :mod:`exchange.gateway.member.budget`.
"""

from __future__ import annotations

import enum
import json
import re
from collections import deque
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from exchange.model.commands import AmendOrder, CancelOrder, MassCancel, SubmitOrder
from exchange.model.enums import CancelReason, OrderType, Side, TimeInForce, TradingPhase
from exchange.model.units import FEN_PER_YUAN, MAX_ID, MAX_PRICE_FEN, MAX_QTY_T

# -- limits (the server enforces them) -------------------------------------------------------

MAX_FRAME_BYTES = 64 * 1024  # a text frame, as UTF-8
MAX_ERRORS_PER_MINUTE = 20  # malformed or refused frames before the session is closed
MAX_INSTRUMENTS_PER_SUBSCRIBE = 16
MAX_CANCEL_AFTER_S = 300
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S, DEFAULT_HEARTBEAT_S = 1, 60, 10
_MAX_ECHO_CHARS = 120  # of client input quoted back in an error


class ErrorCode(enum.IntEnum):
    """The ``code`` of an ``error`` message. Codes are never reused."""

    MALFORMED_JSON = 1  # not JSON, or not a JSON object
    INVALID_UTF8 = 2  # the frame is not valid UTF-8
    UNKNOWN_MESSAGE_TYPE = 3  # "type" missing, not a string, or not a message we know
    INVALID_FIELD = 4  # a field missing, unknown, of the wrong type or out of range
    FRAME_TOO_LARGE = 5  # more than MAX_FRAME_BYTES
    NOT_LOGGED_ON = 6  # anything but logon before a successful logon
    NOT_ALLOWED = 7  # a message not allowed now (a second logon)
    DUPLICATE_CLIENT_ORDER_ID = 8  # the client order id was used today by this member
    UNKNOWN_ORDER = 9  # order_status for an order the member does not have
    TOO_MANY_ERRORS = 10  # the error budget is spent; the session closes
    BINARY_FRAME = 11  # the protocol uses text frames only
    LOGON_REFUSED = 12  # bad credentials, clock skew or a reused nonce; the session closes
    THROTTLED = 13  # over the session's or the member's frame budget; nothing of the frame was taken
    TOO_MANY_PENDING = 14  # the member has too many commands waiting for the engine; not taken


class WireError(Exception):
    """A frame the gateway refuses; the session answers it with an ``error`` message."""

    def __init__(self, code: ErrorCode, field: str | None, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.code = code
        self.field = field
        self.problem = problem

    def to_message(self) -> Error:
        return Error(int(self.code), self.field, self.problem)


# -- field types -------------------------------------------------------------------------------

_SYMBOL = r"^[A-Z0-9][A-Z0-9-]*\Z"
_CLIENT_ORDER_ID = r"^[A-Za-z0-9_.:-]+\Z"
_KEY_ID = r"^[A-Za-z0-9_-]{1,64}\Z"
_NONCE = r"^[A-Za-z0-9_-]{16,64}\Z"
_SIGNATURE = r"^[0-9a-fA-F]{64}\Z"
_PATTERN_HELP = {  # what an error says instead of quoting the regular expression
    _SYMBOL: "an instrument symbol: capital letters, digits and '-'",
    _CLIENT_ORDER_ID: "letters, digits and _ . : -",
    _KEY_ID: "1 to 64 letters, digits, _ or -",
    _NONCE: "16 to 64 letters, digits, _ or -",
    _SIGNATURE: "64 hexadecimal digits",
}

InstrumentName = Annotated[str, Meta(min_length=1, max_length=32, pattern=_SYMBOL)]
ClientOrderId = Annotated[str, Meta(min_length=1, max_length=64, pattern=_CLIENT_ORDER_ID)]
OrderId = Annotated[int, Meta(ge=1, le=MAX_ID)]
Qty = Annotated[int, Meta(ge=1, le=MAX_QTY_T)]
PriceText = Annotated[str, Meta(max_length=16)]  # checked by parse_price, which names the field
KeyId = Annotated[str, Meta(pattern=_KEY_ID)]
Nonce = Annotated[str, Meta(pattern=_NONCE)]
Signature = Annotated[str, Meta(pattern=_SIGNATURE)]
TimestampMs = Annotated[int, Meta(ge=0, le=MAX_ID)]
HeartbeatS = Annotated[int, Meta(ge=MIN_HEARTBEAT_S, le=MAX_HEARTBEAT_S)]
Instruments = Annotated[list[InstrumentName], Meta(min_length=1, max_length=MAX_INSTRUMENTS_PER_SUBSCRIBE)]

SideName = Literal["buy", "sell"]
OrderTypeName = Literal["limit", "market"]
TifName = Literal["day", "gtc", "ioc", "fok"]
ExecType = Literal["new", "trade", "canceled", "replaced", "rejected", "expired", "order_status"]
OrdStatus = Literal["new", "partially_filled", "filled", "canceled", "rejected", "expired"]
PhaseName = Literal["pre_open", "continuous", "break", "post_close"]
Level = tuple[str, int, int]  # [price, quantity in tonnes, number of orders]

SIDES: dict[str, Side] = {"buy": Side.BUY, "sell": Side.SELL}
ORDER_TYPES: dict[str, OrderType] = {"limit": OrderType.LIMIT, "market": OrderType.MARKET}
TIFS: dict[str, TimeInForce] = {
    "day": TimeInForce.DAY, "gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK,
}
SIDE_NAMES: dict[Side, SideName] = {Side.BUY: "buy", Side.SELL: "sell"}
ORDER_TYPE_NAMES: dict[OrderType, OrderTypeName] = {OrderType.LIMIT: "limit", OrderType.MARKET: "market"}
TIF_NAMES: dict[TimeInForce, TifName] = {
    TimeInForce.DAY: "day", TimeInForce.GTC: "gtc", TimeInForce.IOC: "ioc", TimeInForce.FOK: "fok",
}
PHASE_NAMES: dict[TradingPhase, PhaseName] = {
    TradingPhase.PRE_OPEN: "pre_open", TradingPhase.CONTINUOUS: "continuous",
    TradingPhase.BREAK: "break", TradingPhase.POST_CLOSE: "post_close",
}
CANCEL_REASON_NAMES: dict[CancelReason, str] = {reason: reason.name.lower() for reason in CancelReason}

# -- inbound: client to server -----------------------------------------------------------------

_IN = dict(tag_field="type", frozen=True, forbid_unknown_fields=True)


class Logon(msgspec.Struct, tag="logon", **_IN):
    """The first message of a session; see ``exchange.gateway.member.auth`` for the signature."""

    key_id: KeyId
    timestamp_ms: TimestampMs
    nonce: Nonce
    signature: Signature
    cancel_on_disconnect: bool = True
    heartbeat_s: HeartbeatS = DEFAULT_HEARTBEAT_S

    def __repr__(self) -> str:  # a signature is a credential for 30 seconds: keep it out of logs
        return f"Logon(key_id={self.key_id!r}, timestamp_ms={self.timestamp_ms}, nonce={self.nonce!r}, signature=<hidden>)"


class NewOrder(msgspec.Struct, tag="new_order", **_IN):
    client_order_id: ClientOrderId
    instrument: InstrumentName
    side: SideName
    qty: Qty
    price: PriceText | UnsetType = UNSET  # required for limit, absent for market
    order_type: OrderTypeName = "limit"
    tif: TifName | UnsetType = UNSET  # day for limit, ioc for market


class CancelRequest(msgspec.Struct, tag="cancel", **_IN):
    instrument: InstrumentName
    order_id: OrderId | UnsetType = UNSET
    client_order_id: ClientOrderId | UnsetType = UNSET


class AmendRequest(msgspec.Struct, tag="amend", **_IN):
    """``qty`` is the new open quantity, not the original size (as ``AmendOrder``)."""

    instrument: InstrumentName
    qty: Qty
    price: PriceText
    order_id: OrderId | UnsetType = UNSET
    client_order_id: ClientOrderId | UnsetType = UNSET


class MassCancelRequest(msgspec.Struct, tag="mass_cancel", **_IN):
    instrument: InstrumentName | None = None  # absent or null: every instrument


class OrderStatusRequest(msgspec.Struct, tag="order_status", **_IN):
    order_id: OrderId | UnsetType = UNSET
    client_order_id: ClientOrderId | UnsetType = UNSET


class Subscribe(msgspec.Struct, tag="subscribe", **_IN):
    instruments: Instruments


class Unsubscribe(msgspec.Struct, tag="unsubscribe", **_IN):
    instruments: Instruments


class Heartbeat(msgspec.Struct, tag="heartbeat", **_IN):
    pass


class CancelAfter(msgspec.Struct, tag="cancel_after", **_IN):
    """The dead-man timer: cancel all the member's orders unless renewed within ``seconds``."""

    seconds: Annotated[int, Meta(ge=0, le=MAX_CANCEL_AFTER_S)]  # 0 disables it


class Logout(msgspec.Struct, tag="logout", **_IN):
    """End the session: answered by ``session_closing`` (``logged_out``), then the close."""


InboundMessage = (
    Logon | NewOrder | CancelRequest | AmendRequest | MassCancelRequest | OrderStatusRequest
    | Subscribe | Unsubscribe | Heartbeat | CancelAfter | Logout
)

# -- outbound: server to client ----------------------------------------------------------------

_OUT = dict(tag_field="type", frozen=True)


class InstrumentStatus(msgspec.Struct, tag="instrument_status", **_OUT):
    """What an instrument's trading looks like now. ``reference_price`` is the previous close
    the day's band is taken from, ``lower_limit`` and ``upper_limit`` the band (the prices an
    order may have); all three null until the exchange has opened a trading day."""

    instrument: str
    halted: bool
    phase: PhaseName
    market_closed: bool
    reference_price: str | None = None
    lower_limit: str | None = None
    upper_limit: str | None = None


class LogonAck(msgspec.Struct, tag="logon_ack", **_OUT):
    """``instruments``: one ``instrument_status`` per listed instrument, in symbol order."""

    member_id: str
    session_id: str
    heartbeat_s: int
    trading_day: str
    instruments: list[InstrumentStatus] = msgspec.field(default_factory=list)
    session_seq: int = 0


class ExecutionReport(msgspec.Struct, tag="execution_report", **_OUT):
    """FIX terms. ``qty`` is the order quantity: the original, or after an amend the filled
    quantity plus the new open quantity, so ``leaves_qty == qty - cum_qty`` while the order
    is open. ``order_id`` is null only for an order rejected before it had an id."""

    exec_type: ExecType
    ord_status: OrdStatus
    order_id: int | None
    client_order_id: str
    instrument: str
    side: SideName | None
    order_type: OrderTypeName | None
    tif: TifName | None
    price: str | None
    qty: int
    cum_qty: int
    leaves_qty: int
    last_px: str | None = None
    last_qty: int | None = None
    trade_id: int | None = None
    reject_code: int | None = None
    reject_reason: str | None = None
    cancel_reason: str | None = None
    session_seq: int = 0


class CancelReject(msgspec.Struct, tag="cancel_reject", **_OUT):
    """A cancel or amend refused; ``response_to`` says which."""

    response_to: Literal["cancel", "amend"]
    order_id: int | None
    client_order_id: str | None
    instrument: str
    reject_code: int
    reject_reason: str
    session_seq: int = 0


class MassCancelReport(msgspec.Struct, tag="mass_cancel_report", **_OUT):
    """The answer to a ``mass_cancel``, to the session that sent it, after the execution
    reports of what it cancelled: ``cancelled`` orders (0: nothing to cancel), or a reject
    (``reject_code`` 501 for an instrument the exchange does not list) and nothing cancelled."""

    instrument: str | None
    cancelled: int
    reject_code: int | None = None
    reject_reason: str | None = None
    session_seq: int = 0


class Error(msgspec.Struct, tag="error", **_OUT):
    code: int
    field: str | None
    problem: str
    session_seq: int = 0


class ServerHeartbeat(msgspec.Struct, tag="heartbeat", **_OUT):
    session_seq: int = 0


class SessionClosing(msgspec.Struct, tag="session_closing", **_OUT):
    reason: str
    session_seq: int = 0


class BookSnapshot(msgspec.Struct, tag="book_snapshot", **_OUT):
    instrument: str
    seq: int
    bids: list[Level]
    asks: list[Level]


class BookUpdate(msgspec.Struct, tag="book_update", **_OUT):
    """Changed levels only, best first; quantity 0 means the level is gone."""

    instrument: str
    seq: int
    prev_seq: int
    bids: list[Level]
    asks: list[Level]


class Trade(msgspec.Struct, tag="trade", **_OUT):
    instrument: str
    trade_id: int
    price: str
    qty: int
    aggressor: SideName


OutboundMessage = (
    LogonAck | ExecutionReport | CancelReject | MassCancelReport | Error | ServerHeartbeat | SessionClosing
    | BookSnapshot | BookUpdate | Trade | InstrumentStatus
)
PrivateMessage = LogonAck | ExecutionReport | CancelReject | MassCancelReport | Error | ServerHeartbeat | SessionClosing
PublicMessage = BookSnapshot | BookUpdate | Trade | InstrumentStatus
PRIVATE_MESSAGES = (LogonAck, ExecutionReport, CancelReject, MassCancelReport, Error, ServerHeartbeat, SessionClosing)

_inbound_decoder = msgspec.json.Decoder(InboundMessage)
_outbound_decoder = msgspec.json.Decoder(OutboundMessage)
_encoder = msgspec.json.Encoder()

# -- prices --------------------------------------------------------------------------------------

_PRICE = re.compile(r"(0|[1-9][0-9]{0,6})\.([0-9]{2})")
PRICE_FORMAT = 'a decimal string with exactly two places, like "58.20"'


def parse_price(text: str, field: str = "price") -> int:
    """``"58.20"`` -> ``5820`` fen, exactly; anything but the canonical form is refused."""
    match = _PRICE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise WireError(ErrorCode.INVALID_FIELD, field, PRICE_FORMAT)
    fen = int(match[1]) * FEN_PER_YUAN + int(match[2])
    if fen > MAX_PRICE_FEN:
        raise WireError(ErrorCode.INVALID_FIELD, field, f"above the maximum price {format_price(MAX_PRICE_FEN)}")
    return fen


def format_price(fen: int) -> str:
    """``5820`` -> ``"58.20"``: the one form :func:`parse_price` accepts."""
    assert 0 <= fen <= MAX_PRICE_FEN, fen
    yuan, rest = divmod(fen, FEN_PER_YUAN)
    return f"{yuan}.{rest:02d}"


# -- decoding ------------------------------------------------------------------------------------


def decode_inbound(frame: bytes | str) -> InboundMessage:
    """One client frame as a message, or :class:`WireError` naming what is wrong with it."""
    data = _frame_bytes(frame)
    try:
        message = _inbound_decoder.decode(data)
    except msgspec.ValidationError as error:
        raise _validation_error(str(error)) from None
    except msgspec.DecodeError as error:
        raise WireError(ErrorCode.MALFORMED_JSON, None, _echo(str(error))) from None
    except RecursionError:
        raise WireError(ErrorCode.MALFORMED_JSON, None, "nested too deeply") from None
    if not _keys_distinct(data, message):
        _refuse_duplicate_keys(data)
    _check(message)
    return message


def decode_outbound(frame: bytes | str) -> OutboundMessage:
    """A server frame as a message: for clients and tests; raises msgspec errors as they are."""
    return _outbound_decoder.decode(frame)


def _frame_bytes(frame: bytes | str) -> bytes:
    """The frame as UTF-8 bytes, checked for size and encoding before any parsing."""
    if isinstance(frame, str):
        if len(frame) > MAX_FRAME_BYTES:
            raise _too_large()
        try:
            data = frame.encode("utf-8")
        except UnicodeEncodeError as error:
            raise WireError(ErrorCode.INVALID_UTF8, None, f"not encodable as UTF-8 at character {error.start}") from None
    else:
        data = bytes(frame)
    if len(data) > MAX_FRAME_BYTES:
        raise _too_large()
    if not isinstance(frame, str):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise WireError(ErrorCode.INVALID_UTF8, None, f"invalid UTF-8 at byte {error.start}") from None
    return data


def _too_large() -> WireError:
    return WireError(ErrorCode.FRAME_TOO_LARGE, None, f"a frame is at most {MAX_FRAME_BYTES} bytes")


# -- duplicate keys --------------------------------------------------------------------------------
#
# msgspec lets the last of two equal keys win, so {"qty": 1, "qty": 90000} would be an order
# for 90,000 t that a log or a proxy reading the first key takes for 1 t. The fast check
# below proves a frame has no duplicate key from two counts; only a frame it cannot prove
# clean (a backslash, a colon inside a value other than the client order id, a key written
# with spaces before its colon) is parsed again, by the json module, keeping every pair.

_DEFAULTED = {  # fields whose default is a value, not UNSET: present only if named in the frame
    Logon: (b'"cancel_on_disconnect":', b'"heartbeat_s":'),
    NewOrder: (b'"order_type":',),
    MassCancelRequest: (b'"instrument":',),
}
# per message type: the keys its fields give when every defaulted one is absent (the "type"
# counts one, each defaulted field one less), and the defaulted fields' names
_KEY_COUNTS = {
    cls: (1 - len(_DEFAULTED.get(cls, ())), _DEFAULTED.get(cls, ())) for cls in InboundMessage.__args__
}
_astuple = msgspec.structs.astuple


def _keys_distinct(data: bytes, message: InboundMessage) -> bool:
    """True when the frame provably names no key twice (False: it may, look again).

    Without a backslash every string is its raw bytes, so each key adds one colon, and so
    does each colon inside a string value; only a client order id may hold one. The keys a
    decoded message must have come from the frame (the ``"type"``, every field not UNSET, and
    a defaulted field whose name is in the frame) are at most the distinct keys. So if the
    colons, less the client order id's, equal that count, there were no more keys than
    distinct ones. (Written for speed: it runs for every frame.)"""
    if b"\\" in data:
        return False
    colons = data.count(b":")
    client_order_id = getattr(message, "client_order_id", None)
    if client_order_id.__class__ is str and ":" in client_order_id:
        colons -= client_order_id.count(":")
    keys, defaulted = _KEY_COUNTS[message.__class__]
    values = _astuple(message)
    keys += len(values) - values.count(UNSET)
    for name in defaulted:
        if name in data:
            keys += 1
    return colons == keys


def _refuse_duplicate_keys(data: bytes) -> None:
    """Parse the frame keeping every key; a key given twice is refused, naming it."""
    try:
        json.loads(data, object_pairs_hook=_distinct_pairs)
    except WireError:
        raise
    except (ValueError, RecursionError):  # msgspec took it; the json module did not
        raise WireError(ErrorCode.MALFORMED_JSON, None, "a message is a JSON object with a \"type\"") from None


def _distinct_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise WireError(ErrorCode.INVALID_FIELD, _echo(key), "the field is given more than once")
        seen[key] = value
    return seen


_AT_PATH = re.compile(r"(?P<text>.*?)(?: - at `\$(?P<path>.*)`)?", re.DOTALL)
_NAMED_FIELD = re.compile(r"Object (?P<kind>missing required|contains unknown) field `(?P<name>.*)`", re.DOTALL)


def _validation_error(message: str) -> WireError:
    """Turn msgspec's ``Expected `int` <= 10 - at `$.qty``` into a code, a field and a problem."""
    parts = _AT_PATH.fullmatch(message)
    assert parts is not None
    problem, path = parts["text"], parts["path"] or ""
    named = _NAMED_FIELD.fullmatch(problem)
    if named is not None:
        path = f"{path}.{named['name']}"
        problem = "required field is missing" if named["kind"] == "missing required" else "unknown field"
    field = _echo(path.lstrip(".")) or None
    if field is None:
        return WireError(ErrorCode.MALFORMED_JSON, None, 'a message is a JSON object with a "type"')
    if field == "type":
        problem = "unknown message type" if problem.startswith("Invalid value") else problem
        return WireError(ErrorCode.UNKNOWN_MESSAGE_TYPE, field, problem)
    if field.rpartition(".")[2].endswith("price") and problem.startswith("Expected `str`"):
        return WireError(ErrorCode.INVALID_FIELD, field, PRICE_HINT)  # a number sent as a price: say how
    return WireError(ErrorCode.INVALID_FIELD, field, _echo(_readable(problem)))


PRICE_HINT = 'prices are strings with two decimal places, e.g. "58.20"'
_REGEX_PROBLEM = re.compile(r"Expected `str` matching regex (?P<pattern>'.*')", re.DOTALL)
_PATTERN_REPRS = {repr(pattern): help_text for pattern, help_text in _PATTERN_HELP.items()}


def _readable(problem: str) -> str:
    """Say what a pattern means instead of quoting it."""
    match = _REGEX_PROBLEM.fullmatch(problem)
    if match is None or match["pattern"] not in _PATTERN_REPRS:
        return problem
    return f"Expected {_PATTERN_REPRS[match['pattern']]}"


def _echo(text: str) -> str:
    """Client input quoted back, cut short: an error never grows with the frame."""
    return text if len(text) <= _MAX_ECHO_CHARS else text[:_MAX_ECHO_CHARS] + "..."


def _check(message: InboundMessage) -> None:
    """The rules a schema cannot say: prices, and which fields go together."""
    match message:
        case NewOrder():
            _check_new_order(message)
        case AmendRequest():
            _check_order_ref(message)
            parse_price(message.price)
        case CancelRequest() | OrderStatusRequest():
            _check_order_ref(message)


def _check_new_order(message: NewOrder) -> None:
    if message.order_type == "limit":
        if message.price is UNSET:
            raise WireError(ErrorCode.INVALID_FIELD, "price", "required for a limit order")
        parse_price(message.price)
    elif message.price is not UNSET:
        raise WireError(ErrorCode.INVALID_FIELD, "price", "a market order has no price")


def _check_order_ref(message: CancelRequest | AmendRequest | OrderStatusRequest) -> None:
    if (message.order_id is UNSET) == (message.client_order_id is UNSET):
        raise WireError(ErrorCode.INVALID_FIELD, "order_id", "give exactly one of order_id and client_order_id")


# -- to engine commands ------------------------------------------------------------------------


def effective_tif(message: NewOrder) -> TimeInForce:
    """The order's time in force: as given, else day for limit and ioc for market orders."""
    if message.tif is not UNSET:
        return TIFS[message.tif]
    return TimeInForce.DAY if message.order_type == "limit" else TimeInForce.IOC


def submit_command(message: NewOrder, member_id: str) -> SubmitOrder:
    price_fen = None if message.price is UNSET else parse_price(message.price)
    return SubmitOrder(
        member_id, message.instrument, SIDES[message.side], message.qty, price_fen,
        ORDER_TYPES[message.order_type], effective_tif(message), message.client_order_id,
    )


def cancel_command(message: CancelRequest, member_id: str, order_id: int) -> CancelOrder:
    """``order_id`` is the message's own, or the one its client order id resolved to."""
    return CancelOrder(member_id, message.instrument, order_id)


def amend_command(message: AmendRequest, member_id: str, order_id: int) -> AmendOrder:
    """``order_id`` is the message's own, or the one its client order id resolved to."""
    return AmendOrder(member_id, message.instrument, order_id, message.qty, parse_price(message.price))


def mass_cancel_command(message: MassCancelRequest, member_id: str) -> MassCancel:
    return MassCancel(member_id, message.instrument)


# -- encoding ------------------------------------------------------------------------------------


def encode(message: OutboundMessage | InboundMessage, session_seq: int | None = None) -> bytes:
    """The message as a JSON text frame; ``session_seq`` stamps a private message at send time."""
    if session_seq is not None:
        assert isinstance(message, PRIVATE_MESSAGES), f"{type(message).__name__} carries no session_seq"
        message = msgspec.structs.replace(message, session_seq=session_seq)
    return _encoder.encode(message)


# -- the error budget ----------------------------------------------------------------------------


class ErrorBudget:
    """How many refused frames a session may send in a sliding minute before it is closed.

    Malformed input is answered, not fatal, but a client that only sends garbage costs the
    server work for nothing: past the budget the session ends (``TOO_MANY_ERRORS``).
    """

    def __init__(self, limit: int = MAX_ERRORS_PER_MINUTE, window_ms: int = 60_000) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self._times: deque[int] = deque()

    def spend(self, now_ms: int) -> bool:
        """Count one error; False when the budget for the last window is already spent."""
        times = self._times
        while times and times[0] <= now_ms - self.window_ms:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now_ms)
        return True


def validation_error(message: str) -> WireError:
    """msgspec's validation message (``... - at `$.qty```) as a :class:`WireError` naming the
    field: for other JSON the gateway decodes (the operator API's request bodies)."""
    return _validation_error(message)
