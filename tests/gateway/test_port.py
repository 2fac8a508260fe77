"""The composition root's adapter implements the gateway's service port, method for method,
and answers in the port's own structs (never an object of the core or of a store)."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import msgspec

from exchange.app import Exchange
from exchange.gateway.port import ExchangePort, MemberAccount, StateSummary
from exchange.model import Deposit, MemberKind, RegisterMember
from exchange.model.stream import Applied
from exchange.service import ExchangeService
from registry_adapter.memory import InMemoryRegistry
from tests.gateway.conftest import DAY, fast_config


def port_members() -> dict[str, object]:
    return {name: member for name, member in vars(ExchangePort).items() if not name.startswith("_")}


def test_the_service_has_every_method_of_the_port_with_its_signature() -> None:
    members = port_members()
    assert {"execute", "commit", "start_day", "end_day", "settle", "member_accounts", "state_summary",
            "day_trades", "day_positions", "statements_dir", "registry_refusal", "last_seq", "trading_day"} <= set(members)
    for name, member in members.items():
        implemented = getattr(ExchangeService, name, None)
        assert implemented is not None, f"ExchangeService lacks {name}"
        if isinstance(member, property):
            assert isinstance(implemented, property), name
        elif callable(member):
            assert list(inspect.signature(implemented).parameters) == list(inspect.signature(member).parameters), name


def test_the_service_answers_in_the_ports_structs(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    exchange = Exchange.open(fast_config(), tmp_path / "data", time.time_ns, registry=registry)
    try:
        service = ExchangeService(exchange)
        applied = service.execute(RegisterMember("P1", MemberKind.VOLUNTARY))
        assert isinstance(applied, Applied) and applied.seq == service.last_seq == 1
        assert [r.seq for r in service.commit()] == [1]
        service.execute(Deposit("P1", 500))
        refusal = service.registry_refusal()
        assert refusal is not None and refusal.member_id == "P1"
        registry.open_account("P1")
        assert service.registry_refusal() is None
        records = service.start_day(DAY)
        assert records[0].trading_day == DAY == service.trading_day
        [account] = service.member_accounts()
        assert type(account) is MemberAccount and account.cash_available_fen == 500
        msgspec.json.encode(account)  # plain data, all the way down
        summary = service.state_summary()
        assert type(summary) is StateSummary and summary.state_hash == exchange.core.state_hash()
        assert service.day_trades(DAY) == [] and service.day_positions(DAY) == []
        assert service.end_day().trading_day == DAY
        assert service.statements_dir(DAY) == tmp_path / "data" / "statements" / DAY
    finally:
        exchange.close()
