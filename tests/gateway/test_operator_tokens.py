"""Operator tokens rotate through the API and may expire (issue 10, finding 7).

Before: the tokens in ``operator-tokens.json`` never expired and changed only by editing the
file and restarting. Now ``POST /admin/tokens/{role}/rotate`` makes a new token (the old one
stops at once, or after an overlap), saved to the file before it is in force, and a token may
carry an expiry (the request's, or ``[operator] token_lifetime_days``). The clock is the
hub's, frozen here by replacing ``hub.now_ms``: no test waits for time to pass.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from exchange.config import OperatorConfig
from exchange.gateway.operator.api import TOKENS
from exchange.gateway.operator.roles import OperatorTokens, TokenEntry
from exchange.gateway.server import operator_token_store, operator_tokens
from tests.gateway.conftest import Served, fast_config, start_served, stop_served

NOW_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z
HOUR_MS = 3_600_000
A, B, C = "a" * 32, "b" * 32, "c" * 32


# -- the token set (pure) -------------------------------------------------------------------------


def test_the_first_file_form_still_loads_and_is_written_back_the_same() -> None:
    data = json.dumps({"admin": A, "clearing": B, "regulator": C}, indent=2).encode()
    tokens = OperatorTokens.decode(data)
    assert tokens.newest() == {"admin": A, "clearing": B, "regulator": C}
    assert tokens.encode() == data


@pytest.mark.parametrize(("document", "problem"), [
    ({"root": A}, "unknown role(s) root"),
    ({"admin": "short"}, "a token must be 16 or more visible ASCII"),
    ({"admin": "ä" * 20}, "a token must be 16 or more visible ASCII"),
    ({"admin": "x" * 10 + " " + "y" * 10}, "a token must be 16 or more visible ASCII"),
    ({"admin": A, "clearing": A}, "listed twice"),
    ({"admin": [{"token": A, "expires": 1}]}, "not a role-to-token"),
    ({"admin": 42}, "not a role-to-token"),
])
def test_a_bad_file_is_refused_naming_the_problem(document: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        OperatorTokens.decode(json.dumps(document).encode())


def test_rotation_without_overlap_stops_the_old_token_at_once() -> None:
    tokens, saved = OperatorTokens.of({"admin": A, "regulator": C}), list[bytes]()
    done = tokens.rotate("regulator", NOW_MS, 0, None, saved.append)
    assert done.previous_valid_until_ms is None and done.new.token not in (A, C)
    assert tokens.find(C.encode()) is None
    assert tokens.find(done.new.token.encode()) == ("regulator", done.new)
    assert OperatorTokens.decode(saved[-1]).newest() == tokens.newest()


def test_rotation_with_overlap_keeps_the_old_token_until_then_and_not_past_its_own_expiry() -> None:
    tokens = OperatorTokens({"regulator": [TokenEntry(C, NOW_MS + 10 * HOUR_MS)], "admin": [TokenEntry(A)]})
    first = tokens.rotate("regulator", NOW_MS, 2 * HOUR_MS, NOW_MS + 48 * HOUR_MS, lambda data: None)
    assert first.previous_valid_until_ms == NOW_MS + 2 * HOUR_MS
    role, old = tokens.find(C.encode()) or ("", TokenEntry(""))
    assert role == "regulator" and old.valid_at(NOW_MS + 2 * HOUR_MS - 1) and not old.valid_at(NOW_MS + 2 * HOUR_MS)
    second = tokens.rotate("regulator", NOW_MS + HOUR_MS, 24 * HOUR_MS, None, lambda data: None)
    expiries = {e.token: e.expires_ms for e in tokens.entries("regulator")}
    assert expiries[C] == NOW_MS + 2 * HOUR_MS  # an overlap never lengthens a token's life
    assert expiries[first.new.token] == NOW_MS + 25 * HOUR_MS
    assert tokens.entries("regulator")[0] == second.new
    tokens.rotate("admin", NOW_MS + 3 * HOUR_MS, 0, None, lambda data: None)
    assert C not in {e.token for e in tokens.entries("regulator")}  # expired: dropped at a rotation


def test_a_rotation_that_cannot_be_saved_changes_nothing() -> None:
    tokens = OperatorTokens.of({"admin": A})

    def fail(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        tokens.rotate("admin", NOW_MS, 0, None, fail)
    assert tokens.newest() == {"admin": A}


def test_a_file_of_rotated_tokens_round_trips() -> None:
    tokens = OperatorTokens.of({"admin": A, "clearing": B})
    tokens.rotate("clearing", NOW_MS, HOUR_MS, NOW_MS + 9 * HOUR_MS, lambda data: None)
    again = OperatorTokens.decode(tokens.encode())
    assert again.entries("clearing") == tokens.entries("clearing") and again.newest()["admin"] == A
    assert json.loads(tokens.encode())["admin"] == A  # one token without expiry: the plain form


# -- over HTTP ---------------------------------------------------------------------------------


async def status_of(http: aiohttp.ClientSession, served: Served, token: str, method: str = "GET",
                    path: str = "/regulator/alerts", body: dict | None = None) -> tuple[int, Any]:
    async with http.request(method, served.url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


def frozen(served: Served, monkeypatch: pytest.MonkeyPatch, clock: list[int]) -> None:
    monkeypatch.setattr(served.hub, "now_ms", lambda: clock[0])


@pytest.mark.asyncio
async def test_rotate_over_the_api_saves_the_file_and_survives_a_restart(tmp_path: Path, http) -> None:
    data_dir = tmp_path / "data"
    served = await start_served(data_dir)
    try:
        admin, old = served.tokens["admin"], served.tokens["regulator"]
        status, rotated = await status_of(http, served, admin, "POST", "/admin/tokens/regulator/rotate", {})
        assert status == 200 and rotated["role"] == "regulator" and rotated["previous_valid_until_ms"] is None
        new = rotated["token"]
        assert (await status_of(http, served, old))[0] == 401  # at once
        assert (await status_of(http, served, new))[0] == 200
        path = data_dir / "operator-tokens.json"
        assert json.loads(path.read_text())["regulator"] == new
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        listed = (await status_of(http, served, admin, path="/admin/tokens"))[1]
        assert new not in json.dumps(listed) and old not in json.dumps(listed)
        assert [t["fingerprint"] for r in listed if r["role"] == "regulator" for t in r["tokens"]] == [rotated["fingerprint"]]
    finally:
        await stop_served(served)
    served = await start_served(data_dir)
    try:
        assert served.tokens["regulator"] == new
        assert (await status_of(http, served, new))[0] == 200
        assert (await status_of(http, served, old))[0] == 401
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_an_overlap_and_an_expiry_follow_the_hubs_clock(served, http, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [NOW_MS]
    frozen(served, monkeypatch, clock)
    admin, old = served.tokens["admin"], served.tokens["regulator"]
    status, rotated = await status_of(http, served, admin, "POST", "/admin/tokens/regulator/rotate",
                                      {"overlap_s": 600, "expires_in_s": 3600})
    assert status == 200, rotated
    assert (rotated["previous_valid_until_ms"], rotated["expires_ms"]) == (NOW_MS + 600_000, NOW_MS + 3_600_000)
    new = rotated["token"]
    clock[0] = NOW_MS + 599_999
    assert (await status_of(http, served, old))[0] == 200 and (await status_of(http, served, new))[0] == 200
    clock[0] = NOW_MS + 600_000
    status, refused = await status_of(http, served, old)
    assert status == 401 and "expired" in refused["error"]
    clock[0] = NOW_MS + 3_600_000
    status, refused = await status_of(http, served, new)
    assert status == 401 and refused["error"].startswith("the regulator token has expired")
    assert (await status_of(http, served, admin, path="/admin/tokens"))[0] == 200  # other roles unaffected


@pytest.mark.asyncio
async def test_the_configured_lifetime_applies_when_the_request_names_none(tmp_path: Path, http, monkeypatch) -> None:
    config = msgspec.structs.replace(fast_config(), operator=OperatorConfig(token_lifetime_days=30))
    served = await start_served(tmp_path / "data", config=config)
    try:
        frozen(served, monkeypatch, [NOW_MS])
        status, rotated = await status_of(http, served, served.tokens["admin"], "POST", "/admin/tokens/clearing/rotate", {})
        assert status == 200 and rotated["expires_ms"] == NOW_MS + 30 * 86_400_000
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_the_admin_may_rotate_its_own_token(served, http) -> None:
    old = served.tokens["admin"]
    status, rotated = await status_of(http, served, old, "POST", "/admin/tokens/admin/rotate", {})
    assert status == 200
    assert (await status_of(http, served, old, path="/admin/tokens"))[0] == 401
    assert (await status_of(http, served, rotated["token"], path="/admin/tokens"))[0] == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/admin/tokens/root/rotate", {}, 404, "role"),
    ("/admin/tokens/regulator/rotate", {"overlap_s": -1}, 400, "overlap_s"),
    ("/admin/tokens/regulator/rotate", {"overlap_s": 8 * 86_400}, 400, "overlap_s"),
    ("/admin/tokens/regulator/rotate", {"expires_in_s": 5}, 400, "expires_in_s"),
    ("/admin/tokens/regulator/rotate", {"lifetime": 5}, 400, "lifetime"),
])
async def test_bad_rotations_are_refused_naming_the_field(served, http, path: str, body: dict, status: int, field: str) -> None:
    before = served.server.app[TOKENS].newest()
    got, answer = await status_of(http, served, served.tokens["admin"], "POST", path, body)
    assert (got, answer["field"]) == (status, field), answer
    assert served.server.app[TOKENS].newest() == before


def test_a_handed_in_file_of_the_first_form_loads(tmp_path: Path) -> None:
    given = tmp_path / "mine.json"
    given.write_text(json.dumps({"admin": A, "clearing": B, "regulator": C}))
    assert operator_tokens(tmp_path, given) == ({"admin": A, "clearing": B, "regulator": C}, given)
    given.write_text(json.dumps({"admin": "short"}))
    with pytest.raises(ValueError, match="mine.json: admin: a token must be 16 or more"):
        operator_token_store(tmp_path, given)
