"""The registry's own rules (the city's measures), on SQLite and PostgreSQL: offsets, excluded
CCER projects, surrender and shortfall, frozen accounts, the reserve's limit, compliance-only
units, banking, cancellation, corrections, history. ``verify()`` runs after every operation,
refused or not; a stateful Hypothesis test drives random operations and checks that totals
change only by issuance and retirement."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypedDict, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from registry_adapter.port import (
    AccountFrozen, IdConflict, InsufficientHolding, NotTradable, RegistryError, Transfer, UnknownAccount,
)
from registry_adapter.sql import (
    AccountExists, CapExceeded, CapNotSet, CapTooLow, EmissionsCorrectionRefused, ExceedsObligation,
    ExcludedProject, InvalidInput, InvalidQuantity, NoObligation, NotAnAllocation, OffsetCapExceeded,
    ReductionKind, ReserveCapExceeded, ShortfallOutstanding, SqlRegistry, UnitTotals, UnknownProject, UnknownUnit,
    WrongAccountType, holdings,
)


class Attribution(TypedDict):
    """Who does a registry operation and why (its keyword arguments ``actor`` and ``reason``)."""

    actor: str
    reason: str


T0_NS = 1_790_000_000_000_000_000
AUTHORITY: Attribution = {"actor": "authority:li", "reason": "measures, article 12"}
MEMBER: Attribution = {"actor": "member:M1", "reason": "compliance 2025"}
Refusal = TypeVar("Refusal", bound=RegistryError)
CAP_T = 1_000_000
RESERVE_LIMIT_T = CAP_T * 5 // 100
READS = {"holdings", "holdings_detail", "history", "entries_between", "compliance", "compliance_report",
         "totals", "verify", "annual_cap", "account_type", "is_frozen", "close", "engine", "create_schema"}


def ticking_clock(step_ns: int = 1_000_000_000) -> Callable[[], int]:
    ticks = itertools.count(T0_NS, step_ns)
    return lambda: next(ticks)


class Checked:
    """The registry, with verify() after every operation, whether it succeeded or was refused."""

    def __init__(self, registry: SqlRegistry) -> None:
        self.registry = registry

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.registry, name)
        if name in READS or not callable(attribute):
            return attribute

        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            finally:
                assert self.registry.verify() == [], f"after {name}{args}"

        return checked


def state(registry: SqlRegistry | Checked) -> tuple:
    """Everything an operation could change: holdings, totals, compliance, the journal's length."""
    accounts = ("GOV", "RES", "CAN", "M1", "M2", "M3", "EX", "AUC")
    return (
        {account: registry.holdings_detail(account) for account in accounts},
        registry.totals(),
        registry.compliance_report(2025),
        len(registry.entries_between()),
    )


def open_market(registry: SqlRegistry) -> None:
    for account_id, kind in (
        ("GOV", "government_allocation"), ("RES", "adjustment_reserve"), ("CAN", "cancellation"),
        ("M1", "member_holding"), ("M2", "member_holding"), ("M3", "member_holding"),
        ("EX", "exchange_settlement"), ("AUC", "auction"),
    ):
        registry.open_account(account_id, kind, **AUTHORITY)
    for year in (2025, 2026):
        registry.set_annual_cap(year, CAP_T, **AUTHORITY)
    registry.issue("CEA-2025", 900_000, **AUTHORITY)
    registry.allocate("M1", "CEA-2025", 10_000, **AUTHORITY)
    registry.allocate("M2", "CEA-2025", 5_000, **AUTHORITY)
    registry.register_ccer_project("P-WIND", "renewable_energy", False, **AUTHORITY)
    registry.issue_ccer("P-WIND", "M1", 2_000, **AUTHORITY)


@pytest.fixture
def registry(db_url: str) -> Iterator[Checked]:
    sql = SqlRegistry(db_url, clock=ticking_clock())
    sql.create_schema()
    open_market(sql)
    yield Checked(sql)
    sql.close()


def tradable(registry: Checked, account_id: str, unit: str) -> int:
    return registry.holdings(account_id).get(unit, 0)


def refused(registry: Checked, error: type[Refusal], operation: Callable[[], Any]) -> Refusal:
    """The operation is refused with that error and leaves nothing behind."""
    before = state(registry)
    with pytest.raises(error) as caught:
        operation()
    assert state(registry) == before
    return caught.value


# ---------------------------------------------------------------------------------------------
# Offsets and surrender


def test_offset_is_capped_at_a_tenth_of_the_verified_emissions(registry: Checked) -> None:
    registry.set_verified_emissions("M1", 2025, 10_000, **AUTHORITY)
    registry.offset("M1", 2025, 600, **MEMBER)
    registry.offset("M1", 2025, 400, **MEMBER)
    error = refused(registry, OffsetCapExceeded, lambda: registry.offset("M1", 2025, 1, **MEMBER))
    assert (error.limit_t, error.used_t, error.wanted_t) == (1_000, 1_000, 1)
    registry.surrender("M1", 2025, 9_000, **MEMBER)  # 1 tCO2e of CCER stands for 1 tCO2
    status = registry.compliance("M1", 2025)
    assert (status.surrendered_t, status.offset_t, status.offset_limit_t, status.shortfall_t) == (9_000, 1_000, 1_000, 0)
    assert tradable(registry, "M1", "CCER") == 1_000


def test_an_offset_above_the_limit_in_one_go_is_refused(registry: Checked) -> None:
    registry.set_verified_emissions("M1", 2025, 10_000, **AUTHORITY)
    refused(registry, OffsetCapExceeded, lambda: registry.offset("M1", 2025, 1_001, **MEMBER))


@pytest.mark.parametrize("kind", list(ReductionKind))
@pytest.mark.parametrize("at_covered_facility", [True, False])
def test_ccer_from_local_reductions_the_measures_exclude_are_refused(
    registry: Checked, kind: ReductionKind, at_covered_facility: bool,
) -> None:
    excluded = at_covered_facility and kind in {"fossil_combustion", "industrial_process", "electricity_use"}
    assert registry.register_ccer_project("P-1", kind.value, at_covered_facility, **AUTHORITY) is excluded
    if excluded:
        error = refused(registry, ExcludedProject, lambda: registry.issue_ccer("P-1", "M2", 100, **AUTHORITY))
        assert error.project_id == "P-1"
    else:
        registry.issue_ccer("P-1", "M2", 100, **AUTHORITY)
        registry.set_verified_emissions("M2", 2025, 1_000, **AUTHORITY)
        registry.offset("M2", 2025, 100, **MEMBER)


def test_ccer_need_a_registered_project(registry: Checked) -> None:
    refused(registry, UnknownProject, lambda: registry.issue_ccer("P-NONE", "M1", 1, **AUTHORITY))


def test_surrender_leaves_the_shortfall_reported(registry: Checked) -> None:
    registry.set_verified_emissions("M1", 2025, 12_000, **AUTHORITY)
    registry.set_verified_emissions("M2", 2025, 1_000, **AUTHORITY)
    registry.surrender("M1", 2025, 10_000, **MEMBER)
    report = {status.account_id: status.shortfall_t for status in registry.compliance_report(2025)}
    assert report == {"M1": 2_000, "M2": 1_000}
    error = refused(registry, InsufficientHolding, lambda: registry.surrender("M1", 2025, 1, **MEMBER))
    assert (error.held_t, error.wanted_t) == (0, 1)


def test_surrender_takes_allowances_of_the_year_only(registry: Checked) -> None:
    registry.issue("CEA-2026", 1_000, **AUTHORITY)
    registry.allocate("M3", "CEA-2026", 1_000, **AUTHORITY)
    registry.set_verified_emissions("M3", 2025, 500, **AUTHORITY)
    error = refused(registry, InsufficientHolding, lambda: registry.surrender("M3", 2025, 500, **MEMBER))
    assert error.unit == "CEA-2025"


def test_surrender_needs_an_obligation_and_stops_at_it(registry: Checked) -> None:
    refused(registry, NoObligation, lambda: registry.surrender("M1", 2025, 1, **MEMBER))
    registry.set_verified_emissions("M1", 2025, 3_000, **AUTHORITY)
    registry.surrender("M1", 2025, 2_500, **MEMBER)
    error = refused(registry, ExceedsObligation, lambda: registry.surrender("M1", 2025, 501, **MEMBER))
    assert (error.remaining_t, error.wanted_t) == (500, 501)
    refused(registry, WrongAccountType, lambda: registry.set_verified_emissions("EX", 2025, 1, **AUTHORITY))


def test_verified_emissions_can_be_corrected_but_not_below_what_is_used(registry: Checked) -> None:
    registry.set_verified_emissions("M1", 2025, 10_000, **AUTHORITY)
    registry.surrender("M1", 2025, 4_000, **MEMBER)
    registry.offset("M1", 2025, 1_000, **MEMBER)
    registry.set_verified_emissions("M1", 2025, 11_000, **AUTHORITY)
    assert registry.compliance("M1", 2025).shortfall_t == 6_000
    refused(registry, EmissionsCorrectionRefused, lambda: registry.set_verified_emissions("M1", 2025, 4_999, **AUTHORITY))
    refused(registry, EmissionsCorrectionRefused, lambda: registry.set_verified_emissions("M1", 2025, 9_999, **AUTHORITY))


# ---------------------------------------------------------------------------------------------
# Frozen accounts


def test_a_frozen_account_takes_part_in_no_movement(registry: Checked) -> None:
    seq = registry.allocate("M1", "CEA-2025", 100, **AUTHORITY)
    registry.set_verified_emissions("M1", 2025, 1_000, **AUTHORITY)
    registry.freeze("M1", "regulator:wang", "suspected manipulation")
    for operation in (
        lambda: registry.allocate("M1", "CEA-2025", 1, **AUTHORITY),
        lambda: registry.correct_allocation(seq, 50, **AUTHORITY),
        lambda: registry.issue_ccer("P-WIND", "M1", 1, **AUTHORITY),
        lambda: registry.surrender("M1", 2025, 1, **MEMBER),
        lambda: registry.offset("M1", 2025, 1, **MEMBER),
        lambda: registry.bank("M1", 2025, 1, **MEMBER),
        lambda: registry.cancel("M1", "CEA-2025", 1, **MEMBER),
        lambda: registry.apply_transfers([Transfer("t1", "M1", "M2", "CEA-2025", 1)], "settlement", "day 1"),
        lambda: registry.apply_transfers([Transfer("t2", "M2", "M1", "CEA-2025", 1)], "settlement", "day 1"),
    ):
        assert refused(registry, AccountFrozen, operation).account_id == "M1"
    assert registry.is_frozen("M1")
    registry.set_verified_emissions("M1", 2025, 1_200, **AUTHORITY)  # the authority's record still changes
    registry.unfreeze("M1", "regulator:wang", "cleared")
    registry.surrender("M1", 2025, 1_200, **MEMBER)
    assert [entry.operation for entry in registry.history("M1")][-4:] == ["freeze", "set_emissions", "unfreeze", "surrender"]


def test_a_frozen_government_account_stops_issuance(registry: Checked) -> None:
    registry.freeze("GOV", "regulator:wang", "audit")
    refused(registry, AccountFrozen, lambda: registry.issue("CEA-2025", 1, **AUTHORITY))


# ---------------------------------------------------------------------------------------------
# The cap and the adjustment reserve


def test_issuance_stays_within_the_annual_cap(registry: Checked) -> None:
    error = refused(registry, CapExceeded, lambda: registry.issue("CEA-2025", 100_001, **AUTHORITY))
    assert (error.cap_t, error.issued_t, error.wanted_t) == (CAP_T, 900_000, 100_001)
    registry.issue("CEA-2025", 100_000, **AUTHORITY)
    assert registry.annual_cap(2025) == (CAP_T, CAP_T)
    refused(registry, CapNotSet, lambda: registry.issue("CEA-2030", 1, **AUTHORITY))
    refused(registry, CapTooLow, lambda: registry.set_annual_cap(2025, CAP_T - 1, **AUTHORITY))
    refused(registry, UnknownUnit, lambda: registry.issue("CCER", 1, **AUTHORITY))
    refused(registry, InvalidQuantity, lambda: registry.issue("CEA-2025", 0, **AUTHORITY))


def test_the_reserve_never_exceeds_five_percent_of_the_cap(registry: Checked) -> None:
    registry.allocate("RES", "CEA-2025", RESERVE_LIMIT_T, **AUTHORITY)
    error = refused(registry, ReserveCapExceeded, lambda: registry.allocate("RES", "CEA-2025", 1, **AUTHORITY))
    assert (error.limit_t, error.would_hold_t) == (RESERVE_LIMIT_T, RESERVE_LIMIT_T + 1)
    buy_back = [Transfer("bb1", "M1", "RES", "CEA-2025", 1)]
    refused(registry, ReserveCapExceeded, lambda: registry.apply_transfers(buy_back, "settlement", "buy-back"))
    refused(registry, CapTooLow, lambda: registry.set_annual_cap(2025, CAP_T - 20, **AUTHORITY))
    # an auction takes units out; then a buy-back fits again
    registry.apply_transfers([Transfer("au1", "RES", "AUC", "CEA-2025", 10_000)], "settlement", "auction lot")
    registry.apply_transfers([Transfer("au2", "AUC", "M3", "CEA-2025", 10_000)], "settlement", "auction delivery")
    registry.apply_transfers(buy_back, "settlement", "buy-back")
    assert tradable(registry, "RES", "CEA-2025") == RESERVE_LIMIT_T - 10_000 + 1


def test_the_reserve_never_goes_negative_and_holds_no_ccer(registry: Checked) -> None:
    registry.allocate("RES", "CEA-2025", 1_000, **AUTHORITY)
    registry.allocate("M3", "CEA-2025", 600, **AUTHORITY, from_reserve=True)  # an allocation adjustment
    sale = [Transfer("au1", "RES", "AUC", "CEA-2025", 401)]
    error = refused(registry, InsufficientHolding, lambda: registry.apply_transfers(sale, "settlement", "auction lot"))
    assert (error.account_id, error.held_t) == ("RES", 400)
    refused(registry, InsufficientHolding, lambda: registry.allocate("M3", "CEA-2025", 401, **AUTHORITY, from_reserve=True))
    ccer = [Transfer("c1", "M1", "RES", "CCER", 1)]
    assert refused(registry, ReserveCapExceeded, lambda: registry.apply_transfers(ccer, "settlement", "x")).limit_t == 0


# ---------------------------------------------------------------------------------------------
# Compliance-only units


def test_compliance_only_units_can_be_surrendered_but_not_traded(registry: Checked) -> None:
    registry.allocate("M2", "CEA-2025", 300, **AUTHORITY, compliance_only=True)
    assert registry.holdings("M2") == {"CEA-2025": 5_000}
    assert [(h.unit, h.compliance_only, h.qty_t) for h in registry.holdings_detail("M2")] == [
        ("CEA-2025", False, 5_000), ("CEA-2025", True, 300),
    ]
    sale = [Transfer("t1", "M2", "M3", "CEA-2025", 5_001)]
    assert refused(registry, NotTradable, lambda: registry.apply_transfers(sale, "settlement", "day 1")).unit == "CEA-2025"
    registry.set_verified_emissions("M2", 2025, 1_000, **AUTHORITY)
    registry.surrender("M2", 2025, 400, **MEMBER)  # the compliance-only units go first
    assert [(h.compliance_only, h.qty_t) for h in registry.holdings_detail("M2")] == [(False, 4_900)]
    assert [(e.compliance_only, e.qty_t) for e in registry.history("M2")[-2:]] == [(True, 300), (False, 100)]


def test_compliance_only_units_go_only_from_the_authority_to_members(registry: Checked) -> None:
    refused(registry, WrongAccountType, lambda: registry.allocate("RES", "CEA-2025", 1, **AUTHORITY, compliance_only=True))
    refused(registry, WrongAccountType, lambda: registry.cancel("GOV", "CEA-2025", 1, **AUTHORITY, compliance_only=True))
    seq = registry.allocate("M3", "CEA-2025", 50, **AUTHORITY, compliance_only=True)
    registry.bank("M3", 2025, 20, **MEMBER, compliance_only=True)
    registry.cancel("M3", "CEA-2025", 10, **MEMBER, compliance_only=True)
    registry.correct_allocation(seq, 40, **AUTHORITY)  # takes 10 compliance-only units back to plain
    assert [(h.unit, h.compliance_only, h.qty_t) for h in registry.holdings_detail("M3")] == [
        ("CEA-2025", True, 10), ("CEA-2026", True, 20),
    ]
    assert registry.holdings("M3") == {}


# ---------------------------------------------------------------------------------------------
# Banking, cancellation, corrections


def test_banking_turns_vintage_n_into_n_plus_one(registry: Checked) -> None:
    before = registry.totals()
    registry.bank("M1", 2025, 1_000, **MEMBER)
    assert registry.holdings("M1") == {"CEA-2025": 9_000, "CEA-2026": 1_000, "CCER": 2_000}
    after = registry.totals()
    assert after["CEA-2025"] == UnitTotals(900_000, 1_000, before["CEA-2025"].outstanding_t - 1_000)
    assert after["CEA-2026"] == UnitTotals(1_000, 0, 1_000)
    assert registry.annual_cap(2026) == (CAP_T, 0)  # banked units are not issued against the cap
    refused(registry, WrongAccountType, lambda: registry.bank("EX", 2025, 1, **MEMBER))


def test_banking_waits_until_the_year_is_covered(registry: Checked) -> None:
    registry.set_verified_emissions("M1", 2025, 5_000, **AUTHORITY)
    error = refused(registry, ShortfallOutstanding, lambda: registry.bank("M1", 2025, 1, **MEMBER))
    assert error.shortfall_t == 5_000
    registry.surrender("M1", 2025, 5_000, **MEMBER)
    registry.bank("M1", 2025, 5_000, **MEMBER)
    assert registry.holdings("M1")["CEA-2026"] == 5_000


def test_cancellation_retires_units_for_good(registry: Checked) -> None:
    registry.cancel("M1", "CEA-2025", 100, actor="member:M1", reason="voluntary retirement")
    registry.cancel("M1", "CCER", 50, actor="member:M1", reason="carbon-neutral event")
    totals = registry.totals()
    assert (totals["CEA-2025"].retired_t, totals["CCER"].retired_t) == (100, 50)
    assert registry.holdings("CAN") == {"CEA-2025": 100, "CCER": 50}
    for batch in ([Transfer("t1", "CAN", "M1", "CEA-2025", 1)], [Transfer("t2", "M1", "CAN", "CEA-2025", 1)]):
        refused(registry, WrongAccountType, partial(registry.apply_transfers, batch, "settlement", "x"))
    refused(registry, WrongAccountType, lambda: registry.cancel("CAN", "CEA-2025", 1, **AUTHORITY))
    refused(registry, UnknownUnit, lambda: registry.cancel("M1", "CEA-25", 1, **MEMBER))


def test_an_allocation_is_corrected_by_a_new_entry(registry: Checked) -> None:
    seq = registry.allocate("M3", "CEA-2025", 1_000, **AUTHORITY)
    assert registry.correct_allocation(seq, 800, **AUTHORITY) is not None
    assert registry.correct_allocation(seq, 1_200, **AUTHORITY) is not None
    assert registry.correct_allocation(seq, 1_200, **AUTHORITY) is None
    assert tradable(registry, "M3", "CEA-2025") == 1_200
    changes = [(e.from_account, e.to_account, e.qty_t, e.corrects_seq) for e in registry.history("M3") if e.operation == "change"]
    assert changes == [("M3", "GOV", 200, seq), ("GOV", "M3", 400, seq)]
    assert registry.entries_between(seq, seq)[0].qty_t == 1_000  # the original entry is never edited
    registry.apply_transfers([Transfer("t1", "M3", "M2", "CEA-2025", 1_100)], "settlement", "sold")
    refused(registry, InsufficientHolding, lambda: registry.correct_allocation(seq, 0, **AUTHORITY))
    transfer_seq = registry.history("M3")[-1].seq
    refused(registry, NotAnAllocation, lambda: registry.correct_allocation(transfer_seq, 1, **AUTHORITY))


# ---------------------------------------------------------------------------------------------
# Accounts, history, concurrency, verification


def test_account_types_bound_what_an_account_can_do(registry: Checked) -> None:
    assert registry.open_account("M1", "member_holding", **AUTHORITY) is False
    refused(registry, AccountExists, lambda: registry.open_account("M1", "auction", **AUTHORITY))
    refused(registry, AccountExists, lambda: registry.open_account("GOV2", "government_allocation", **AUTHORITY))
    refused(registry, InvalidInput, lambda: registry.open_account("X", "bank", **AUTHORITY))
    refused(registry, InvalidInput, lambda: registry.open_account("", "member_holding", **AUTHORITY))
    grab = [Transfer("t1", "GOV", "M1", "CEA-2025", 1)]
    refused(registry, WrongAccountType, lambda: registry.apply_transfers(grab, "settlement", "x"))
    refused(registry, WrongAccountType, lambda: registry.allocate("EX", "CEA-2025", 1, **AUTHORITY))
    refused(registry, UnknownAccount, lambda: registry.allocate("NOBODY", "CEA-2025", 1, **AUTHORITY))
    assert registry.account_type("EX") == "exchange_settlement"


def test_history_is_in_order_with_who_when_and_why(registry: Checked) -> None:
    registry.apply_transfers([Transfer("d1:1:A", "M1", "EX", "CEA-2025", 70, "trade 1")], "clearing:settle", "day 2026-11-23")
    registry.freeze("M1", "regulator:wang", "large position unreported")
    history = registry.history("M1")
    assert [e.seq for e in history] == sorted(e.seq for e in history)
    assert [e.at_ns for e in history] == sorted(e.at_ns for e in history) and history[0].at_ns >= T0_NS
    assert [(e.operation, e.actor, e.reason) for e in history] == [
        ("open_account", "authority:li", "measures, article 12"),
        ("allocate", "authority:li", "measures, article 12"),
        ("issue_ccer", "authority:li", "measures, article 12"),
        ("transfer", "clearing:settle", "day 2026-11-23"),
        ("freeze", "regulator:wang", "large position unreported"),
    ]
    assert (history[3].idempotency_id, history[3].memo, history[2].project_id) == ("d1:1:A", "trade 1", "P-WIND")
    assert [e.seq for e in registry.history("M1", limit=2)] == [e.seq for e in history[-2:]]


def test_totals_change_only_by_issuance_and_retirement(registry: Checked) -> None:
    def totals() -> dict[str, tuple[int, int, int]]:
        return {unit: (t.created_t, t.retired_t, t.outstanding_t) for unit, t in registry.totals().items()}

    start = totals()
    registry.allocate("M3", "CEA-2025", 5_000, **AUTHORITY)
    registry.apply_transfers([Transfer("t1", "M3", "M2", "CEA-2025", 2_000)], "settlement", "day 1")
    registry.set_verified_emissions("M2", 2025, 3_000, **AUTHORITY)
    assert totals() == start
    registry.surrender("M2", 2025, 2_500, **MEMBER)
    registry.issue("CEA-2025", 7, **AUTHORITY)
    registry.cancel("M3", "CEA-2025", 3, **MEMBER)
    created, retired, outstanding = start["CEA-2025"]
    assert totals()["CEA-2025"] == (created + 7, retired + 2_503, outstanding + 7 - 2_503)


def hold_after_reading_holdings(registry: SqlRegistry, barrier: threading.Barrier) -> Callable[..., None]:
    """Make a transaction wait, once it has read holdings, until the other one has read them
    too: without locks both would read the same balance. With locks the other one can't
    read before this one commits, so the wait times out and this one carries on."""

    def after_execute(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM registry_holdings" in statement:
            try:
                barrier.wait(timeout=0.5)
            except threading.BrokenBarrierError:
                pass

    sa.event.listen(registry.engine, "after_cursor_execute", after_execute)
    return lambda: sa.event.remove(registry.engine, "after_cursor_execute", after_execute)


def run_together(*calls: Callable[[], Any]) -> list[str]:
    outcomes: list[str] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            call()
            outcomes.append("applied")
        except (RegistryError, sa.exc.SQLAlchemyError) as error:  # anything but a clean refusal fails the test below
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_concurrent_batches_cannot_overdraw(db_url: str) -> None:
    first = SqlRegistry(db_url)
    first.create_schema()
    open_market(first)
    first.allocate("M3", "CEA-2025", 100, **AUTHORITY)  # both batches then update rows, none inserts one
    second = SqlRegistry(db_url)
    barrier = threading.Barrier(2)
    unhooks = [hold_after_reading_holdings(registry, barrier) for registry in (first, second)]

    def settle(registry: SqlRegistry, batch_id: str) -> Callable[[], None]:
        batch = [Transfer(f"{batch_id}:{i}", "M1", "M3", "CEA-2025", 1_500) for i in range(4)]  # 6,000 of 10,000 t
        return lambda: registry.apply_transfers(batch, "settlement", batch_id)

    assert run_together(settle(first, "a"), settle(second, "b")) == ["InsufficientHolding", "applied"]
    assert first.holdings("M1")["CEA-2025"] == 4_000
    for unhook in unhooks:
        unhook()
    # the same batch from two settlement processes at once applies once
    same = [Transfer(f"c:{i}", "M2", "M3", "CEA-2025", 1_000) for i in range(3)]
    calls = [lambda registry=registry: registry.apply_transfers(same, "settlement", "twice") for registry in (first, second)]
    assert run_together(*calls) == ["applied", "applied"]
    assert first.holdings("M2")["CEA-2025"] == 2_000
    assert first.verify() == []
    first.close()
    second.close()


def test_verify_sees_a_holding_that_differs_from_the_journal(registry: Checked) -> None:
    with registry.engine.begin() as connection:
        connection.execute(holdings.update().where(holdings.c.account_id == "M2").values(qty_t=5_001))
    problems = registry.verify()
    assert any("M2" in problem and "journal 5000" in problem for problem in problems)
    assert any("CEA-2025" in problem and "created" in problem for problem in problems)


def test_a_repeated_transfer_id_is_refused_across_operations(registry: Checked) -> None:
    registry.apply_transfers([Transfer("x", "M1", "M2", "CEA-2025", 1)], "settlement", "day 1")
    refused(registry, IdConflict, lambda: registry.apply_transfers([Transfer("x", "M1", "M2", "CCER", 1)], "s", "day 2"))


# ---------------------------------------------------------------------------------------------
# Random operations: verify() stays clean, totals move only by issuance and retirement, and a
# refused operation leaves nothing behind.

MEMBERS = st.sampled_from(["M1", "M2", "M3"])
ANY_ACCOUNT = st.sampled_from(["M1", "M2", "M3", "EX", "AUC", "RES", "GOV", "CAN"])
TRADING_ACCOUNT = st.sampled_from(["M1", "M2", "M3", "M1", "M2", "M3", "EX", "RES", "GOV"])
TRANSFER_UNITS = st.sampled_from(["CEA-2025", "CEA-2025", "CEA-2025", "CCER"])
ALLOWANCES = st.sampled_from(["CEA-2025", "CEA-2025", "CEA-2026"])
UNITS = st.sampled_from(["CEA-2025", "CEA-2025", "CEA-2026", "CCER"])
SMALL = st.integers(1, 1_500)


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = SqlRegistry("sqlite://", clock=ticking_clock())
        self.registry.create_schema()
        for account_id, kind in (
            ("GOV", "government_allocation"), ("RES", "adjustment_reserve"), ("CAN", "cancellation"),
            ("M1", "member_holding"), ("M2", "member_holding"), ("M3", "member_holding"),
            ("EX", "exchange_settlement"), ("AUC", "auction"),
        ):
            self.registry.open_account(account_id, kind, **AUTHORITY)
        for year in (2025, 2026):
            self.registry.set_annual_cap(year, 100_000, **AUTHORITY)
        self.registry.register_ccer_project("P-WIND", "renewable_energy", False, **AUTHORITY)
        self.registry.register_ccer_project("P-BOILER", "fossil_combustion", True, **AUTHORITY)
        self.registry.issue("CEA-2025", 60_000, **AUTHORITY)
        self.allocations = [self.registry.allocate(member, "CEA-2025", 8_000, **AUTHORITY) for member in ("M1", "M2", "M3")]
        self.allocations.append(self.registry.allocate("M2", "CEA-2025", 1_000, **AUTHORITY, compliance_only=True))
        self.allocations.append(self.registry.allocate("RES", "CEA-2025", 3_000, **AUTHORITY))
        for member, emissions_t in (("M1", 9_000), ("M3", 0)):
            self.registry.issue_ccer("P-WIND", member, 2_000, **AUTHORITY)
            self.registry.set_verified_emissions(member, 2025, emissions_t, **AUTHORITY)
        self.transfer_ids = itertools.count()

    def teardown(self) -> None:
        self.registry.close()

    def attempt(self, operation: Callable[[], Any], created: dict[str, int] | None = None,
                retired: dict[str, int] | None = None) -> Any:
        before = state(self.registry)
        try:
            result = operation()
        except RegistryError:
            assert state(self.registry) == before
            return None
        totals_before, totals_after = before[1], self.registry.totals()
        for unit in set(totals_before) | set(totals_after):
            was = totals_before.get(unit, UnitTotals(0, 0, 0))
            now = totals_after.get(unit, UnitTotals(0, 0, 0))
            made, gone = (created or {}).get(unit, 0), (retired or {}).get(unit, 0)
            assert (now.created_t - was.created_t, now.retired_t - was.retired_t) == (made, gone), unit
            assert now.outstanding_t - was.outstanding_t == made - gone, unit
        return result

    @rule(unit=ALLOWANCES, qty=st.integers(1, 40_000))
    def issue(self, unit: str, qty: int) -> None:
        self.attempt(lambda: self.registry.issue(unit, qty, **AUTHORITY), created={unit: qty})

    @rule(project=st.sampled_from(["P-WIND", "P-BOILER"]), member=MEMBERS, qty=SMALL, flag=st.booleans())
    def issue_ccer(self, project: str, member: str, qty: int, flag: bool) -> None:
        self.attempt(lambda: self.registry.issue_ccer(project, member, qty, **AUTHORITY, compliance_only=flag),
                     created={"CCER": qty})

    @rule(receiver=st.sampled_from(["M1", "M2", "M3", "RES", "EX"]), unit=ALLOWANCES, qty=st.integers(1, 8_000),
          flag=st.booleans(), from_reserve=st.booleans())
    def allocate(self, receiver: str, unit: str, qty: int, flag: bool, from_reserve: bool) -> None:
        seq = self.attempt(lambda: self.registry.allocate(
            receiver, unit, qty, **AUTHORITY, compliance_only=flag, from_reserve=from_reserve))
        if seq is not None:
            self.allocations.append(seq)

    @rule(data=st.data(), qty=st.integers(0, 8_000))
    def correct(self, data: st.DataObject, qty: int) -> None:
        if self.allocations:
            seq = data.draw(st.sampled_from(self.allocations))
            self.attempt(lambda: self.registry.correct_allocation(seq, qty, **AUTHORITY))

    @rule(moves=st.lists(st.tuples(TRADING_ACCOUNT, TRADING_ACCOUNT, TRANSFER_UNITS, SMALL), min_size=1, max_size=3),
          again=st.booleans())
    def transfer(self, moves: list[tuple[str, str, str, int]], again: bool) -> None:
        batch = [Transfer(f"t{next(self.transfer_ids)}", *move) for move in moves]
        self.attempt(lambda: self.registry.apply_transfers(batch, "settlement", "random day"))
        if again:
            self.attempt(lambda: self.registry.apply_transfers(batch[::-1], "settlement", "retry"))

    @rule(member=st.sampled_from(["M1", "M2"]), qty=st.integers(0, 20_000))
    def verify_emissions(self, member: str, qty: int) -> None:
        self.attempt(lambda: self.registry.set_verified_emissions(member, 2025, qty, **AUTHORITY))

    @rule(member=MEMBERS, qty=SMALL)
    def surrender(self, member: str, qty: int) -> None:
        self.attempt(lambda: self.registry.surrender(member, 2025, qty, **MEMBER), retired={"CEA-2025": qty})

    @rule(member=MEMBERS, qty=st.integers(1, 1_000))
    def offset(self, member: str, qty: int) -> None:
        self.attempt(lambda: self.registry.offset(member, 2025, qty, **MEMBER), retired={"CCER": qty})

    @rule(member=MEMBERS, qty=SMALL, flag=st.booleans())
    def bank(self, member: str, qty: int, flag: bool) -> None:
        self.attempt(lambda: self.registry.bank(member, 2025, qty, **MEMBER, compliance_only=flag),
                     created={"CEA-2026": qty}, retired={"CEA-2025": qty})

    @rule(account=TRADING_ACCOUNT, unit=UNITS, qty=SMALL, flag=st.booleans())
    def cancel(self, account: str, unit: str, qty: int, flag: bool) -> None:
        self.attempt(lambda: self.registry.cancel(account, unit, qty, **MEMBER, compliance_only=flag),
                     retired={unit: qty})

    @rule(account=ANY_ACCOUNT, frozen=st.booleans())
    def freeze(self, account: str, frozen: bool) -> None:
        operation = self.registry.freeze if frozen else self.registry.unfreeze
        self.attempt(lambda: operation(account, "regulator", "random"))

    @invariant()
    def journal_and_holdings_agree(self) -> None:
        assert self.registry.verify() == []


RegistryMachine.TestCase.settings = settings(
    max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
test_random_operations_keep_the_registry_consistent = RegistryMachine.TestCase
