"""Start of day: registry holdings become LoadHolding commands, and the day opens on them."""

from __future__ import annotations

import pytest

from exchange.clearing.start_of_day import load_holdings_commands
from exchange.config import Config
from exchange.engine import Engine, ExchangeCore, MemoryJournal
from exchange.model import Deposit, HoldingLoaded, LoadHolding, MemberKind, RegisterMember, StartDay
from registry_adapter.memory import InMemoryRegistry
from registry_adapter.port import UnknownAccount


def registry() -> InMemoryRegistry:
    fake = InMemoryRegistry()
    for member in ("M1", "M2"):
        fake.open_account(member)
    fake.issue("M1", "CEA-2025", 1_000)
    fake.issue("M1", "CEA-2025", 500)
    fake.issue("M2", "CCER", 70)
    return fake


def test_one_command_per_member_and_listed_instrument_zero_when_absent() -> None:
    commands = load_holdings_commands(registry(), ["M1", "M2"], ["CEA-2025", "CCER"])
    assert commands == [
        LoadHolding("M1", "CCER", 0), LoadHolding("M1", "CEA-2025", 1_500),
        LoadHolding("M2", "CCER", 70), LoadHolding("M2", "CEA-2025", 0),
    ]


def test_an_unknown_registry_account_is_an_error_not_a_zero() -> None:
    with pytest.raises(UnknownAccount, match="M3"):
        load_holdings_commands(registry(), ["M3"], ["CCER"])


def test_the_day_opens_on_the_registry_holdings() -> None:
    config = Config()
    engine = Engine(ExchangeCore(config.listed_instruments()), MemoryJournal(), clock=lambda: 1)
    for member in ("M1", "M2"):
        engine.execute(RegisterMember(member, MemberKind.VOLUNTARY))
        engine.execute(Deposit(member, 100))
    engine.execute(StartDay("2026-11-23"))
    symbols = sorted(engine.core.books)
    loaded = [e for c in load_holdings_commands(registry(), ["M1", "M2"], symbols) for e in engine.execute(c).events]
    assert all(isinstance(e, HoldingLoaded) for e in loaded)
    accounts = engine.core.risk.accounts
    assert accounts["M1"].holdings["CEA-2025"].available_t == 1_500
    assert accounts["M2"].holdings["CCER"].available_t == 70
    assert accounts["M1"].position_t == 1_500
