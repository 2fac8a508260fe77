"""The authorization matrix, generated from the one role table: every endpoint x every role,
no token and a bad token, and every WebSocket message type x member and anonymous. A refused
call must change nothing; an allowed one must never be refused for its role. Every call that
may change something (POST, DELETE), allowed or refused, leaves one audit entry naming the
caller's role and the answer's status; a read leaves none."""

from __future__ import annotations

import re

import msgspec
import pytest

from exchange.gateway.member import wire
from exchange.gateway.operator import roles
from exchange.gateway.operator.api import AUDIT, AUDITED_METHODS, ROUTES, TOKENS
from tests.gateway.conftest import DAY, SYMBOL, Member, logged_on, logon_frame

pytestmark = pytest.mark.asyncio

SAMPLE_PARAMS = {"member_id": "M1", "key_id": "0000000000000000", "instrument": SYMBOL,
                 "trading_day": DAY, "name": "settlement-report.json", "role": roles.REGULATOR}
ROTATE = ("POST", "/admin/tokens/{role}/rotate")
OPERATOR_ENDPOINTS = sorted(key for key in roles.ENDPOINTS if key != ("GET", "/ws"))


def sample_path(template: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: SAMPLE_PARAMS[m[1]], template)


def headers_for(role: str, tokens: dict[str, str]) -> dict[str, str]:
    if role == roles.ANONYMOUS:
        return {}
    if role == "bad-token":
        return {"Authorization": "Bearer " + "f" * 64}
    return {"Authorization": f"Bearer {tokens[role]}"}


async def test_every_route_is_in_the_role_table_and_back() -> None:
    assert {(m, p) for m, p, *_ in ROUTES} | {("GET", "/ws")} == set(roles.ENDPOINTS)
    assert set(roles.WS_MESSAGES) == {cls.__struct_config__.tag for cls in wire.InboundMessage.__args__}


async def test_operator_matrix(served, http) -> None:
    await served.add_member("M1")
    before = served.hub.service.last_seq
    tokens = dict(served.tokens)  # a rotation (the admin's, of the regulator's token) moves one
    in_force = served.server.app[TOKENS]
    audit_log = served.server.app[AUDIT]
    refused = allowed = 0
    for method, template in OPERATOR_ENDPOINTS:
        for role in (*roles.OPERATOR_ROLES, roles.ANONYMOUS, "bad-token"):
            permitted = role in roles.ENDPOINTS[(method, template)]
            seq, newest, audited = served.hub.service.last_seq, in_force.newest(), audit_log.last_seq
            async with http.request(method, served.url + sample_path(template), headers=headers_for(role, tokens), data=b"{}") as response:
                body = await response.read()
            label = f"{method} {template} as {role}: {response.status} {body[:120]!r}"
            check_audited(audit_log, audited, method, template, role, response.status, label)
            if permitted:
                allowed += 1
                assert response.status not in (401, 403), label
                if (method, template) == ROTATE:
                    rotated = msgspec.json.decode(body)
                    tokens[rotated["role"]] = rotated["token"]
            else:
                refused += 1
                assert response.status == (401 if role in (roles.ANONYMOUS, "bad-token") else 403), label
                assert served.hub.service.last_seq == seq, f"refused but changed the state: {label}"
                assert in_force.newest() == newest, f"refused but changed the tokens: {label}"
    assert refused > allowed > 20
    assert served.hub.service.last_seq >= before


def check_audited(audit_log, before: int, method: str, template: str, role: str, status: int, label: str) -> None:
    if method not in AUDITED_METHODS or status == 401:
        assert audit_log.last_seq == before, f"a read or an unauthenticated call was audited: {label}"
        return
    assert audit_log.last_seq == before + 1, f"not audited: {label}"
    [entry] = audit_log.page(before, 1).entries
    who = "invalid" if role == "bad-token" else role
    assert (entry.role, entry.endpoint, entry.status) == (who, template, status), label
    assert (entry.token is None) == (role == roles.ANONYMOUS), label


@pytest.mark.parametrize("message_type", sorted(roles.WS_MESSAGES))
async def test_websocket_matrix(served, http, message_type: str) -> None:
    """Before logon only ``logon`` passes; after it, ``logon`` is refused and the rest pass."""
    key = await served.add_member("M1")
    samples = {
        "logon": logon_frame(*key), "heartbeat": {"type": "heartbeat"},
        "new_order": {"type": "new_order", "client_order_id": "x", "instrument": SYMBOL, "side": "buy", "qty": 1, "price": "58.20"},
        "cancel": {"type": "cancel", "instrument": SYMBOL, "order_id": 1},
        "amend": {"type": "amend", "instrument": SYMBOL, "order_id": 1, "qty": 1, "price": "58.20"},
        "mass_cancel": {"type": "mass_cancel"}, "order_status": {"type": "order_status", "order_id": 1},
        "subscribe": {"type": "subscribe", "instruments": [SYMBOL]},
        "unsubscribe": {"type": "unsubscribe", "instruments": [SYMBOL]},
        "cancel_after": {"type": "cancel_after", "seconds": 0},
        "logout": {"type": "logout"},
    }
    anonymous = await Member.connect(http, served.ws_url)
    await anonymous.send(samples[message_type])
    first = await anonymous.expect("logon_ack", "error")
    if roles.ANONYMOUS in roles.WS_MESSAGES[message_type]:
        assert first["type"] == "logon_ack"
    else:
        assert first["code"] == wire.ErrorCode.NOT_LOGGED_ON
    member = await logged_on(http, served, key)
    await member.send(samples[message_type])
    answers = await member.drain(0.3)
    refusals = [m for m in answers if m["type"] == "error" and m["code"] in (wire.ErrorCode.NOT_ALLOWED, wire.ErrorCode.NOT_LOGGED_ON)]
    assert bool(refusals) == (roles.MEMBER not in roles.WS_MESSAGES[message_type]), answers
