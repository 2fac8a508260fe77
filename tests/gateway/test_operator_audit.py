"""The operators' audit log: every POST and DELETE through the operator API, who (role and
token fingerprint), when, what (method, path, body) and how it ended, on disk before the
answer, readable by the regulator a page at a time, without a secret ever written, and
kept across a restart."""

from __future__ import annotations

import msgspec
import pytest

from exchange.gateway.operator import audit
from exchange.gateway.operator.audit import AUDIT_FILE, AuditLog, AuditLogDamaged
from exchange.gateway.operator.roles import TokenEntry
from tests.gateway.conftest import call_as as call
from tests.gateway.conftest import start_served, stop_served

def lines_on_disk(served) -> list[dict]:
    return [msgspec.json.decode(line) for line in (served.data_dir / AUDIT_FILE).read_bytes().splitlines()]


@pytest.mark.asyncio
async def test_actions_are_on_disk_before_the_answer_with_who_what_and_outcome(served, http) -> None:
    await call(http, served, "admin", "POST", "/members", {"member_id": "AU1", "kind": "covered"})
    assert len(lines_on_disk(served)) == 1  # read as soon as the answer came: written before it
    await call(http, served, "admin", "POST", "/members", {"member_id": "AU1", "kind": "covered"}, status=409)
    await call(http, served, "clearing", "POST", "/members", {"member_id": "AU2", "kind": "covered"}, status=403)
    await call(http, served, None, "POST", "/market/close", status=401)
    await call(http, served, "admin", "GET", "/members")  # a read: not logged
    done, refused, forbidden = lines_on_disk(served)  # the unauthenticated call is nobody's action: not logged
    admin_fingerprint = TokenEntry(served.tokens["admin"]).fingerprint
    assert (done["seq"], done["role"], done["token"], done["method"], done["path"], done["status"]) == (
        1, "admin", admin_fingerprint, "POST", "/members", 200)
    assert done["request"] == {"member_id": "AU1", "kind": "covered"}
    assert done["result"]["events"][0]["event"] == "MemberRegistered" and done["error"] is None
    assert abs(done["at_ms"] - served.hub.now_ms()) < 3_600_000
    assert (refused["status"], refused["result"], refused["error"]) == (409, None, "A member with that id is already registered.")
    assert (forbidden["role"], forbidden["status"]) == ("clearing", 403)


@pytest.mark.asyncio
async def test_secrets_never_reach_the_log(served, http) -> None:
    await call(http, served, "admin", "POST", "/members", {"member_id": "AU1", "kind": "covered"})
    issued = await call(http, served, "admin", "POST", "/members/AU1/credentials", status=201)
    rotated = await call(http, served, "admin", "POST", "/admin/tokens/regulator/rotate", {"overlap_s": 60})
    await call(http, served, "admin", "POST", "/admin/tokens/regulator/rotate", {"token": "x" * 32}, status=400)
    text = (served.data_dir / AUDIT_FILE).read_text()
    for secret in (issued["secret"], rotated["token"], "x" * 32):
        assert secret not in text
    entries = lines_on_disk(served)
    assert entries[1]["result"] == {"key_id": issued["key_id"], "member_id": "AU1", "secret": audit.NOT_LOGGED}
    assert entries[2]["result"]["fingerprint"] == rotated["fingerprint"] and entries[2]["result"]["token"] == audit.NOT_LOGGED
    assert entries[3]["request"] == {"token": audit.NOT_LOGGED}


@pytest.mark.asyncio
async def test_the_regulator_pages_through_the_log(served, http) -> None:
    for number in range(5):
        await call(http, served, "admin", "POST", "/members", {"member_id": f"AU{number}", "kind": "voluntary"})
    first = await call(http, served, "regulator", "GET", "/regulator/audit?limit=2")
    assert [e["seq"] for e in first["entries"]] == [1, 2] and first["next"] == 2
    rest = await call(http, served, "regulator", "GET", f"/regulator/audit?since={first['next']}&limit=1000")
    assert [e["seq"] for e in rest["entries"]] == [3, 4, 5] and rest["next"] == 5
    assert [e["request"]["member_id"] for e in rest["entries"]] == ["AU2", "AU3", "AU4"]
    empty = await call(http, served, "regulator", "GET", "/regulator/audit?since=99")
    assert (empty["entries"], empty["next"]) == ([], 5)
    for query, field in (("limit=0", "limit"), ("limit=1001", "limit"), ("since=-1", "since"), ("since=x", "since")):
        bad = await call(http, served, "regulator", "GET", f"/regulator/audit?{query}", status=400)
        assert bad["field"] == field
    await call(http, served, "admin", "GET", "/regulator/audit", status=403)


@pytest.mark.asyncio
async def test_the_log_survives_a_restart_and_numbering_goes_on(tmp_path, http) -> None:
    served = await start_served(tmp_path / "data")
    try:
        await call(http, served, "admin", "POST", "/members", {"member_id": "AU1", "kind": "covered"})
        await call(http, served, "admin", "POST", "/market/close")
    finally:
        await stop_served(served)
    with open(tmp_path / "data" / AUDIT_FILE, "ab") as handle:
        handle.write(b'{"seq": 3, "at_ms"')  # a write a crash cut short: never answered
    served = await start_served(tmp_path / "data")
    try:
        await call(http, served, "admin", "POST", "/market/reopen")
        page = await call(http, served, "regulator", "GET", "/regulator/audit")
    finally:
        await stop_served(served)
    assert [(e["seq"], e["path"]) for e in page["entries"]] == [(1, "/members"), (2, "/market/close"), (3, "/market/reopen")]
    assert AuditLog(tmp_path / "data" / AUDIT_FILE).verify() == []


def test_an_edited_entry_breaks_the_chain_and_a_damaged_line_refuses_to_open(tmp_path) -> None:
    path = tmp_path / AUDIT_FILE
    log = AuditLog(path)
    for number in range(3):
        log.append(1_000 + number, "admin", None, "POST", "/market/close", "/market/close", b"", 200, b'{"events": []}')
    assert AuditLog(path).verify() == []
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1].replace(b'"at_ms":1001', b'"at_ms":1009') + lines[2])
    assert AuditLog(path).verify() == ["entry 2: its chain does not follow from the entry before"]
    path.write_bytes(lines[0] + b"not json\n" + lines[2])
    with pytest.raises(AuditLogDamaged, match="line 2 does not read"):
        AuditLog(path)
    path.write_bytes(lines[0] + lines[2])
    with pytest.raises(AuditLogDamaged, match="line 2 says it is entry 3"):
        AuditLog(path)


def test_a_large_or_unreadable_body_is_summarised() -> None:
    assert audit.kept(b"\xff{") == {"not_json_bytes": 2}
    big = msgspec.json.encode({"differences": ["x" * 100] * 200})
    assert audit.kept(big) == {"json_bytes": len(big), "kept": False}
    assert audit.kept(b"") is None
