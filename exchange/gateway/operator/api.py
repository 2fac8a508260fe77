"""The operator HTTP API: the administrator, the clearing house and the regulator.

JSON in and out; a role token in ``Authorization: Bearer <token>``. ``docs/operator-api.md``
describes each endpoint with an example; ``/openapi.json`` is generated from the structs
below (:mod:`exchange.gateway.operator.openapi`).

Decisions:

* **Authorization before anything.** A middleware finds the route's method and path template,
  looks them up in :data:`exchange.gateway.operator.roles.ENDPOINTS` and refuses (401 without a valid
  token, 403 with a token of a role not in the row) before the handler runs. Tokens are
  compared in constant time.
* **Request bodies are msgspec Structs that forbid unknown fields**, decoded strictly;
  a bad body is 400 naming the field. Errors are always ``{"error": ..., "field": ...}``:
  400 bad input, 401 no or bad token, 403 wrong role, 404 no such member / instrument /
  statement, 409 refused by the exchange (the reject's code and text), 503 shutting down.
* **Every change is an engine command through the hub** (journalled, in order with the
  members' orders); reads of the exchange go through the hub's queue as well, so they never
  overlap settlement's writes (see :mod:`exchange.gateway.hub`). The handlers see the
  exchange only through the service port (:mod:`exchange.gateway.port`): its structs, never
  the core's or a store's objects.
* **Credentials.** Issuing returns the secret once, in the response body; it is neither
  logged nor stored (the store derives it from the master secret and keeps a fingerprint).
  The credential records are saved to the data directory after every issue and revoke.
  Revoking a key also ends the sessions logged on with it.
* **Money in fen (integers, ``_fen``), prices as two-place strings**, as on the member wire.
* **Enums by name, everywhere.** A command's answer lists its events with every integer enum
  as its name in lower case (``"kind": "covered"``, ``"phase": "continuous"``,
  ``"reason": "day_voided"``), as the views render them (:func:`answer_builtins`). Only
  the API's rendering: the journal and the event stream keep their integers, byte for byte.
* **Every call that may change something is audited** (POST and DELETE, whatever the
  outcome, refusals included), fsynced before its answer, and readable by the regulator
  (``GET /regulator/audit``); reads are not (:mod:`exchange.gateway.operator.audit`).
* **Admitting a member opens its accounts** (``POST /members``): the registry account (a
  member holding under the member's id) and the cash account are opened, then the member is
  registered, in one job of the hub (:meth:`ExchangePort.admit_member`); if an account
  cannot be opened the answer is 409 naming why and nothing is registered. Opening is
  idempotent, so a retry after the registry is back, or an account the registry's operator
  opened beforehand, is fine. A member admitted while the day trades starts with no
  holdings (the registry loads only at the start of day, outside trading: a new account
  holds nothing anyway); what it buys settles into its account, and the next start of day
  loads it.
* **Trading days are dates**, read by the one parser (``units.parse_trading_day``) in every
  body, path and query: ``2026-13-45`` in a body or a query is 400 naming ``trading_day``;
  in a path (``/regulator/trades/{trading_day}``, ``/clearing/statements/...``) it is 404,
  "no such day": the path names a resource, and there is none, as for an unknown member
  (``GET /members/NOBODY/credentials`` is 404 too, not an empty list). The start of day also
  refuses (400) a date more than ``[calendar] max_days_from_today`` (7) days before or after
  today's date in exchange time (the hub's clock): a typo such as ``2062-11-25`` would
  otherwise open, and then every real date would be "not after the last trading day". The
  core has no clock; it refuses only what is no date at all (reject 506).
* **A day opened by mistake is voided, not edited** (``POST /market/void-day``, the
  admin's): a journalled ``VoidDay`` naming the open day, which cancels the day's orders and
  puts the last trading day back, so the right date can be opened. A day with a trade is
  binding (409, code 509): it is ended and settled as it is.
* **Role tokens rotate through the API** (``POST /admin/tokens/{role}/rotate``; rules in
  :mod:`exchange.gateway.operator.roles`): the old token stops at once unless an overlap is
  asked, the new one may expire, and the file is rewritten before the new token is in force.
  An expired token is 401 saying so. The response is the only place the new token is shown.
* **No traceback for a malformed request.** Invalid UTF-8 in a body or a token is 400 or
  401, a body over the size limit 413, each as the JSON error; HTTP that does not parse is
  logged as one line (:class:`RequestLog`), not a traceback. Only a handler's bug is logged
  with its traceback, and answered 500 as JSON.
* **Deposits and withdrawals are idempotent by reference.** The body must carry the clearing
  house's ``reference`` (1 to 64 of letters, digits, ``_ . : -``; 400 naming the field when
  missing or malformed). A retry with a reference the member already used answers 200 with
  the first outcome and ``"duplicate": true``, and moves nothing; the reference reused with
  another amount or direction is 409 with code 223 and ``"field": "reference"``. The engine
  decides (the references are part of its state), so a retry racing its original is answered
  the same way as one that comes later.
"""

from __future__ import annotations

import enum
import logging
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_urldispatcher import MatchInfoError

from exchange.gateway.hub import Hub, HubStopped, events_of, rejected
from exchange.gateway.member.wire import format_price, validation_error
from exchange.gateway.connections import RepeatedLog
from exchange.gateway.operator import audit, roles
from exchange.gateway.operator.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from exchange.gateway.operator.openapi import build_openapi
from exchange.gateway.trading_day import DayRefused, open_day
from exchange.gateway.port import AdmissionRefusal, ExchangePort, MemberAccount
from exchange.model.commands import (
    CloseMarket,
    Deposit,
    HaltInstrument,
    KillSwitch,
    RegisterMember,
    ReopenMarket,
    ResumeInstrument,
    SetMemberStatus,
    SetTradingPhase,
    VoidDay,
    Withdraw,
)
from exchange.model.enums import MemberKind, MemberStatus, TradingPhase
from exchange.model.events import FundsRetried
from exchange.model.rejects import RejectReason
from exchange.model.units import MAX_NOTIONAL_FEN, MAX_QTY_T, parse_trading_day

log = logging.getLogger("exchange.gateway.operator.api")

HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
TOKENS: web.AppKey[roles.OperatorTokens] = web.AppKey("operator_tokens", roles.OperatorTokens)
SAVE_TOKENS: web.AppKey[Callable[[bytes], None]] = web.AppKey("save_operator_tokens")
ROLE: web.RequestKey[str] = web.RequestKey("role", str)
AUDIT: web.AppKey[audit.AuditLog] = web.AppKey("audit_log", audit.AuditLog)

MemberIdText = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+\Z")]
TradingDayText = Annotated[str, msgspec.Meta(max_length=64)]  # a date: parse_trading_day says
AmountFen = Annotated[int, msgspec.Meta(ge=1, le=MAX_NOTIONAL_FEN)]
ReferenceText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+\Z")]
_BODY = dict(forbid_unknown_fields=True, frozen=True)

# -- request bodies --------------------------------------------------------------------------


class CreateMember(msgspec.Struct, **_BODY):
    member_id: MemberIdText
    kind: Literal["covered", "voluntary"]
    annual_allocation_t: Annotated[int, msgspec.Meta(ge=0, le=MAX_QTY_T)] = 0
    linked_group: Annotated[str, msgspec.Meta(max_length=32, pattern=r"^[A-Za-z0-9_.-]*\Z")] = ""


class ChangeStatus(msgspec.Struct, **_BODY):
    status: Literal["active", "restricted", "suspended", "frozen"]


class CashMovement(msgspec.Struct, **_BODY):
    """A deposit or withdrawal. ``reference`` is required: the clearing house's id of the
    payment, unique per member, which makes a retry after a lost answer harmless."""

    member_id: MemberIdText
    amount_fen: AmountFen
    reference: ReferenceText


class TradingDayRequest(msgspec.Struct, **_BODY):
    trading_day: TradingDayText


class RotateToken(msgspec.Struct, **_BODY):
    """``overlap_s``: how long the old token(s) keep working (0: they stop now).
    ``expires_in_s``: the new token's lifetime (absent: ``[operator] token_lifetime_days``)."""

    overlap_s: Annotated[int, msgspec.Meta(ge=0, le=roles.MAX_OVERLAP_MS // 1000)] = 0
    expires_in_s: Annotated[int, msgspec.Meta(ge=60, le=3_660 * 86_400)] | None = None


class PhaseRequest(msgspec.Struct, **_BODY):
    phase: Literal["pre_open", "continuous", "break", "post_close"]


# -- responses -------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    error: str
    field: str | None = None
    code: int | None = None  # the exchange's reject code, for 409


class EventsBody(msgspec.Struct):
    """What a command did: its events, as the engine reported them."""

    events: list[dict]


class CashMovementBody(msgspec.Struct):
    """A deposit's or withdrawal's answer: its event; for a retry (``duplicate``), the event
    the first movement under that reference reported, nothing having moved again."""

    events: list[dict]
    duplicate: bool


class Health(msgspec.Struct):
    status: str
    last_seq: int
    trading_day: str
    connections: int


class StateBody(msgspec.Struct):
    last_seq: int
    state_hash: str
    journal_chain: str
    trading_day: str


class HoldingView(msgspec.Struct):
    instrument: str
    available_t: int
    reserved_t: int
    locked_t: int
    obligation_t: int


class MemberView(msgspec.Struct):
    member_id: str
    kind: str
    status: str
    killed: bool
    cash_available_fen: int
    cash_reserved_fen: int
    cash_pending_fen: int
    cash_obligation_fen: int
    open_orders: int
    position_t: int
    holdings: list[HoldingView]


class CredentialView(msgspec.Struct):
    key_id: str
    member_id: str
    created_ms: int
    revoked: bool
    fingerprint: str


class IssuedCredentialBody(msgspec.Struct):
    key_id: str
    member_id: str
    secret: str  # shown once


class InstrumentView(msgspec.Struct):
    symbol: str
    kind: str
    tick: str
    lot_t: int
    max_order_qty_t: int
    band_bps: int
    halted: bool
    phase: str
    market_closed: bool


class BookView(msgspec.Struct):
    instrument: str
    bids: list[tuple[str, int, int]]
    asks: list[tuple[str, int, int]]


class TradeView(msgspec.Struct):
    trade_id: int
    trading_day: str
    instrument: str
    price: str
    qty_t: int
    aggressor: str | None  # null for a trade off the book
    buy_member_id: str
    buy_order_id: int | None
    sell_member_id: str
    sell_order_id: int | None
    seq: int


class AlertView(msgspec.Struct):
    member_id: str
    position_t: int
    threshold_t: int
    limit_t: int


class TokenView(msgspec.Struct):
    fingerprint: str  # the first 16 hex digits of the token's SHA-256; never the token
    expires_ms: int | None
    valid: bool


class RoleTokensView(msgspec.Struct):
    role: str
    tokens: list[TokenView]  # newest first


class RotatedTokenBody(msgspec.Struct):
    role: str
    token: str  # shown once
    fingerprint: str
    expires_ms: int | None
    previous_valid_until_ms: int | None  # None: the old token(s) stopped at once


class ApiError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None, code: int | None = None) -> None:
        super().__init__(error)
        self.status, self.body = status, ErrorBody(error, field, code)


# -- plumbing --------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json")


def error_response(status: int, error: str, field: str | None = None, code: int | None = None) -> web.Response:
    return json_response(ErrorBody(error, field, code), status)


async def decode_body(request: web.Request, kind: type) -> Any:
    body = await request.read()
    try:
        return msgspec.json.decode(body or b"{}", type=kind, strict=True)
    except msgspec.ValidationError as error:
        problem = validation_error(str(error))
        raise ApiError(400, problem.problem, problem.field) from None
    except msgspec.DecodeError as error:
        raise ApiError(400, f"the body is not JSON: {error}") from None
    except UnicodeDecodeError as error:  # msgspec checks strings' UTF-8 after the JSON syntax
        raise ApiError(400, f"the body is not UTF-8: byte {error.start} is not valid") from None


def trading_day_of(text: str, field: str = "trading_day") -> str:
    """A trading day from a body or query; 400 naming the field if it is no date."""
    try:
        return parse_trading_day(text).isoformat()
    except ValueError as error:
        raise ApiError(400, str(error), field) from None


def trading_day_path(request: web.Request) -> str:
    """The ``{trading_day}`` of a path; 404 if it is no date: no such day's resource exists
    (a body or a query naming an impossible date is bad input, 400)."""
    try:
        return trading_day_of(request.match_info["trading_day"])
    except ApiError as error:
        raise ApiError(404, f"no such day: {error.body.error}", "trading_day") from None


def role_of(request: web.Request, tokens: roles.OperatorTokens, now_ms: int) -> tuple[str | None, str]:
    """The caller's role (``anonymous`` without a header), or None and why not."""
    header = request.headers.get("Authorization")
    if header is None:
        return roles.ANONYMOUS, ""
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token:
        return None, "invalid token"
    # aiohttp keeps undecodable header bytes as surrogates: give them back as the bytes they were
    found = tokens.find(token.encode("utf-8", "surrogateescape"))
    if found is None:
        return None, "invalid token"
    role, entry = found
    if not entry.valid_at(now_ms):
        return None, f"the {role} token has expired (rotate it: POST /admin/tokens/{role}/rotate)"
    return role, ""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUDITED_METHODS = frozenset({"POST", "DELETE"})  # what may change something (see audit.py)
UNAUTHORIZED_LOG = RepeatedLog(log)  # unauthenticated calls: counted in the log, not audited


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the role table before any handler; answer every error as JSON; write every
    call that may change something to the audit log before its answer leaves."""
    match_info = request.match_info
    if isinstance(match_info, MatchInfoError):
        status = match_info.http_exception.status
        return error_response(status, "no such endpoint" if status == 404 else "method not allowed")
    template = match_info.route.resource.canonical if match_info.route.resource else ""
    role, problem = role_of(request, request.app[TOKENS], hub_of(request).now_ms())
    response = await authorized(request, handler, template, role, problem)
    if request.method in AUDITED_METHODS:
        if response.status == 401:
            # Not a role's action: an unauthenticated flood must cost neither an fsync nor a
            # line on disk each (issue 10); one warning line per interval counts them.
            UNAUTHORIZED_LOG.warning("unauthorized", "operator API: %s %s refused unauthenticated (%s)",
                                     request.method, template, problem or "no token")
        else:
            await write_audit(request, template, role, response)
    return response


async def write_audit(request: web.Request, template: str, role: str | None, response: web.StreamResponse) -> None:
    header = request.headers.get("Authorization", "")
    token = header.partition(" ")[2].encode("utf-8", "surrogateescape") if header.startswith("Bearer ") else b""
    try:
        body = await request.read()  # read already by the handler, if it ran: aiohttp keeps it
    except web.HTTPException:  # over the size limit: the answer (413) says so
        body = b""
    answer = response.body if isinstance(response, web.Response) and isinstance(response.body, bytes) else b""
    who = role if role is not None else "invalid"
    try:
        request.app[AUDIT].append(hub_of(request).now_ms(), who, audit.fingerprint(token) if token else None,
                                  request.method, request.path, template, body, response.status, answer)
    except OSError as error:  # the action stands (the journal has it); the operator must know
        log.error("the audit log could not be written (%s): %s %s by %s, answered %d", error, request.method,
                  request.path, who, response.status)


async def authorized(request: web.Request, handler: Handler, template: str, role: str | None,
                     problem: str) -> web.StreamResponse:
    if role is None:
        return error_response(401, problem)
    if not roles.endpoint_allowed(request.method, template, role):
        if role == roles.ANONYMOUS:
            return error_response(401, "a role token is required (Authorization: Bearer ...)")
        return error_response(403, f"the {role} role may not call {request.method} {template}")
    request[ROLE] = role
    try:
        return await handler(request)
    except ApiError as error:
        return json_response(error.body, error.status)
    except HubStopped:
        return error_response(503, "the exchange is shutting down")
    except web.HTTPException as error:  # aiohttp's own, such as 413 for a body over the limit
        if error.status < 400:
            raise
        return error_response(error.status, error.text or error.reason)
    except Exception:
        if template == "/ws":  # a WebSocket answer is under way: no JSON can follow
            raise
        log.exception("%s %s failed", request.method, template)  # a bug: its traceback is wanted
        return error_response(500, "internal error (logged by the exchange)")


class RequestLog(logging.LoggerAdapter):
    """aiohttp's server log (``handler_args={"logger": ...}``), with a request that is not
    HTTP, or not well-formed HTTP, as one line instead of a traceback: it is the client's
    mistake, and a scan of the port would otherwise fill the log with stack frames."""

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            problem = " ".join(word for word in str(exc_info.message).split() if word != "^")  # no caret line
            level, msg, args, exc_info = min(level, logging.INFO), "malformed HTTP request: %s (%s): %s", (
                msg % args if args else msg, exc_info.code, problem), None
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)


REQUEST_LOG = RequestLog(logging.getLogger("aiohttp.server"), {})


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


def events_body(events: list) -> EventsBody:
    return EventsBody([{"event": type(event).__name__, **answer_builtins(event)} for event in events])


def answer_builtins(value: Any) -> Any:
    """An event as the API shows it: ``msgspec.to_builtins``'s shape, but an integer enum by
    its name in lower case (``"kind": "voluntary"``, not ``2``), as the views render them.
    The journal and the event stream keep their integers: this is the API's rendering only."""
    return _enums_named(value, msgspec.to_builtins(value))


def _enums_named(value: Any, built: Any) -> Any:
    """``built`` (the builtins of ``value``) with each ``IntEnum`` in ``value`` by its name."""
    if isinstance(value, enum.IntEnum):
        return value.name.lower()
    if isinstance(value, msgspec.Struct):
        fields = value.__struct_fields__
        if isinstance(built, list):  # an array-like struct
            return [_enums_named(getattr(value, name), item) for name, item in zip(fields, built, strict=False)]
        return {key: _enums_named(getattr(value, key), item) if key in fields else item for key, item in built.items()}
    if isinstance(value, list | tuple):
        return [_enums_named(item, built_item) for item, built_item in zip(value, built, strict=True)]
    return built


async def command(request: web.Request, engine_command: Any) -> web.Response:
    """Run an operator command; 409 (404 for an unknown member or instrument) if refused."""
    applied = await hub_of(request).submit(engine_command)
    refusal = rejected(applied.events)
    if refusal is not None:
        raise_refusal(refusal.reason)
    return json_response(events_body(applied.events))


def raise_refusal(reason: RejectReason) -> None:
    status = 404 if reason in (RejectReason.UNKNOWN_MEMBER, RejectReason.UNKNOWN_INSTRUMENT) else 409
    raise ApiError(status, reason.text, None, int(reason))


# -- public ----------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    hub = hub_of(request)
    status = "ok" if hub.fatal is None and not hub.stopped.is_set() else "stopping"
    service = hub.service
    return json_response(Health(status, service.last_seq, service.trading_day, hub.metrics.connections))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=hub_of(request).metrics.render().encode(),
                        headers={"Content-Type": METRICS_CONTENT_TYPE, "X-Prometheus-Format": "0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(ROUTES, ErrorBody))


async def state(request: web.Request) -> web.Response:
    """The engine's state hash: equal to a replay of the journal (the restart test uses it)."""
    summary = await hub_of(request).read(lambda service: service.state_summary())
    return json_response(StateBody(summary.last_seq, summary.state_hash, summary.journal_chain, summary.trading_day))


# -- members ---------------------------------------------------------------------------------


def member_view(account: MemberAccount) -> MemberView:
    holdings = [HoldingView(h.instrument, h.available_t, h.reserved_t, h.locked_t, h.obligation_t) for h in account.holdings]
    return MemberView(
        account.member_id, MemberKind(account.kind).name.lower(), MemberStatus(account.status).name.lower(),
        account.killed, account.cash_available_fen, account.cash_reserved_fen, account.cash_pending_fen,
        account.cash_obligation_fen, account.open_orders, account.position_t, holdings,
    )


async def list_members(request: web.Request) -> web.Response:
    hub = hub_of(request)
    accounts = await hub.read(member_accounts)
    return json_response([member_view(account) for account in sorted(accounts, key=lambda a: a.member_id)])


async def create_member(request: web.Request) -> web.Response:
    """Admit a member: its registry and cash accounts are opened and it is registered, in one
    job of the hub, or 409 naming why an account could not be opened, nothing registered."""
    body = await decode_body(request, CreateMember)
    kind = MemberKind[body.kind.upper()]
    admission = RegisterMember(body.member_id, kind, body.annual_allocation_t, body.linked_group)
    admitted = await hub_of(request).run(lambda service: service.admit_member(admission))
    if isinstance(admitted, AdmissionRefusal):
        raise ApiError(409, f"{admitted.member_id} was not admitted: {admitted.problem}", "member_id")
    refusal = rejected(admitted.events)
    if refusal is not None:
        raise_refusal(refusal.reason)
    return json_response(events_body(admitted.events))


async def change_status(request: web.Request) -> web.Response:
    body = await decode_body(request, ChangeStatus)
    return await command(request, SetMemberStatus(member_id_param(request), MemberStatus[body.status.upper()]))


async def kill_member(request: web.Request) -> web.Response:
    return await command(request, KillSwitch(member_id_param(request)))


def member_id_param(request: web.Request) -> str:
    member_id = request.match_info["member_id"]
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", member_id):
        raise ApiError(404, "no such member", "member_id")
    return member_id


def member_accounts(service: ExchangePort) -> list[MemberAccount]:
    return service.member_accounts()


async def require_member(hub: Hub, member_id: str) -> None:
    accounts = await hub.read(member_accounts)
    if all(account.member_id != member_id for account in accounts):
        raise ApiError(404, "no such member", "member_id")


async def list_credentials(request: web.Request) -> web.Response:
    hub, member_id = hub_of(request), member_id_param(request)
    await require_member(hub, member_id)  # an unknown member is 404, not an empty list
    records = hub.credentials.keys_of(member_id)
    return json_response([CredentialView(r.key_id, r.member_id, r.created_ms, r.revoked, r.fingerprint) for r in records])


async def issue_credential(request: web.Request) -> web.Response:
    hub, member_id = hub_of(request), member_id_param(request)
    await require_member(hub, member_id)
    issued = hub.credentials.issue(member_id, hub.now_ms())
    hub.credentials_changed()
    log.info("issued key %s to %s", issued.key_id, member_id)  # the key id only, never the secret
    return json_response(IssuedCredentialBody(issued.key_id, member_id, issued.secret_hex), 201)


async def revoke_credential(request: web.Request) -> web.Response:
    hub, member_id = hub_of(request), member_id_param(request)
    key_id = request.match_info["key_id"]
    record = hub.credentials.lookup(key_id)
    if record is None or record.member_id != member_id:
        raise ApiError(404, "no such key for this member", "key_id")
    hub.credentials.revoke(key_id)
    hub.credentials_changed()
    hub.close_sessions_of_key(key_id)
    log.info("revoked key %s of %s", key_id, member_id)
    return json_response(CredentialView(key_id, member_id, record.created_ms, True, record.fingerprint))


# -- instruments and the market ----------------------------------------------------------------


async def list_instruments(request: web.Request) -> web.Response:
    hub = hub_of(request)
    views = []
    for item in hub.config.instruments:
        status = hub.market_data.status(item.symbol)
        views.append(InstrumentView(item.symbol, item.kind, item.tick, item.lot_t, item.max_order_qty_t, item.band_bps,
                                    status.halted, status.phase, status.market_closed))
    return json_response(sorted(views, key=lambda v: v.symbol))


def instrument_param(request: web.Request) -> str:
    instrument = request.match_info["instrument"]
    if instrument not in hub_of(request).symbols:
        raise ApiError(404, "the exchange lists no such instrument", "instrument")
    return instrument


async def halt_instrument(request: web.Request) -> web.Response:
    return await command(request, HaltInstrument(instrument_param(request)))


async def resume_instrument(request: web.Request) -> web.Response:
    return await command(request, ResumeInstrument(instrument_param(request)))


async def close_market(request: web.Request) -> web.Response:
    return await command(request, CloseMarket())


async def reopen_market(request: web.Request) -> web.Response:
    return await command(request, ReopenMarket())


async def set_phase(request: web.Request) -> web.Response:
    body = await decode_body(request, PhaseRequest)
    return await command(request, SetTradingPhase(TradingPhase[body.phase.upper()]))


# -- the clearing house ----------------------------------------------------------------------


async def deposit(request: web.Request) -> web.Response:
    body = await decode_cash_movement(request)
    return await cash_movement(request, Deposit(body.member_id, body.amount_fen, body.reference))


async def withdraw(request: web.Request) -> web.Response:
    body = await decode_cash_movement(request)
    return await cash_movement(request, Withdraw(body.member_id, body.amount_fen, body.reference))


async def decode_cash_movement(request: web.Request) -> CashMovement:
    """The body; a malformed reference is explained rather than answered with its pattern."""
    try:
        return await decode_body(request, CashMovement)
    except ApiError as error:
        if error.body.field == "reference" and error.body.error != "required field is missing":
            raise ApiError(400, "a reference is 1 to 64 of letters, digits and _ . : -", "reference") from None
        raise


async def cash_movement(request: web.Request, engine_command: Deposit | Withdraw) -> web.Response:
    """A retry is a success (200, ``duplicate``: true) with the first outcome, so a clearing
    house can resend until it gets an answer; a reference reused for another movement is 409
    naming the field."""
    applied = await hub_of(request).submit(engine_command)
    refusal = rejected(applied.events)
    if refusal is not None:
        if refusal.reason == RejectReason.REFERENCE_REUSED:
            raise ApiError(409, refusal.reason.text, "reference", int(refusal.reason))
        raise_refusal(refusal.reason)
    retried = [event.first() for event in applied.events if type(event) is FundsRetried]
    return json_response(CashMovementBody(events_body(retried or applied.events).events, bool(retried)))


async def start_of_day(request: web.Request) -> web.Response:
    """Open the day and load every member's holdings from the registry (one job, in order)."""
    body = await decode_body(request, TradingDayRequest)
    hub = hub_of(request)
    trading_day = trading_day_of(body.trading_day)
    check_near_today(trading_day, hub)
    try:  # the calendar driver opens a day the same way (exchange.gateway.trading_day)
        records = await open_day(hub, trading_day)
    except DayRefused as refused:
        raise ApiError(409, refused.message, refused.field, refused.code) from None
    return json_response(events_body(events_of(records)))


def check_near_today(trading_day: str, hub: Hub) -> None:
    """400 for a day further from today's date (exchange time) than the calendar allows."""
    calendar = hub.config.calendar
    today = local_date(hub.now_ms(), calendar.utc_offset_hours)
    distance = (date.fromisoformat(trading_day) - today).days
    if abs(distance) > calendar.max_days_from_today:
        when = f"{distance} days after" if distance > 0 else f"{-distance} days before"
        raise ApiError(400, f"{trading_day} is {when} today ({today.isoformat()}); a trading day opens at most "
                            f"{calendar.max_days_from_today} days from today ([calendar] max_days_from_today)", "trading_day")


def local_date(epoch_ms: int, utc_offset_hours: int) -> date:
    """The calendar date at ``epoch_ms`` in exchange time (UTC + the offset)."""
    return date(1970, 1, 1) + timedelta(days=(epoch_ms // 1000 + utc_offset_hours * 3600) // 86_400)


async def void_day(request: web.Request) -> web.Response:
    """Void the open day (opened by mistake, nothing traded): a journalled ``VoidDay``."""
    body = await decode_body(request, TradingDayRequest)
    return await command(request, VoidDay(trading_day_of(body.trading_day)))


async def end_of_day(request: web.Request) -> web.Response:
    applied = await hub_of(request).run(lambda service: service.end_day())
    refusal = rejected(applied.events)
    if refusal is not None:
        raise_refusal(refusal.reason)
    return json_response(events_body(applied.events))


async def settle(request: web.Request) -> web.Response:
    """Settle a closed day in a worker thread while the engine waits (see the hub)."""
    body = await decode_body(request, TradingDayRequest)
    trading_day = trading_day_of(body.trading_day)
    try:
        report = await hub_of(request).run_blocking(lambda service: service.settle(trading_day))
    except (HubStopped, ApiError):
        raise
    except Exception as error:  # noqa: BLE001 - settlement stops are reported, never guessed at
        log.warning("settlement of %s stopped: %s", trading_day, error)
        raise ApiError(409, f"settlement stopped: {error}", "trading_day") from None
    return json_response(report)


async def statements_dir(request: web.Request):
    hub, trading_day = hub_of(request), trading_day_path(request)
    directory = await hub.read(lambda service: service.statements_dir(trading_day))
    if directory is None or not directory.is_dir():
        raise ApiError(404, "no statements for that day (not settled yet?)", "trading_day")
    return directory


async def list_statements(request: web.Request) -> web.Response:
    directory = await statements_dir(request)
    return json_response(sorted(path.name for path in directory.iterdir() if path.is_file()))


async def download_statement(request: web.Request) -> web.StreamResponse:
    directory = await statements_dir(request)
    name = request.match_info["name"]
    path = directory / name
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name) or name.startswith(".") or not path.is_file():
        raise ApiError(404, "no such statement", "name")
    return web.FileResponse(path)


# -- the regulator ---------------------------------------------------------------------------


async def book(request: web.Request) -> web.Response:
    instrument = instrument_param(request)
    levels = request.query.get("levels", "50")
    if not levels.isdigit() or not 1 <= int(levels) <= 10_000:
        raise ApiError(400, "levels is an integer from 1 to 10000", "levels")
    bids, asks = hub_of(request).market_data.depth.levels(instrument, int(levels))
    as_text = lambda side: [(format_price(price), qty, orders) for price, qty, orders in side]  # noqa: E731
    return json_response(BookView(instrument, as_text(bids), as_text(asks)))


async def trades(request: web.Request) -> web.Response:
    trading_day = trading_day_path(request)
    rows = await hub_of(request).read(lambda service: service.day_trades(trading_day))
    return json_response([
        TradeView(r.trade_id, r.trading_day, r.instrument, format_price(r.price_fen), r.qty_t,
                  None if r.aggressor is None else "buy" if r.aggressor == 1 else "sell", r.buy_member_id, r.buy_order_id,
                  r.sell_member_id, r.sell_order_id, r.seq)
        for r in rows
    ])


async def positions(request: web.Request) -> web.Response:
    """Live accounts; with ``?trading_day=`` the closing positions stored for that day."""
    hub = hub_of(request)
    trading_day = request.query.get("trading_day")
    if trading_day is None:
        accounts = await hub.read(member_accounts)
        return json_response([member_view(a) for a in sorted(accounts, key=lambda a: a.member_id)])
    trading_day = trading_day_of(trading_day)
    rows = await hub.read(lambda service: service.day_positions(trading_day))
    return json_response(rows)


async def alerts(request: web.Request) -> web.Response:
    return json_response([AlertView(a.member_id, a.position_t, a.threshold_t, a.limit_t) for a in hub_of(request).alerts])


async def audit_log(request: web.Request) -> web.Response:
    """The operators' audit log, a page at a time (see :mod:`exchange.gateway.operator.audit`)."""
    since = query_int(request, "since", "0", 0, 2**62)
    limit = query_int(request, "limit", "100", 1, audit.MAX_PAGE)
    return json_response(request.app[AUDIT].page(since, limit))


def query_int(request: web.Request, name: str, default: str, low: int, high: int) -> int:
    text = request.query.get(name, default)
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{name} is an integer from {low} to {high}", name)
    return int(text)


# -- the operators' tokens ---------------------------------------------------------------------


async def list_tokens(request: web.Request) -> web.Response:
    tokens, now_ms = request.app[TOKENS], hub_of(request).now_ms()
    return json_response([
        RoleTokensView(role, [TokenView(e.fingerprint, e.expires_ms, e.valid_at(now_ms)) for e in tokens.entries(role)])
        for role in roles.OPERATOR_ROLES
    ])


async def rotate_token(request: web.Request) -> web.Response:
    """A new token for the role; the old one(s) stop now or after the overlap (see roles)."""
    role = request.match_info["role"]
    if role not in roles.OPERATOR_ROLES:
        raise ApiError(404, f"no such role: the roles are {', '.join(roles.OPERATOR_ROLES)}", "role")
    body = await decode_body(request, RotateToken)
    hub = hub_of(request)
    now_ms = hub.now_ms()
    lifetime_s = body.expires_in_s if body.expires_in_s is not None else hub.config.operator.token_lifetime_days * 86_400
    expires_ms = now_ms + lifetime_s * 1000 if lifetime_s else None
    try:
        done = request.app[TOKENS].rotate(role, now_ms, body.overlap_s * 1000, expires_ms, request.app[SAVE_TOKENS])
    except OSError as error:
        log.error("rotating the %s token: the tokens file could not be written: %s", role, error)
        raise ApiError(409, f"the tokens file could not be written ({error.strerror}); nothing changed") from None
    log.info("rotated the %s token by %s: new %s (expires %s), the old one(s) %s", role, request[ROLE],
             done.new.fingerprint, done.new.expires_ms or "never",
             f"valid until {done.previous_valid_until_ms}" if done.previous_valid_until_ms else "stopped")
    return json_response(RotatedTokenBody(role, done.new.token, done.new.fingerprint, done.new.expires_ms,
                                          done.previous_valid_until_ms))


# -- the route table ---------------------------------------------------------------------------

Route = tuple[str, str, Callable, type | None, Any, str]  # method, path, handler, body, response, summary

ROUTES: list[Route] = [
    ("GET", "/health", health, None, Health, "Liveness and the engine's position."),
    ("GET", "/metrics", metrics, None, None, "Prometheus text format."),
    ("GET", "/openapi.json", openapi, None, None, "This API's OpenAPI document."),
    ("GET", "/state", state, None, StateBody, "The engine's state hash and journal chain."),
    ("GET", "/admin/tokens", list_tokens, None, list[RoleTokensView], "The role tokens' fingerprints and expiries."),
    ("POST", "/admin/tokens/{role}/rotate", rotate_token, RotateToken, RotatedTokenBody,
     "A new token for a role (shown once); the old one stops now or after the overlap."),
    ("GET", "/members", list_members, None, list[MemberView], "Every member and its account."),
    ("POST", "/members", create_member, CreateMember, EventsBody, "Admit a member (RegisterMember)."),
    ("POST", "/members/{member_id}/status", change_status, ChangeStatus, EventsBody, "Restrict, suspend, freeze or restore a member."),
    ("POST", "/members/{member_id}/kill", kill_member, None, EventsBody, "The kill switch: cancel all and refuse new orders."),
    ("GET", "/members/{member_id}/credentials", list_credentials, None, list[CredentialView], "A member's API keys (no secrets)."),
    ("POST", "/members/{member_id}/credentials", issue_credential, None, IssuedCredentialBody, "Issue an API key; the secret is shown once."),
    ("DELETE", "/members/{member_id}/credentials/{key_id}", revoke_credential, None, CredentialView, "Revoke an API key."),
    ("GET", "/instruments", list_instruments, None, list[InstrumentView], "Listed instruments and their status."),
    ("POST", "/instruments/{instrument}/halt", halt_instrument, None, EventsBody, "Halt an instrument."),
    ("POST", "/instruments/{instrument}/resume", resume_instrument, None, EventsBody, "Resume an instrument."),
    ("POST", "/market/close", close_market, None, EventsBody, "Close the whole market temporarily."),
    ("POST", "/market/reopen", reopen_market, None, EventsBody, "Reopen the market."),
    ("POST", "/market/phase", set_phase, PhaseRequest, EventsBody, "Move the trading day to its next phase."),
    ("POST", "/market/void-day", void_day, TradingDayRequest, EventsBody,
     "Void the open day (opened by mistake, no trades): its orders cancelled, the last trading day put back."),
    ("POST", "/clearing/deposits", deposit, CashMovement, CashMovementBody, "Cash into a member's available funds (idempotent by reference)."),
    ("POST", "/clearing/withdrawals", withdraw, CashMovement, CashMovementBody, "Cash out of a member's available funds (idempotent by reference)."),
    ("POST", "/clearing/start-of-day", start_of_day, TradingDayRequest, EventsBody, "Open a day; load holdings from the registry."),
    ("POST", "/clearing/end-of-day", end_of_day, None, EventsBody, "Close the trading day."),
    ("POST", "/clearing/settlements", settle, TradingDayRequest, dict, "Settle a closed day (delivery versus payment)."),
    ("GET", "/clearing/statements/{trading_day}", list_statements, None, list[str], "A settled day's statement files."),
    ("GET", "/clearing/statements/{trading_day}/{name}", download_statement, None, None, "Download one statement file."),
    ("GET", "/regulator/books/{instrument}", book, None, BookView, "Book depth (?levels=N, default 50)."),
    ("GET", "/regulator/trades/{trading_day}", trades, None, list[TradeView], "A day's trades."),
    ("GET", "/regulator/positions", positions, None, list[MemberView], "Members' live positions, or closing ones (?trading_day=)."),
    ("GET", "/regulator/alerts", alerts, None, list[AlertView], "Large-holder threshold crossings."),
    ("GET", "/regulator/audit", audit_log, None, audit.AuditPage,
     "The operators' audit log (?since=seq, ?limit=1..1000): every POST and DELETE, who, when, what, outcome."),
]


def add_routes(app: web.Application, audit_path: Path | None = None) -> None:
    """The routes, and the audit log (``audit_path`` None: kept in memory only)."""
    app[AUDIT] = audit.AuditLog(audit_path)
    for method, path, handler, _, _, _ in ROUTES:
        assert (method, path) in roles.ENDPOINTS, f"{method} {path} is missing from the role table"
        app.router.add_route(method, path, handler)
    missing = set(roles.ENDPOINTS) - {(m, p) for m, p, *_ in ROUTES} - {("GET", "/ws")}
    assert not missing, f"the role table names endpoints without a handler: {sorted(missing)}"

