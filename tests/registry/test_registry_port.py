"""The registry port's contract, run against the in-memory fake and the SQL registry (SQLite,
and PostgreSQL when EXCHANGE_TEST_PG_URL is set): holdings, all-or-nothing batches, idempotent
ids, frozen and unknown accounts. A differential test drives both with random batches."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry_adapter.memory import InMemoryRegistry
from registry_adapter.port import (
    AccountFrozen, IdConflict, InsufficientHolding, Registry, RegistryError, Transfer, UnknownAccount,
)
from registry_adapter.sql import SqlRegistry

UNITS = ("CEA-2025", "CCER")


class MemoryKit:
    """Sets up the fake: accounts and holdings straight in."""

    def __init__(self) -> None:
        self.registry = InMemoryRegistry()

    def open(self, account_id: str) -> None:
        self.registry.open_account(account_id)

    def give(self, account_id: str, unit: str, qty_t: int) -> None:
        self.registry.issue(account_id, unit, qty_t)

    def close(self) -> None:
        pass


class SqlKit:
    """Sets up the SQL registry the authority's way: a cap, issuance, allocation."""

    def __init__(self, url: str) -> None:
        ticks = itertools.count(1_700_000_000_000_000_000, 1_000_000)
        self.registry = SqlRegistry(url, clock=lambda: next(ticks))
        self.registry.create_schema()
        self.registry.open_account("GOV", "government_allocation", actor="authority", reason="setup")
        self.registry.set_annual_cap(2025, 10**12, actor="authority", reason="setup")

    def open(self, account_id: str) -> None:
        self.registry.open_account(account_id, "member_holding", actor="authority", reason="setup")

    def give(self, account_id: str, unit: str, qty_t: int) -> None:
        if unit == "CCER":
            self.registry.register_ccer_project("P-WIND", "renewable_energy", False, actor="authority", reason="setup")
            self.registry.issue_ccer("P-WIND", account_id, qty_t, actor="authority", reason="setup")
        else:
            self.registry.issue(unit, qty_t, actor="authority", reason="setup")
            self.registry.allocate(account_id, unit, qty_t, actor="authority", reason="setup")

    def close(self) -> None:
        assert self.registry.verify() == []
        self.registry.close()


def held(registry: Registry, account_id: str) -> dict[str, int]:
    """Holdings without units held at zero (the fake keeps them, the SQL registry doesn't)."""
    return {unit: qty for unit, qty in registry.holdings(account_id).items() if qty}


def snapshot(registry: Registry, accounts: tuple[str, ...] = ("A", "B", "C")) -> dict[str, dict[str, int]]:
    return {account: held(registry, account) for account in accounts}


def move(transfer_id: str, source: str, target: str, qty_t: int, unit: str = "CEA-2025", memo: str = "") -> Transfer:
    return Transfer(transfer_id, source, target, unit, qty_t, memo)


class RegistryContract:
    """What the exchange may rely on from any registry behind the port."""

    @pytest.fixture
    def kit(self) -> Iterator[MemoryKit | SqlKit]:
        raise NotImplementedError

    @pytest.fixture
    def registry(self, kit: MemoryKit | SqlKit) -> Registry:
        for account in ("A", "B", "C"):
            kit.open(account)
        kit.give("A", "CEA-2025", 1_000)
        kit.give("A", "CCER", 50)
        kit.give("B", "CEA-2025", 200)
        return kit.registry

    def test_holdings_show_what_was_given(self, registry: Registry) -> None:
        assert snapshot(registry) == {"A": {"CEA-2025": 1_000, "CCER": 50}, "B": {"CEA-2025": 200}, "C": {}}

    def test_holdings_of_an_unknown_account_are_refused(self, registry: Registry) -> None:
        with pytest.raises(UnknownAccount) as refused:
            registry.holdings("NOBODY")
        assert refused.value.account_id == "NOBODY"

    def test_a_batch_moves_units(self, registry: Registry) -> None:
        registry.apply_transfers([move("t1", "A", "B", 300), move("t2", "A", "C", 20, "CCER")], "settlement", "day 1")
        assert snapshot(registry) == {"A": {"CEA-2025": 700, "CCER": 30}, "B": {"CEA-2025": 500}, "C": {"CCER": 20}}

    def test_an_empty_batch_changes_nothing(self, registry: Registry) -> None:
        before = snapshot(registry)
        registry.apply_transfers([], "settlement", "nothing to settle")
        assert snapshot(registry) == before

    def test_units_received_earlier_in_a_batch_can_be_passed_on(self, registry: Registry) -> None:
        registry.apply_transfers([move("t1", "A", "C", 100), move("t2", "C", "B", 100)], "settlement", "day 1")
        assert snapshot(registry) == {"A": {"CEA-2025": 900, "CCER": 50}, "B": {"CEA-2025": 300}, "C": {}}

    def test_units_received_later_in_a_batch_cannot_be_spent_before(self, registry: Registry) -> None:
        before = snapshot(registry)
        with pytest.raises(InsufficientHolding):
            registry.apply_transfers([move("t1", "C", "B", 100), move("t2", "A", "C", 100)], "settlement", "day 1")
        assert snapshot(registry) == before

    @pytest.mark.parametrize("bad", [
        move("bad", "B", "C", 501),  # B holds 200 + the 300 it receives first
        move("bad", "B", "NOBODY", 1),
        move("bad", "NOBODY", "B", 1),
        move("bad", "C", "A", 1, "CCER"),
    ], ids=["overdraw", "unknown-target", "unknown-source", "unit-not-held"])
    def test_a_refusal_in_the_middle_leaves_everything_unchanged(self, registry: Registry, bad: Transfer) -> None:
        before = snapshot(registry)
        batch = [move("t1", "A", "B", 300), bad, move("t3", "A", "C", 5, "CCER")]
        with pytest.raises(RegistryError):
            registry.apply_transfers(batch, "settlement", "day 1")
        assert snapshot(registry) == before
        # the refused batch burnt no id: without the bad transfer it applies in full
        registry.apply_transfers([batch[0], batch[2]], "settlement", "day 1, again")
        assert snapshot(registry) == {"A": {"CEA-2025": 700, "CCER": 45}, "B": {"CEA-2025": 500}, "C": {"CCER": 5}}

    def test_the_refusal_names_the_first_failing_transfer(self, registry: Registry) -> None:
        batch = [move("t1", "A", "B", 300), move("t2", "B", "C", 600), move("t3", "B", "NOBODY", 1)]
        with pytest.raises(InsufficientHolding) as refused:
            registry.apply_transfers(batch, "settlement", "day 1")
        assert (refused.value.account_id, refused.value.unit, refused.value.held_t, refused.value.wanted_t) == (
            "B", "CEA-2025", 500, 600,
        )

    def test_a_repeated_batch_applies_once(self, registry: Registry) -> None:
        batch = [move("t1", "A", "B", 300), move("t2", "B", "C", 50)]
        registry.apply_transfers(batch, "settlement", "day 1")
        after = snapshot(registry)
        registry.apply_transfers(batch, "settlement", "retry after a timeout")
        registry.apply_transfers(list(reversed(batch)), "settlement", "restarted, reordered")
        assert snapshot(registry) == after == {"A": {"CEA-2025": 700, "CCER": 50}, "B": {"CEA-2025": 450}, "C": {"CEA-2025": 50}}

    def test_an_id_repeated_within_a_batch_applies_once(self, registry: Registry) -> None:
        registry.apply_transfers([move("t1", "A", "B", 300), move("t1", "A", "B", 300)], "settlement", "day 1")
        assert held(registry, "B") == {"CEA-2025": 500}

    def test_a_batch_mixing_applied_and_new_transfers_applies_only_the_new(self, registry: Registry) -> None:
        registry.apply_transfers([move("t1", "A", "B", 300)], "settlement", "day 1, part 1")
        registry.apply_transfers([move("t2", "A", "C", 10), move("t1", "A", "B", 300)], "settlement", "day 1, all")
        assert snapshot(registry) == {"A": {"CEA-2025": 690, "CCER": 50}, "B": {"CEA-2025": 500}, "C": {"CEA-2025": 10}}

    @pytest.mark.parametrize("changed", [
        move("t1", "A", "B", 301), move("t1", "A", "C", 300), move("t1", "A", "B", 300, "CCER"),
        move("t1", "B", "A", 300), move("t1", "A", "B", 300, memo="other"),
    ], ids=["qty", "target", "unit", "direction", "memo"])
    def test_a_known_id_with_another_body_is_refused_with_its_batch(self, registry: Registry, changed: Transfer) -> None:
        registry.apply_transfers([move("t1", "A", "B", 300)], "settlement", "day 1")
        before = snapshot(registry)
        with pytest.raises(IdConflict) as refused:
            registry.apply_transfers([move("t2", "A", "C", 10), changed], "settlement", "day 2")
        assert refused.value.transfer_id == "t1"
        assert snapshot(registry) == before

    def test_one_id_with_two_bodies_in_a_batch_is_refused(self, registry: Registry) -> None:
        before = snapshot(registry)
        with pytest.raises(IdConflict):
            registry.apply_transfers([move("t1", "A", "B", 300), move("t1", "A", "B", 30)], "settlement", "day 1")
        assert snapshot(registry) == before

    def test_nothing_moves_out_of_or_into_a_frozen_account(self, registry: Registry) -> None:
        registry.freeze("B", "regulator", "investigation")
        before = snapshot(registry)
        for batch in ([move("t1", "B", "C", 1)], [move("t2", "A", "B", 1)], [move("t3", "A", "C", 1), move("t4", "C", "B", 1)]):
            with pytest.raises(AccountFrozen) as refused:
                registry.apply_transfers(batch, "settlement", "day 1")
            assert refused.value.account_id == "B"
        assert snapshot(registry) == before
        registry.unfreeze("B", "regulator", "cleared")
        registry.apply_transfers([move("t1", "B", "C", 1)], "settlement", "day 1")
        assert held(registry, "C") == {"CEA-2025": 1}

    def test_freezing_twice_and_unfreezing_an_open_account_are_harmless(self, registry: Registry) -> None:
        registry.freeze("A", "regulator", "first")
        registry.freeze("A", "regulator", "second")
        registry.unfreeze("A", "regulator", "cleared")
        registry.unfreeze("A", "regulator", "cleared again")
        registry.apply_transfers([move("t1", "A", "B", 1)], "settlement", "day 1")

    @pytest.mark.parametrize("operation", ["freeze", "unfreeze"])
    def test_freezing_an_unknown_account_is_refused(self, registry: Registry, operation: str) -> None:
        with pytest.raises(UnknownAccount):
            getattr(registry, operation)("NOBODY", "regulator", "typo")


class TestInMemoryRegistry(RegistryContract):
    @pytest.fixture
    def kit(self) -> Iterator[MemoryKit]:
        yield MemoryKit()


class TestSqlRegistry(RegistryContract):
    @pytest.fixture
    def kit(self, db_url: str) -> Iterator[SqlKit]:
        kit = SqlKit(db_url)
        yield kit
        kit.close()


# ---------------------------------------------------------------------------------------------
# Differential: the SQL registry and the fake agree on random batches, refusals included.

ACCOUNTS = ("A", "B", "C", "D")
transfers = st.builds(
    Transfer,
    transfer_id=st.sampled_from([f"t{i}" for i in range(12)]),
    from_account=st.sampled_from(ACCOUNTS + ("X",)),
    to_account=st.sampled_from(ACCOUNTS),
    unit=st.sampled_from(UNITS),
    qty_t=st.integers(1, 400),
)
batches = st.lists(transfers, max_size=6)
day_plans = st.lists(st.tuples(batches, st.sampled_from(ACCOUNTS + ("",))), min_size=1, max_size=5)


def outcome(registry: Registry, batch: list[Transfer], frozen: str) -> str:
    if frozen:
        registry.freeze(frozen, "regulator", "random freeze")
    try:
        registry.apply_transfers(batch, "settlement", "random batch")
        result = "applied"
    except RegistryError as error:
        result = type(error).__name__ + str(vars(error))
    if frozen:
        registry.unfreeze(frozen, "regulator", "random unfreeze")
    return result


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=day_plans)
def test_the_sql_registry_agrees_with_the_fake(plan: list[tuple[list[Transfer], str]]) -> None:
    fake, sql = MemoryKit(), SqlKit("sqlite://")
    for kit in (fake, sql):
        for account in ACCOUNTS:
            kit.open(account)
        kit.give("A", "CEA-2025", 500)
        kit.give("B", "CCER", 300)
    for batch, frozen in plan:
        assert outcome(sql.registry, batch, frozen) == outcome(fake.registry, batch, frozen)
        assert snapshot(sql.registry, ACCOUNTS) == snapshot(fake.registry, ACCOUNTS)
    sql.close()
