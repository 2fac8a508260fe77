"""The operator API over HTTP: members, credentials (persisted), bad bodies naming the field,
a whole day (open, trade, close, settle, statements) and the regulator's views,
/openapi.json from the structs, /metrics in Prometheus text."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import call_as as call
from tests.gateway.conftest import DAY, SYMBOL, logged_on, order, start_served, stop_served

pytestmark = pytest.mark.asyncio


async def test_members_and_credentials_survive_a_restart(tmp_path, http) -> None:
    served = await start_served(tmp_path / "data")
    try:
        await call(http, served, "admin", "POST", "/members", {"member_id": "OP1", "kind": "covered", "annual_allocation_t": 5000})
        refused = await call(http, served, "admin", "POST", "/members", {"member_id": "OP1", "kind": "covered"}, status=409)
        assert refused["code"] == 217
        bad = await call(http, served, "admin", "POST", "/members", {"member_id": "OP2", "kind": "covered", "qty": 1}, status=400)
        assert bad["field"] == "qty"
        bad = await call(http, served, "admin", "POST", "/members", {"member_id": "OP2", "kind": "nobody"}, status=400)
        assert bad["field"] == "kind"
        await call(http, served, "admin", "POST", "/members/NOPE/credentials", status=404)
        issued = await call(http, served, "admin", "POST", "/members/OP1/credentials", status=201)
        assert len(issued["secret"]) == 64
        listed = await call(http, served, "admin", "GET", "/members/OP1/credentials")
        assert [k["key_id"] for k in listed] == [issued["key_id"]] and "secret" not in listed[0]
        members = await call(http, served, "regulator", "GET", "/members")
        assert [m["member_id"] for m in members] == ["OP1"] and members[0]["kind"] == "covered"
        await call(http, served, "admin", "POST", "/members/OP1/status", {"status": "suspended"})
    finally:
        await stop_served(served)
    assert issued["secret"] not in (tmp_path / "data" / "credentials.json").read_text()
    served = await start_served(tmp_path / "data")
    try:
        member = await logged_on(http, served, (issued["key_id"], bytes.fromhex(issued["secret"])))
        await call(http, served, "admin", "DELETE", f"/members/OP1/credentials/{issued['key_id']}")
        assert (await member.expect("session_closing"))["reason"] == "credentials_revoked"
    finally:
        await stop_served(served)


async def test_a_trading_day_through_the_api(served, http) -> None:
    buyer, seller = await served.add_member("B1"), await served.add_member("S1")
    await call(http, served, "clearing", "POST", "/clearing/deposits", {"member_id": "B1", "amount_fen": 100, "reference": "B1-D1"})
    await call(http, served, "clearing", "POST", "/clearing/withdrawals", {"member_id": "B1", "amount_fen": 100, "reference": "B1-W1"})
    await call(http, served, "clearing", "POST", "/clearing/start-of-day", {"trading_day": DAY})
    await call(http, served, "clearing", "POST", "/clearing/start-of-day", {"trading_day": DAY}, status=409)
    await call(http, served, "admin", "POST", "/market/phase", {"phase": "continuous"})
    b, s = await logged_on(http, served, buyer), await logged_on(http, served, seller)
    await b.send(order("b1", "buy", 100, "58.20"))
    await b.expect("execution_report")
    await s.send(order("s1", "sell", 60, "58.20"))
    await s.expect("execution_report")
    await s.expect("execution_report")
    book = await call(http, served, "regulator", "GET", f"/regulator/books/{SYMBOL}")
    assert book["bids"] == [["58.20", 40, 1]] and book["asks"] == []
    await call(http, served, "regulator", "GET", "/regulator/books/NOPE", status=404)
    trades = await call(http, served, "regulator", "GET", f"/regulator/trades/{DAY}")
    assert [(t["price"], t["qty_t"], t["buy_member_id"]) for t in trades] == [("58.20", 60, "B1")]
    positions = await call(http, served, "regulator", "GET", "/regulator/positions")
    assert {p["member_id"] for p in positions} == {"B1", "S1"}
    await call(http, served, "admin", "POST", f"/instruments/{SYMBOL}/halt")
    instruments = await call(http, served, "regulator", "GET", "/instruments")
    assert [i["halted"] for i in instruments if i["symbol"] == SYMBOL] == [True]
    await call(http, served, "admin", "POST", f"/instruments/{SYMBOL}/resume")
    await call(http, served, "regulator", "POST", "/members/S1/kill")
    await call(http, served, "admin", "POST", "/market/phase", {"phase": "post_close"})
    await call(http, served, "clearing", "POST", "/clearing/end-of-day")
    report = await call(http, served, "clearing", "POST", "/clearing/settlements", {"trading_day": DAY})
    assert (report["trades"], report["volume_t"], report["differences"]) == (1, 60, [])
    files = await call(http, served, "clearing", "GET", f"/clearing/statements/{DAY}")
    assert "settlement-report.json" in files
    text = await call(http, served, "regulator", "GET", f"/clearing/statements/{DAY}/settlement-report.json")
    assert "60" in str(text)
    await call(http, served, "clearing", "GET", f"/clearing/statements/{DAY}/..%2Fgateway-secret", status=404)
    closing = await call(http, served, "regulator", "GET", f"/regulator/positions?trading_day={DAY}")
    assert closing
    await call(http, served, "regulator", "GET", "/regulator/alerts")


async def test_openapi_health_and_metrics(served, http) -> None:
    async with http.get(served.url + "/openapi.json") as response:
        document = await response.json()
    assert document["openapi"].startswith("3.")
    assert "CreateMember" in document["components"]["schemas"]
    assert document["paths"]["/members"]["post"]["x-roles"] == ["admin"]
    assert "requestBody" in document["paths"]["/clearing/deposits"]["post"]
    async with http.get(served.url + "/health") as response:
        assert (await response.json())["status"] == "ok"
    async with http.get(served.url + "/metrics") as response:
        text = await response.text()
    for name in ("exchange_orders_received_total", "exchange_rejects_total", "exchange_order_ack_latency_seconds_bucket",
                 "exchange_connections", "exchange_outbound_queue_messages"):
        assert name in text
    async with http.get(served.url + "/nowhere") as response:
        assert response.status == 404 and (await response.json())["error"]
