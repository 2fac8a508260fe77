"""Who may do what: ONE table for every operator endpoint and every WebSocket message.

Every HTTP request is checked against :data:`ENDPOINTS` by a middleware before any handler
runs (an endpoint missing from the table is refused, so forgetting a row fails closed), and
every WebSocket message against :data:`WS_MESSAGES` by the session. The authorization tests
are generated from these two tables.

Roles:

* ``admin`` (the exchange's administrator): members, credentials, instruments, the market.
* ``clearing`` (the clearing house): cash in and out, start and end of day, settlement,
  statements.
* ``regulator``: read-only views of books, trades, positions and alerts, the kill switch
  (a measure the regulator may order) and instrument halts.
* ``member``: a logged-on WebSocket session; it acts on its own orders only (the session
  takes the member id from the logon, never from a frame).
* ``anonymous``: no token (HTTP) or not logged on yet (WebSocket).

``/health``, ``/metrics`` and ``/openapi.json`` are public (``anonymous`` and every role):
load balancers and Prometheus scrape them, and they show no member's data.
"""

from __future__ import annotations

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
}


def endpoint_allowed(method: str, path_template: str, role: str) -> bool:
    """Whether ``role`` may call the endpoint; an endpoint not in the table is refused."""
    return role in ENDPOINTS.get((method, path_template), frozenset())


def message_allowed(message_type: str, role: str) -> bool:
    """Whether a session in ``role`` (member, or anonymous before logon) may send it."""
    return role in WS_MESSAGES.get(message_type, frozenset())
