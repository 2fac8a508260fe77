"""The wire: round trips, one case per kind of malformed frame (each naming its field), exact
prices, conversions to engine commands, the examples of docs/protocol.md, and a fuzz run of
tens of thousands of random and mutated frames that may raise nothing but ``WireError``."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from exchange.gateway.member import wire
from exchange.gateway.member.wire import (
    MAX_FRAME_BYTES,
    AmendRequest,
    BookUpdate,
    CancelAfter,
    CancelRequest,
    Error,
    ErrorBudget,
    ErrorCode,
    ExecutionReport,
    Heartbeat,
    InboundMessage,
    Logon,
    MassCancelRequest,
    NewOrder,
    OrderStatusRequest,
    ServerHeartbeat,
    Subscribe,
    Trade,
    Unsubscribe,
    WireError,
    amend_command,
    cancel_command,
    decode_inbound,
    decode_outbound,
    encode,
    format_price,
    mass_cancel_command,
    parse_price,
    submit_command,
)
from exchange.model import AmendOrder, CancelOrder, MassCancel, OrderType, Side, SubmitOrder, TimeInForce
from exchange.model.units import MAX_ID, MAX_PRICE_FEN, MAX_QTY_T

ROOT = Path(__file__).resolve().parents[2]
SIG = "ab" * 32
LOGON = {"type": "logon", "key_id": "0123456789abcdef", "timestamp_ms": 1, "nonce": "n" * 16, "signature": SIG}
ORDER = {"type": "new_order", "client_order_id": "c1", "instrument": "CEA-2025", "side": "buy", "qty": 10, "price": "58.20"}
CANCEL = {"type": "cancel", "instrument": "CEA-2025", "order_id": 7}
AMEND = {"type": "amend", "instrument": "CEA-2025", "order_id": 7, "qty": 5, "price": "58.10"}
VALID_FRAMES: list[dict[str, object]] = [
    LOGON, ORDER, CANCEL, AMEND,
    {"type": "new_order", "client_order_id": "m-1", "instrument": "CCER", "side": "sell", "qty": 1, "order_type": "market", "tif": "fok"},
    {"type": "cancel", "instrument": "CCER", "client_order_id": "c1"},
    {"type": "mass_cancel"}, {"type": "mass_cancel", "instrument": "CCER"}, {"type": "mass_cancel", "instrument": None},
    {"type": "order_status", "order_id": 3}, {"type": "subscribe", "instruments": ["CEA-2025", "CCER"]},
    {"type": "unsubscribe", "instruments": ["CCER"]}, {"type": "heartbeat"}, {"type": "cancel_after", "seconds": 0},
]


def frame(base: dict, **changes) -> bytes:
    """``base`` with fields changed (a value of ``...`` removes the field), as JSON bytes."""
    body = {k: v for k, v in {**base, **changes}.items() if v is not ...}
    return json.dumps(body).encode()


def refusal(data: bytes | str) -> tuple[ErrorCode, str | None]:
    with pytest.raises(WireError) as caught:
        decode_inbound(data)
    error = caught.value
    assert error.problem and isinstance(error.to_message(), Error)
    return error.code, error.field


E = ErrorCode
MALFORMED = [
    # the frame as a whole
    (b"\xff\xfe{}", E.INVALID_UTF8, None),
    (b'{"type":"heartbeat","\xed\xa0\x80":1}', E.INVALID_UTF8, None),  # an encoded surrogate
    ('{"type":"heartbeat","\ud800":1}', E.INVALID_UTF8, None),  # a str that is no UTF-8
    (b'{"type":"heartbeat"', E.MALFORMED_JSON, None),
    (b'{"type":"heartbeat"} {}', E.MALFORMED_JSON, None),
    (b"", E.MALFORMED_JSON, None),
    (b"[]", E.MALFORMED_JSON, None),
    (b'"new_order"', E.MALFORMED_JSON, None),
    (b"null", E.MALFORMED_JSON, None),
    (b'{"type":"heartbeat","x":' + b"[" * 30_000 + b"]" * 30_000 + b"}", E.INVALID_FIELD, "x"),
    (b'{"x":' + b"[" * 30_000 + b"]" * 30_000 + b',"type":"heartbeat"}', E.MALFORMED_JSON, None),
    (b'{"type":"heartbeat","x":"' + b"a" * MAX_FRAME_BYTES + b'"}', E.FRAME_TOO_LARGE, None),
    ('{"type":"heartbeat","x":"' + "\u00e9" * (MAX_FRAME_BYTES // 2) + '"}', E.FRAME_TOO_LARGE, None),
    # the type
    (b"{}", E.UNKNOWN_MESSAGE_TYPE, "type"),
    (b'{"type":"fly"}', E.UNKNOWN_MESSAGE_TYPE, "type"),
    (b'{"type":7}', E.UNKNOWN_MESSAGE_TYPE, "type"),
    (b'{"type":"logon_ack","member_id":"M"}', E.UNKNOWN_MESSAGE_TYPE, "type"),  # a server message
    # unknown and missing fields
    (frame(ORDER, colour="red"), E.INVALID_FIELD, "colour"),
    (frame(ORDER, member_id="someone-else"), E.INVALID_FIELD, "member_id"),  # never from the frame
    (frame(ORDER, qty=...), E.INVALID_FIELD, "qty"),
    (frame(ORDER, client_order_id=...), E.INVALID_FIELD, "client_order_id"),
    (frame({"type": "heartbeat"}, seq=1), E.INVALID_FIELD, "seq"),
    # wrong types and ranges
    (frame(ORDER, qty="10"), E.INVALID_FIELD, "qty"),
    (frame(ORDER, qty=10.0), E.INVALID_FIELD, "qty"),
    (frame(ORDER, qty=True), E.INVALID_FIELD, "qty"),
    (frame(ORDER, qty=None), E.INVALID_FIELD, "qty"),
    (frame(ORDER, qty=0), E.INVALID_FIELD, "qty"),
    (frame(ORDER, qty=-5), E.INVALID_FIELD, "qty"),
    (frame(ORDER, qty=MAX_QTY_T + 1), E.INVALID_FIELD, "qty"),
    (frame(ORDER, qty=10**40), E.INVALID_FIELD, "qty"),
    (frame(ORDER, side="BUY"), E.INVALID_FIELD, "side"),
    (frame(ORDER, order_type="stop"), E.INVALID_FIELD, "order_type"),
    (frame(ORDER, tif="gfd"), E.INVALID_FIELD, "tif"),
    (frame(ORDER, tif=None), E.INVALID_FIELD, "tif"),
    (frame(ORDER, client_order_id=""), E.INVALID_FIELD, "client_order_id"),
    (frame(ORDER, client_order_id="x" * 65), E.INVALID_FIELD, "client_order_id"),
    (frame(ORDER, client_order_id="has space"), E.INVALID_FIELD, "client_order_id"),
    (frame(ORDER, client_order_id="new\nline"), E.INVALID_FIELD, "client_order_id"),
    (frame(ORDER, instrument="cea-2025"), E.INVALID_FIELD, "instrument"),
    (frame(ORDER, instrument="CEA-2025\n"), E.INVALID_FIELD, "instrument"),
    (frame(ORDER, instrument=["CEA-2025"]), E.INVALID_FIELD, "instrument"),
    (frame(CANCEL, order_id=0), E.INVALID_FIELD, "order_id"),
    (frame(CANCEL, order_id=MAX_ID + 1), E.INVALID_FIELD, "order_id"),
    (frame(CANCEL, order_id="7"), E.INVALID_FIELD, "order_id"),
    (frame({"type": "mass_cancel"}, instrument=5), E.INVALID_FIELD, "instrument"),
    (frame({"type": "cancel_after"}, seconds=301), E.INVALID_FIELD, "seconds"),
    (frame({"type": "cancel_after"}, seconds=-1), E.INVALID_FIELD, "seconds"),
    (frame({"type": "cancel_after"}), E.INVALID_FIELD, "seconds"),
    (frame(LOGON, heartbeat_s=0), E.INVALID_FIELD, "heartbeat_s"),
    (frame(LOGON, heartbeat_s=61), E.INVALID_FIELD, "heartbeat_s"),
    (frame(LOGON, cancel_on_disconnect="yes"), E.INVALID_FIELD, "cancel_on_disconnect"),
    (frame(LOGON, nonce="n" * 15), E.INVALID_FIELD, "nonce"),
    (frame(LOGON, nonce="n" * 65), E.INVALID_FIELD, "nonce"),
    (frame(LOGON, nonce="n" * 15 + "\n"), E.INVALID_FIELD, "nonce"),
    (frame(LOGON, signature=SIG[:-1]), E.INVALID_FIELD, "signature"),
    (frame(LOGON, signature=SIG[:-1] + "g"), E.INVALID_FIELD, "signature"),
    (frame(LOGON, timestamp_ms=-1), E.INVALID_FIELD, "timestamp_ms"),
    (frame(LOGON, key_id=""), E.INVALID_FIELD, "key_id"),
    # lists name the element
    (frame({"type": "subscribe"}, instruments=["CEA-2025", "CCER", "bad"]), E.INVALID_FIELD, "instruments[2]"),
    (frame({"type": "subscribe"}, instruments=["CEA-2025", 1]), E.INVALID_FIELD, "instruments[1]"),
    (frame({"type": "subscribe"}, instruments=[]), E.INVALID_FIELD, "instruments"),
    (frame({"type": "subscribe"}, instruments=["A"] * 17), E.INVALID_FIELD, "instruments"),
    (frame({"type": "unsubscribe"}, instruments="CCER"), E.INVALID_FIELD, "instruments"),
    # prices
    *[(frame(ORDER, price=bad), E.INVALID_FIELD, "price") for bad in (
        "58.2", "58", "58.", ".20", "-1.00", "+58.20", "1e3", "5.82e1", " 58.20", "58.20 ", "058.20", "58.200",
        "58,20", "5 8.20", "", "\u0665\u0668.\u0662\u0660", "58.2\u0660", "1000000.01", "9999999.99", "NaN", "inf",
        58.20, 58, 5820, None, True, ["58.20"],
    )],
    (frame(AMEND, price="58.1"), E.INVALID_FIELD, "price"),
    (frame(AMEND, price=...), E.INVALID_FIELD, "price"),
    # fields that go together
    (frame(ORDER, price=...), E.INVALID_FIELD, "price"),  # a limit order needs a price
    (frame(ORDER, order_type="market"), E.INVALID_FIELD, "price"),  # a market order has none
    (frame(CANCEL, client_order_id="c1"), E.INVALID_FIELD, "order_id"),  # both
    (frame(CANCEL, order_id=...), E.INVALID_FIELD, "order_id"),  # neither
    (frame(AMEND, order_id=...), E.INVALID_FIELD, "order_id"),
    (frame({"type": "order_status"}), E.INVALID_FIELD, "order_id"),
    (frame({"type": "order_status"}, order_id=1, client_order_id="c"), E.INVALID_FIELD, "order_id"),
]


@pytest.mark.parametrize(("data", "code", "field"), MALFORMED, ids=[f"{i}-{c.name}-{f}" for i, (_, c, f) in enumerate(MALFORMED)])
def test_every_malformed_frame_is_refused_naming_its_field(data, code: ErrorCode, field: str | None) -> None:
    assert refusal(data) == (code, field)


def test_valid_frames_decode_and_round_trip() -> None:
    for body in VALID_FRAMES:
        message = decode_inbound(json.dumps(body))
        assert decode_inbound(encode(message)) == message
        assert decode_inbound(json.dumps(body).encode()) == message


def test_defaults() -> None:
    logon = decode_inbound(frame(LOGON))
    assert isinstance(logon, Logon)
    assert (logon.cancel_on_disconnect, logon.heartbeat_s) == (True, 10)
    limit = decode_inbound(frame(ORDER))
    market = decode_inbound(frame(ORDER, price=..., order_type="market"))
    assert isinstance(limit, NewOrder) and isinstance(market, NewOrder)
    assert (limit.order_type, limit.tif, wire.effective_tif(limit)) == ("limit", UNSET, TimeInForce.DAY)
    assert wire.effective_tif(market) == TimeInForce.IOC
    mass_cancel = decode_inbound(frame({"type": "mass_cancel"}))
    assert isinstance(mass_cancel, MassCancelRequest) and mass_cancel.instrument is None


def test_errors_are_short_and_quote_no_more_than_a_little_input() -> None:
    code, field = refusal(frame(ORDER, **{"k" * 5_000: 1}))
    assert code == E.INVALID_FIELD and field is not None and len(field) < 200
    with pytest.raises(WireError) as caught:
        decode_inbound(frame(ORDER, side="s" * 5_000))
    assert len(caught.value.problem) < 200
    assert len(encode(caught.value.to_message())) < 300


def test_error_messages_say_what_is_expected() -> None:
    with pytest.raises(WireError) as caught:
        decode_inbound(frame(ORDER, client_order_id="has space"))
    assert caught.value.problem == "Expected letters, digits and _ . : -"
    with pytest.raises(WireError) as caught:
        decode_inbound(frame(ORDER, price="58.2"))
    assert caught.value.problem == 'a decimal string with exactly two places, like "58.20"'
    assert str(caught.value) == 'price: a decimal string with exactly two places, like "58.20"'
    with pytest.raises(WireError) as caught:
        decode_inbound(frame(ORDER, qty=...))
    assert caught.value.problem == "required field is missing"


def test_logon_repr_hides_the_signature() -> None:
    logon = decode_inbound(frame(LOGON))
    assert SIG not in repr(logon) and SIG not in str(logon) and "0123456789abcdef" in repr(logon)


# -- prices -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fen"), [
    ("0.00", 0), ("0.01", 1), ("58.20", 5_820), ("58.02", 5_802), ("100.00", 10_000), ("1000000.00", MAX_PRICE_FEN),
])
def test_prices_parse_exactly(text: str, fen: int) -> None:
    assert parse_price(text) == fen
    assert format_price(fen) == text


@settings(deadline=None)
@given(st.integers(0, MAX_PRICE_FEN))
def test_every_price_formats_and_parses_back(fen: int) -> None:
    assert parse_price(format_price(fen)) == fen


PRICE_ALPHABET = "0123456789.-+e ,\u0660\u00b2_"


@settings(max_examples=1_000, deadline=None)
@given(st.one_of(st.text(PRICE_ALPHABET, max_size=12), st.text(max_size=12), st.from_regex(r"[0-9]{1,8}\.[0-9]{1,3}", fullmatch=True)))
def test_a_price_text_is_canonical_or_refused(text: str) -> None:
    try:
        fen = parse_price(text)
    except WireError as error:
        assert (error.code, error.field) == (E.INVALID_FIELD, "price")
        return
    assert format_price(fen) == text and 0 <= fen <= MAX_PRICE_FEN


# -- conversions to commands ---------------------------------------------------------------------


def test_conversions_take_the_member_from_the_session() -> None:
    order = decode_inbound(frame(ORDER, tif="gtc"))
    assert isinstance(order, NewOrder)
    assert submit_command(order, "M0001") == SubmitOrder(
        "M0001", "CEA-2025", Side.BUY, 10, 5_820, OrderType.LIMIT, TimeInForce.GTC, "c1"
    )
    market = decode_inbound(frame(ORDER, price=..., order_type="market", side="sell"))
    assert isinstance(market, NewOrder)
    assert submit_command(market, "M2") == SubmitOrder("M2", "CEA-2025", Side.SELL, 10, None, OrderType.MARKET, TimeInForce.IOC, "c1")
    cancel = decode_inbound(frame(CANCEL, order_id=..., client_order_id="c1"))
    assert isinstance(cancel, CancelRequest)
    assert cancel_command(cancel, "M0001", 99) == CancelOrder("M0001", "CEA-2025", 99)
    amend = decode_inbound(frame(AMEND))
    assert isinstance(amend, AmendRequest)
    assert amend_command(amend, "M0001", 7) == AmendOrder("M0001", "CEA-2025", 7, 5, 5_810)
    assert mass_cancel_command(MassCancelRequest(), "M0001") == MassCancel("M0001", None)
    assert mass_cancel_command(MassCancelRequest("CCER"), "M0001") == MassCancel("M0001", "CCER")


# -- encoding and session_seq ------------------------------------------------------------------


def test_private_messages_are_stamped_with_session_seq_at_send_time() -> None:
    beat = ServerHeartbeat()
    assert json.loads(encode(beat, 42)) == {"type": "heartbeat", "session_seq": 42}
    assert beat.session_seq == 0  # the message itself is unchanged: it may go to other sessions
    error = WireError(E.INVALID_FIELD, "qty", "too big").to_message()
    assert json.loads(encode(error, 3)) == {"type": "error", "code": 4, "field": "qty", "problem": "too big", "session_seq": 3}
    with pytest.raises(AssertionError):
        encode(Trade("CCER", 1, "1.00", 1, "buy"), 5)  # public data has no session_seq
    assert b"session_seq" not in encode(BookUpdate("CCER", 2, 1, [("1.00", 5, 1)], []))


def test_outbound_messages_round_trip() -> None:
    report = ExecutionReport("new", "new", 5, "c1", "CCER", "buy", "limit", "day", "1.00", 5, 0, 5)
    assert decode_outbound(encode(report)) == report
    update = BookUpdate("CCER", 2, 1, [("1.00", 5, 1)], [("1.01", 0, 0)])
    assert json.loads(encode(update))["bids"] == [["1.00", 5, 1]]
    assert decode_outbound(encode(update)) == update


def test_the_error_budget() -> None:
    budget = ErrorBudget(limit=3, window_ms=60_000)
    assert [budget.spend(t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert budget.spend(59_999) is False
    assert budget.spend(60_000) is True  # the first error left the window


# -- the protocol document ------------------------------------------------------------------------

SECTION_DECODERS = {"Client to server": "inbound", "Server to client": "outbound"}


def document_examples() -> list[tuple[str | None, str | None, str]]:
    """(direction, heading, JSON text) for every ```json block under a ### heading (None: a
    block outside a known section or before any heading, which the test refuses)."""
    examples: list[tuple[str | None, str | None, str]] = []
    direction: str | None = None
    heading: str | None = None
    lines = (ROOT / "docs" / "protocol.md").read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            direction, heading = SECTION_DECODERS.get(line[3:].strip()), None
        elif line.startswith("### "):
            heading = line[4:].strip()
        elif line.strip() == "```json":
            end = lines.index("```", index + 1)
            examples.append((direction, heading, "\n".join(lines[index + 1:end])))
            index = end
        index += 1
    return examples


def tag_of(struct_type) -> str:
    return struct_type.__struct_config__.tag


def test_every_example_in_the_protocol_document_decodes() -> None:
    examples = document_examples()
    assert len(examples) >= 25
    for direction, heading, text in examples:
        assert direction is not None and heading is not None, text
        message: InboundMessage | wire.OutboundMessage
        if direction == "inbound":
            message = decode_inbound(text)
        else:
            message = decode_outbound(text)
            assert json.loads(encode(message)) == json.loads(text), heading  # every field, none extra
        assert tag_of(type(message)) == heading == json.loads(text)["type"]


def test_the_protocol_document_shows_every_message() -> None:
    shown = {(direction, heading) for direction, heading, _ in document_examples()}
    inbound = {("inbound", tag_of(t)) for t in InboundMessage.__args__}
    outbound = {("outbound", tag_of(t)) for t in wire.OutboundMessage.__args__}
    assert inbound | outbound == shown


def test_the_protocol_document_states_the_limits() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for code in ErrorCode:
        assert f"| {int(code)} | `{code.name}` |" in doc
    assert "64 KiB" in doc and MAX_FRAME_BYTES == 64 * 1024
    assert f"| {wire.MAX_ERRORS_PER_MINUTE} |" in doc
    assert f"| {wire.MAX_INSTRUMENTS_PER_SUBSCRIBE} |" in doc


# -- valid messages of every kind (Hypothesis) ------------------------------------------------

symbols = st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,31}", fullmatch=True)
client_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
prices = st.integers(0, MAX_PRICE_FEN).map(format_price)
quantities = st.integers(1, MAX_QTY_T)
order_ids = st.integers(1, MAX_ID)
maybe = lambda strategy: st.one_of(st.just(UNSET), strategy)  # noqa: E731


def order_refs(builder, **fields):
    by_id = st.builds(builder, order_id=order_ids, client_order_id=st.just(UNSET), **fields)
    by_client_id = st.builds(builder, order_id=st.just(UNSET), client_order_id=client_ids, **fields)
    return st.one_of(by_id, by_client_id)


inbound_messages = st.one_of(
    st.builds(
        Logon, st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.integers(0, MAX_ID),
        st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True), st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        st.booleans(), st.integers(1, 60),
    ),
    st.builds(NewOrder, client_ids, symbols, st.sampled_from(["buy", "sell"]), quantities, prices,
              st.just("limit"), maybe(st.sampled_from(["day", "gtc", "ioc", "fok"]))),
    st.builds(NewOrder, client_ids, symbols, st.sampled_from(["buy", "sell"]), quantities, st.just(UNSET),
              st.just("market"), maybe(st.sampled_from(["ioc", "fok", "day"]))),
    order_refs(CancelRequest, instrument=symbols),
    order_refs(AmendRequest, instrument=symbols, qty=quantities, price=prices),
    order_refs(OrderStatusRequest),
    st.builds(MassCancelRequest, st.one_of(st.none(), symbols)),
    st.builds(Subscribe, st.lists(symbols, min_size=1, max_size=16)),
    st.builds(Unsubscribe, st.lists(symbols, min_size=1, max_size=16)),
    st.just(Heartbeat()),
    st.builds(CancelAfter, st.integers(0, 300)),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(inbound_messages)
def test_any_valid_message_round_trips(message) -> None:
    assert decode_inbound(encode(message)) == message
    assert decode_inbound(encode(message).decode()) == message


# -- fuzzing: nothing but WireError, ever ------------------------------------------------------


def decode_or_refuse(data: bytes | str) -> None:
    """Decode a frame; the only acceptable failure is a WireError that encodes as an error."""
    try:
        message = decode_inbound(data)
    except WireError as error:
        assert isinstance(error.code, ErrorCode)
        assert len(encode(error.to_message(), 1)) < 1_000
        return
    assert decode_inbound(encode(message)) == message  # whatever decodes is a sound message


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=12,
)
field_names = st.sampled_from(sorted({k for body in VALID_FRAMES for k in body} | {"x", "member_id", ""}))


@st.composite
def mutated_messages(draw) -> dict:
    body = dict(draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.integers(0, 2))
        name = draw(field_names)
        if action == 0:
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    return body


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(mutated_messages(), st.dictionaries(field_names, json_values, max_size=6), json_values))
def test_fuzz_structured_frames(body) -> None:
    decode_or_refuse(json.dumps(body))


@settings(max_examples=1_000, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_fuzz_random_frames(data) -> None:
    decode_or_refuse(data)


NASTY = [
    b"null", b"true", b"1e999", b"-0", b"18446744073709551616", b'"\\ud800"', b'"\\u0000"', b"[]", b"{}",
    b'"' + b"x" * 300 + b'"', b"[" * 200, b"]", b'{"type":', b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"1.5",
    b"99999999999999999999999999999", b'"58.20"', b'"type"', b'"new_order"', b",", b":", b'\\"',
]


def mutate(rnd: random.Random, data: bytes) -> bytes:
    """One random byte-level change of a frame."""
    if not data:
        return rnd.choice(NASTY)
    at = rnd.randrange(len(data) + 1)
    action = rnd.randrange(7)
    if action == 0:  # flip a byte
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ (1 << rnd.randrange(8))]) + data[at + 1:]
    if action == 1:  # delete a run
        return data[:at] + data[at + rnd.randint(1, 8):]
    if action == 2:  # insert random bytes
        return data[:at] + bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4))) + data[at:]
    if action == 3:  # insert a nasty token
        return data[:at] + rnd.choice(NASTY) + data[at:]
    if action == 4:  # truncate
        return data[:at]
    if action == 5:  # repeat a run
        end = min(len(data), at + rnd.randint(1, 16))
        return data[:end] + data[at:end] * rnd.randint(1, 50) + data[end:]
    token = rnd.choice(re.findall(rb'"[^"]*"|-?\d+(?:\.\d+)?|true|false|null', data) or [b"null"])
    return data.replace(token, rnd.choice(NASTY), 1)  # swap a value for a nasty one


def test_fuzz_thirty_thousand_byte_mutated_frames() -> None:
    rnd = random.Random(20260105)
    seeds = [json.dumps(body).encode() for body in VALID_FRAMES]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(30_000):
        data = rnd.choice(seeds)
        for _ in range(rnd.randint(1, 4)):
            data = mutate(rnd, data)
        try:
            decode_inbound(data)
            outcomes["decoded"] += 1
        except WireError:
            outcomes["refused"] += 1
        decode_or_refuse(data)
        if rnd.random() < 0.05:
            decode_or_refuse(data.decode("utf-8", "surrogateescape"))  # as a str, maybe with lone surrogates
    assert outcomes["decoded"] > 100 and outcomes["refused"] > 10_000, outcomes


def random_json(rnd: random.Random, depth: int = 0):
    """A random JSON value: the kinds of value a confused or hostile client sends."""
    kind = rnd.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return rnd.choice([None, True, False])
    if kind == 1:
        return rnd.choice([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, rnd.randint(-10**6, 10**6)])
    if kind == 2:
        return rnd.choice([0.0, -0.0, 1.5, 58.2, 1e308, -1e-308, 10.0])
    if kind == 3:
        return rnd.choice(["", "58.20", "buy", "limit", "CEA-2025", "\u0000", "\ud800", "\n", "x" * 70, "é", "58.2", "1e3"])
    if kind in (4, 5, 6):
        return "".join(chr(rnd.choice([rnd.randrange(32, 127), rnd.randrange(0x80, 0x3000)])) for _ in range(rnd.randint(0, 12)))
    if kind in (7, 8):
        return [random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 20 if kind == 8 else 3))]
    return {rnd.choice(["type", "qty", "x", "price", ""]): random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


def test_fuzz_twenty_thousand_structurally_mutated_frames() -> None:
    """Valid messages with fields dropped, added or given values of every kind."""
    rnd = random.Random(5)
    names = sorted({k for body in VALID_FRAMES for k in body} | {"x", "member_id", "", "TYPE"})
    decoded = 0
    for _ in range(20_000):
        body = dict(rnd.choice(VALID_FRAMES))
        for _ in range(rnd.randint(1, 3)):
            name = rnd.choice(names)
            if rnd.random() < 0.3:
                body.pop(name, None)
            else:
                body[name] = random_json(rnd)
        try:
            decode_inbound(json.dumps(body))
            decoded += 1
        except WireError as error:
            assert isinstance(error.code, ErrorCode) and len(encode(error.to_message(), 1)) < 1_000
    assert decoded > 200, decoded


def test_the_decoders_are_built_once() -> None:
    assert isinstance(wire._inbound_decoder, msgspec.json.Decoder)
    assert isinstance(wire._outbound_decoder, msgspec.json.Decoder)


# -- duplicate keys (issue 10, finding 7) ------------------------------------------------------


def with_key_twice(body: dict, key: str, first: object) -> str:
    """``body`` as JSON with ``key`` given twice: ``first``, then the body's own value last."""
    pairs = [f"{json.dumps(key)}: {json.dumps(first)}"] + [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in body.items()]
    return "{" + ", ".join(pairs) + "}"


@pytest.mark.parametrize("body", VALID_FRAMES, ids=lambda body: str(body["type"]))
def test_a_key_given_twice_is_refused_naming_it_in_every_message(body: dict) -> None:
    for key, value in body.items():
        assert refusal(with_key_twice(body, key, value)) == (ErrorCode.INVALID_FIELD, key), key


def test_a_key_given_twice_is_refused_however_it_is_written() -> None:
    assert refusal(b'{"type":"new_order","client_order_id":"a:b:c","instrument":"CEA-2025","side":"buy",'
                   b'"qty":1,"price":"58.20","qty":90000}') == (ErrorCode.INVALID_FIELD, "qty")
    assert refusal(b'{"type":"new_order","client_order_id":"a","instrument":"CEA-2025","side":"buy",'
                   b'"q\\u0074y":1,"price":"58.20","qty":90000}') == (ErrorCode.INVALID_FIELD, "qty")
    assert refusal(b'{"type":"new_order","client_order_id":"order_type","instrument":"CEA-2025","side":"buy",'
                   b'"qty":1,"price":"58.20","qty":2}') == (ErrorCode.INVALID_FIELD, "qty")
    assert refusal(b'{"type" : "mass_cancel", "instrument" : null, "instrument" : "CCER"}') == (ErrorCode.INVALID_FIELD, "instrument")
    assert refusal(b'{"type":"cancel","type":"new_order","client_order_id":"a","instrument":"CEA-2025",'
                   b'"side":"buy","qty":1,"price":"58.20"}')[1] == "type"  # msgspec itself refuses a second tag


def test_frames_that_fail_the_fast_check_without_a_duplicate_still_decode() -> None:
    for text in (
        '{"type" : "mass_cancel" , "instrument" : null}',
        '{"type":"new_order","client_order_id":"a\\u003ab","instrument":"CEA-2025","side":"buy","qty":1,"price":"58.20"}',
        '{"type":"new_order","client_order_id":"order_type","instrument":"CEA-2025","side":"buy","qty":1,"price":"58.20"}',
        '{"type":"logon","key_id":"k","timestamp_ms":1,"nonce":"nnnnnnnnnnnnnnnn","signature":"' + SIG + '","heartbeat_s" :5}',
    ):
        decode_inbound(text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(inbound_messages)
def test_a_normal_frame_is_proved_clean_by_the_fast_check(message) -> None:
    """What clients send (msgspec or json.dumps, defaults written out or left out) never
    needs the second parse: the fast check is what every ordinary frame costs."""
    for data in (encode(message), json.dumps(json.loads(encode(message)), separators=(",", ":")).encode()):
        assert wire._keys_distinct(data, decode_inbound(data)), data
    fields = type(message).__struct_fields__
    optional = set(fields[len(fields) - len(type(message).__struct_defaults__):])
    required = {k: v for k, v in json.loads(encode(message)).items() if k not in optional}
    try:
        compact = json.dumps(required, separators=(",", ":")).encode()
        assert wire._keys_distinct(compact, decode_inbound(compact)), compact
    except WireError:
        pass  # leaving a field out may make another one wrong (a limit order's price)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(inbound_messages, st.data())
def test_any_valid_message_with_a_key_given_twice_is_refused(message, data) -> None:
    body = json.loads(encode(message))
    key = data.draw(st.sampled_from(sorted(body)))
    assert refusal(with_key_twice(body, key, body[key])) == (ErrorCode.INVALID_FIELD, key)
