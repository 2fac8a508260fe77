"""Admitting a member (``POST /members``) opens its registry account (a member holding under
the member's id) and its cash account in the same step, or refuses (409 naming why) with
nothing registered. The regression: a member admitted mid-day traded and settled, then the
next start of day was 409 "unknown registry account"."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.gateway.operator.api import AUDIT
from registry_adapter.memory import InMemoryRegistry
from registry_adapter.port import RegistryUnavailable
from registry_adapter.sql import SqlRegistry
from registry_adapter.sql.vocabulary import AccountType
from tests.gateway.conftest import call_as as call
from tests.gateway.conftest import DAY, HOLDING_T, SYMBOL, logged_on, order, start_served, stop_served

pytestmark = pytest.mark.asyncio
NEXT_DAY = "2026-01-06"


def sql_registry(directory: Path) -> SqlRegistry:
    registry = SqlRegistry(f"sqlite:///{directory / 'registry.db'}")
    registry.create_schema()
    return registry


class FlakyRegistry(InMemoryRegistry):
    """An in-memory registry that cannot be reached while ``down``."""

    down = False

    def open_account(self, account_id: str, *args, **kwargs) -> bool:
        if self.down:
            raise RegistryUnavailable("the registry database did not answer: connection refused")
        return super().open_account(account_id, *args, **kwargs)


async def test_admission_opens_both_accounts_and_the_day_starts(tmp_path, http) -> None:
    registry = sql_registry(tmp_path)
    served = await start_served(tmp_path / "data", registry=registry)  # type: ignore[arg-type]
    try:
        await call(http, served, "admin", "POST", "/members", {"member_id": "AD1", "kind": "covered"})
        assert registry.account_type("AD1") is AccountType.MEMBER_HOLDING
        clearing = served.parts.exchange.clearing
        assert clearing is not None and clearing.ledger.account("AD1").available_fen == 0
        await call(http, served, "clearing", "POST", "/clearing/start-of-day", {"trading_day": DAY})
    finally:
        await stop_served(served)
        registry.close()


async def test_an_account_the_registry_refuses_registers_nothing(tmp_path, http) -> None:
    registry = sql_registry(tmp_path)
    registry.open_account("AD1", AccountType.GOVERNMENT_ALLOCATION.value, actor="test", reason="the id is taken")
    served = await start_served(tmp_path / "data", registry=registry)  # type: ignore[arg-type]
    try:
        seq = served.hub.service.last_seq
        refused = await call(http, served, "admin", "POST", "/members", {"member_id": "AD1", "kind": "covered"}, status=409)
        assert refused["field"] == "member_id" and refused["error"].startswith("AD1 was not admitted: the registry"), refused
        assert "government_allocation" in refused["error"]
        assert served.hub.service.last_seq == seq  # nothing journalled
        assert await call(http, served, "admin", "GET", "/members") == []
        [entry] = served.server.app[AUDIT].page(0, 10).entries
        assert (entry.status, entry.error) == (409, refused["error"])
    finally:
        await stop_served(served)
        registry.close()


async def test_an_unreachable_registry_refuses_and_a_retry_admits(tmp_path, http) -> None:
    registry = FlakyRegistry()
    registry.down = True
    served = await start_served(tmp_path / "data", registry=registry)
    try:
        refused = await call(http, served, "admin", "POST", "/members", {"member_id": "AD1", "kind": "voluntary"}, status=409)
        assert "did not answer" in refused["error"]
        assert await call(http, served, "admin", "GET", "/members") == []
        registry.down = False
        await call(http, served, "admin", "POST", "/members", {"member_id": "AD1", "kind": "voluntary"})
        assert registry.holdings("AD1") == {}
        again = await call(http, served, "admin", "POST", "/members", {"member_id": "AD1", "kind": "voluntary"}, status=409)
        assert again["code"] == 217
    finally:
        await stop_served(served)


async def test_a_member_admitted_mid_day_settles_and_the_next_day_starts(served, http) -> None:
    seller = await served.add_member("S1")
    await served.open_day()
    await call(http, served, "admin", "POST", "/members", {"member_id": "B1", "kind": "voluntary"})
    await call(http, served, "clearing", "POST", "/clearing/deposits", {"member_id": "B1", "amount_fen": 10**9, "reference": "B1-1"})
    issued = await call(http, served, "admin", "POST", "/members/B1/credentials", status=201)
    buyer = await logged_on(http, served, (issued["key_id"], bytes.fromhex(issued["secret"])))
    s = await logged_on(http, served, seller)
    await s.send(order("s1", "sell", 25, "58.20"))
    await s.expect("execution_report")
    await buyer.send(order("b1", "buy", 25, "58.20"))
    assert (await buyer.expect("execution_report"))["exec_type"] == "new"
    await buyer.expect("execution_report")  # the fill
    await call(http, served, "admin", "POST", "/market/phase", {"phase": "post_close"})
    await call(http, served, "clearing", "POST", "/clearing/end-of-day")
    report = await call(http, served, "clearing", "POST", "/clearing/settlements", {"trading_day": DAY})
    assert (report["trades"], report["differences"]) == (1, [])
    assert served.registry.holdings("B1") == {SYMBOL: 25}
    await call(http, served, "clearing", "POST", "/clearing/start-of-day", {"trading_day": NEXT_DAY})
    [b1] = [m for m in await call(http, served, "admin", "GET", "/members") if m["member_id"] == "B1"]
    assert [(h["instrument"], h["available_t"]) for h in b1["holdings"] if h["instrument"] == SYMBOL] == [(SYMBOL, 25)]
    assert served.registry.holdings("S1")[SYMBOL] == HOLDING_T - 25
