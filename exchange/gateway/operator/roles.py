"""Who may do what: ONE table for every operator endpoint and every WebSocket message.

Every HTTP request is checked against :data:`ENDPOINTS` by a middleware before any handler
runs (an endpoint missing from the table is refused, so forgetting a row fails closed), and
every WebSocket message against :data:`WS_MESSAGES` by the session. The authorization tests
are generated from these two tables.

Roles:

* ``admin`` (the exchange's administrator): members, credentials, instruments, the market
  (including voiding a day opened by mistake), the operators' own tokens.
* ``clearing`` (the clearing house): cash in and out, start and end of day, settlement,
  statements.
* ``regulator``: read-only views of books, trades, positions, alerts and the operators'
  audit log (:mod:`exchange.gateway.operator.audit`), the kill switch
  (a measure the regulator may order) and instrument halts.
* ``member``: a logged-on WebSocket session; it acts on its own orders only (the session
  takes the member id from the logon, never from a frame).
* ``anonymous``: no token (HTTP) or not logged on yet (WebSocket).

``/health``, ``/metrics`` and ``/openapi.json`` are public (``anonymous`` and every role):
load balancers and Prometheus scrape them, and they show no member's data.

Who is who: :class:`OperatorTokens`, the role tokens (the file ``operator-tokens.json``).
Decisions:

* **A role has one or more tokens, newest first**, each with an optional expiry (epoch ms; a
  token is valid while the clock is before it). A file of the first form, one string per
  role (``{"admin": "..."}``), still loads: such a token never expires. The file keeps that
  form for a role with one token without expiry, and otherwise lists the role's tokens
  (``[{"token": ..., "expires_ms": ...}]``), so simple tools keep reading the common case.
* **Rotation** (``POST /admin/tokens/{role}/rotate``, the admin's) makes a new token (32
  random bytes, hex). The old ones stop working **at once** by default: a rotation is most
  often a suspected leak, and a leaked token must die now. An ``overlap`` keeps them valid
  for so long (at most 7 days, never past an earlier expiry of their own), so a client can
  switch without a gap. The new token may expire (the request's ``expires_in_s``, else the
  configuration's ``[operator] token_lifetime_days``; 0: never). Tokens already expired are
  dropped at a rotation (a role's newest stays, expired, until it is itself rotated, so its
  caller is told "expired" rather than "invalid").
* **The new state is saved before it is used**, with the file writer the composition root
  hands in: a rotation that could not be written changes nothing.
* A token travels in an HTTP header, so it is visible ASCII, 16 characters or more, and no
  token belongs to two roles. Every known token is compared, in constant time, on every
  request (a handful: the check's time does not say which role came close).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping

import msgspec

ADMIN, CLEARING, REGULATOR, MEMBER, ANONYMOUS = "admin", "clearing", "regulator", "member", "anonymous"
OPERATOR_ROLES = (ADMIN, CLEARING, REGULATOR)
ALL_ROLES = (*OPERATOR_ROLES, MEMBER, ANONYMOUS)
PUBLIC = frozenset(ALL_ROLES)

_OPERATORS = frozenset(OPERATOR_ROLES)

ENDPOINTS: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/ws"): PUBLIC,  # the member WebSocket: each message is checked (WS_MESSAGES)
    ("GET", "/state"): frozenset({ADMIN, REGULATOR}),
    # the operators' own tokens
    ("GET", "/admin/tokens"): frozenset({ADMIN}),
    ("POST", "/admin/tokens/{role}/rotate"): frozenset({ADMIN}),
    # members
    ("GET", "/members"): _OPERATORS,
    ("POST", "/members"): frozenset({ADMIN}),
    ("POST", "/members/{member_id}/status"): frozenset({ADMIN}),
    ("POST", "/members/{member_id}/kill"): frozenset({ADMIN, REGULATOR}),
    ("GET", "/members/{member_id}/credentials"): frozenset({ADMIN}),
    ("POST", "/members/{member_id}/credentials"): frozenset({ADMIN}),
    ("DELETE", "/members/{member_id}/credentials/{key_id}"): frozenset({ADMIN}),
    # instruments and the market
    ("GET", "/instruments"): _OPERATORS,
    ("POST", "/instruments/{instrument}/halt"): frozenset({ADMIN, REGULATOR}),
    ("POST", "/instruments/{instrument}/resume"): frozenset({ADMIN, REGULATOR}),
    ("POST", "/market/close"): frozenset({ADMIN}),
    ("POST", "/market/reopen"): frozenset({ADMIN}),
    ("POST", "/market/phase"): frozenset({ADMIN}),
    ("POST", "/market/void-day"): frozenset({ADMIN}),
    # the clearing house
    ("POST", "/clearing/deposits"): frozenset({CLEARING}),
    ("POST", "/clearing/withdrawals"): frozenset({CLEARING}),
    ("POST", "/clearing/start-of-day"): frozenset({CLEARING}),
    ("POST", "/clearing/end-of-day"): frozenset({CLEARING}),
    ("POST", "/clearing/settlements"): frozenset({CLEARING}),
    ("GET", "/clearing/statements/{trading_day}"): frozenset({CLEARING, REGULATOR}),
    ("GET", "/clearing/statements/{trading_day}/{name}"): frozenset({CLEARING, REGULATOR}),
    # the regulator's read-only views
    ("GET", "/regulator/books/{instrument}"): frozenset({REGULATOR}),
    ("GET", "/regulator/trades/{trading_day}"): frozenset({REGULATOR, CLEARING}),
    ("GET", "/regulator/positions"): frozenset({REGULATOR, CLEARING}),
    ("GET", "/regulator/alerts"): frozenset({REGULATOR}),
    ("GET", "/regulator/audit"): frozenset({REGULATOR}),  # the operators' audit log
}

_MEMBER_ONLY = frozenset({MEMBER})

WS_MESSAGES: dict[str, frozenset[str]] = {
    "logon": frozenset({ANONYMOUS}),
    "heartbeat": _MEMBER_ONLY,
    "new_order": _MEMBER_ONLY,
    "cancel": _MEMBER_ONLY,
    "amend": _MEMBER_ONLY,
    "mass_cancel": _MEMBER_ONLY,
    "order_status": _MEMBER_ONLY,
    "subscribe": _MEMBER_ONLY,
    "unsubscribe": _MEMBER_ONLY,
    "cancel_after": _MEMBER_ONLY,
    "logout": _MEMBER_ONLY,
}


def endpoint_allowed(method: str, path_template: str, role: str) -> bool:
    """Whether ``role`` may call the endpoint; an endpoint not in the table is refused."""
    return role in ENDPOINTS.get((method, path_template), frozenset())


def message_allowed(message_type: str, role: str) -> bool:
    """Whether a session in ``role`` (member, or anonymous before logon) may send it."""
    return role in WS_MESSAGES.get(message_type, frozenset())


# -- the role tokens -------------------------------------------------------------------------------

MIN_TOKEN_CHARS = 16
MAX_OVERLAP_MS = 7 * 86_400_000


class TokenEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One token of a role; ``expires_ms`` None: it never expires."""

    token: str
    expires_ms: int | None = None

    def valid_at(self, now_ms: int) -> bool:
        return self.expires_ms is None or now_ms < self.expires_ms

    @property
    def fingerprint(self) -> str:
        """What logs and listings show of a token: never the token itself."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:16]


class Rotation(msgspec.Struct, frozen=True):
    """What a rotation did: the new token, and until when the old ones work (None: not at all)."""

    role: str
    new: TokenEntry
    previous_valid_until_ms: int | None


_file_decoder = msgspec.json.Decoder(dict[str, str | list[TokenEntry]])


class OperatorTokens:
    """The operator roles' tokens, newest first per role. Pure but for :meth:`generate` and
    the random new token of :meth:`rotate`: the caller passes the time."""

    def __init__(self, by_role: Mapping[str, list[TokenEntry]]) -> None:
        self._by_role = {role: list(entries) for role, entries in by_role.items() if entries}
        _check(self._by_role)

    @classmethod
    def generate(cls) -> OperatorTokens:
        """A fresh token for every operator role, none expiring (a first start)."""
        return cls({role: [TokenEntry(secrets.token_hex(32))] for role in OPERATOR_ROLES})

    @classmethod
    def of(cls, tokens: Mapping[str, str]) -> OperatorTokens:
        return cls({role: [TokenEntry(token)] for role, token in tokens.items()})

    @classmethod
    def decode(cls, data: bytes) -> OperatorTokens:
        """The file's tokens; ``ValueError`` naming what is wrong with it."""
        try:
            raw = _file_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise ValueError(f"not a role-to-token(s) JSON object: {error}") from None
        return cls({role: [TokenEntry(value)] if isinstance(value, str) else value for role, value in raw.items()})

    def encode(self) -> bytes:
        document: dict[str, object] = {}
        for role in sorted(self._by_role):
            entries = self._by_role[role]
            plain = len(entries) == 1 and entries[0].expires_ms is None
            document[role] = entries[0].token if plain else [msgspec.to_builtins(e) for e in entries]
        return json.dumps(document, indent=2).encode()

    def newest(self) -> dict[str, str]:
        """Each role's newest token (whether or not it has expired)."""
        return {role: entries[0].token for role, entries in sorted(self._by_role.items())}

    def entries(self, role: str) -> list[TokenEntry]:
        return list(self._by_role.get(role, ()))

    def find(self, token: bytes) -> tuple[str, TokenEntry] | None:
        """The role and entry a presented token (raw header bytes) is, valid or not."""
        found = None
        for role, entries in sorted(self._by_role.items()):
            for entry in entries:  # every entry compared: no early exit
                if hmac.compare_digest(token, entry.token.encode()):
                    found = (role, entry)
        return found

    def rotate(self, role: str, now_ms: int, overlap_ms: int, expires_ms: int | None,
               save: Callable[[bytes], None]) -> Rotation:
        """A new newest token for ``role``; the old ones valid for ``overlap_ms`` more (0: they
        stop now). ``save`` gets the new file's bytes first; if it raises, nothing changed."""
        assert role in OPERATOR_ROLES and 0 <= overlap_ms <= MAX_OVERLAP_MS
        new = TokenEntry(secrets.token_hex(32), expires_ms)
        by_role = {r: [e for i, e in enumerate(entries) if i == 0 or e.valid_at(now_ms)] for r, entries in self._by_role.items()}
        until = now_ms + overlap_ms if overlap_ms else None
        kept = [] if until is None else [_expire_by(e, until) for e in by_role.get(role, []) if e.valid_at(now_ms)]
        by_role[role] = [new, *kept]
        rotated = OperatorTokens(by_role)
        save(rotated.encode())
        self._by_role = rotated._by_role
        return Rotation(role, new, until if kept else None)


def _expire_by(entry: TokenEntry, until_ms: int) -> TokenEntry:
    if entry.expires_ms is not None and entry.expires_ms <= until_ms:
        return entry
    return TokenEntry(entry.token, until_ms)


def _check(by_role: Mapping[str, list[TokenEntry]]) -> None:
    unknown = sorted(set(by_role) - set(OPERATOR_ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}: the roles are {', '.join(OPERATOR_ROLES)}")
    tokens = [entry.token for entries in by_role.values() for entry in entries]
    for role, entries in sorted(by_role.items()):
        for entry in entries:
            text = entry.token
            if len(text) < MIN_TOKEN_CHARS or not text.isascii() or not text.isprintable() or " " in text:
                raise ValueError(f"{role}: a token must be {MIN_TOKEN_CHARS} or more visible ASCII characters")
    if len(set(tokens)) != len(tokens):
        raise ValueError("one token is listed twice (each token names one role)")
