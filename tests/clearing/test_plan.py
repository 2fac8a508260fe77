"""The settlement plan against a naive model: the legs it builds, run by a few lines of
dict arithmetic, must leave every account where the trades alone say it ends, with the
settlement account at zero, no account but the settlement account ever below zero, and the
same ids every time. Counterparties include house accounts, which are no member's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.clearing.ledger import SETTLEMENT, Operation, Transfer, VoidPending
from exchange.clearing.obligations import CASH, Obligation, Venue, obligation_of
from exchange.clearing.plan import SettlementPlan
from exchange.model import OrderFilled, Side
from registry_adapter.port import Transfer as RegistryTransfer

DAY = "2026-11-23"
ACCOUNTS = ("M1", "M2", "M3", "house:buyback_fund", "ADJUSTMENT_RESERVE")
UNITS = ("CCER", "CEA-2025")


class Position(msgspec.Struct, frozen=True):
    member_id: str
    asset: str
    settled: int
    obligation: int


@st.composite
def obligations(draw: st.DrawFn) -> list[Obligation]:
    count = draw(st.integers(0, 30))
    found = []
    for trade_id in range(1, count + 1):
        buyer, seller = draw(st.permutations(ACCOUNTS))[:2]
        venue = draw(st.sampled_from(Venue))
        sources = (2 * trade_id, 2 * trade_id + 1) if venue is Venue.BOOK else (draw(st.none() | st.integers(1, 9)), None)
        found.append(Obligation(
            trade_id, venue, draw(st.sampled_from(UNITS)), draw(st.integers(1, 500)), draw(st.integers(1, 9_000)),
            buyer, seller, *sources,
        ))
    return found


def naive_ends(day: list[Obligation], opening: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Where every (account, asset) ends: each trade moves tonnes one way and fen the other."""
    ends = Counter(opening)
    for ob in day:
        ends[ob.seller, ob.instrument] -= ob.qty_t
        ends[ob.buyer, ob.instrument] += ob.qty_t
        ends[ob.buyer, CASH] -= ob.price_fen * ob.qty_t
        ends[ob.seller, CASH] += ob.price_fen * ob.qty_t
    return dict(ends)


def run_registry(legs: list[RegistryTransfer], held: Counter) -> None:
    for leg in legs:
        held[leg.from_account, leg.unit] -= leg.qty_t
        held[leg.to_account, leg.unit] += leg.qty_t
        assert held[leg.from_account, leg.unit] >= 0, leg


def run_ledger(operations: Sequence[Operation], cash: Counter, pending: dict[str, Transfer]) -> None:
    """Available balances: a pending debit leaves the debtor's available at once."""
    for op in operations:
        if isinstance(op, VoidPending):
            hold = pending.pop(op.transfer_id)
            cash[hold.debit_account] += hold.amount_fen
            continue
        assert isinstance(op, Transfer)
        cash[op.debit_account] -= op.amount_fen
        if op.pending:
            pending[op.transfer_id] = op
        else:
            cash[op.credit_account] += op.amount_fen
        assert op.debit_account == SETTLEMENT or cash[op.debit_account] >= 0, op


def tight_opening(plan: SettlementPlan, day: list[Obligation]) -> dict[tuple[str, str], int]:
    """Each account holds exactly what it must: the tonnes it delivers and its net payment."""
    opening = {(ob.seller, ob.instrument): 0 for ob in day}
    for ob in day:
        opening[ob.seller, ob.instrument] += ob.qty_t
    opening.update({(account, CASH): max(plan.net_pay_fen(account), 0) for account in plan.accounts()})
    return opening


@settings(max_examples=200, deadline=None)
@given(obligations())
def test_the_legs_end_where_the_trades_say(day: list[Obligation]) -> None:
    plan = SettlementPlan(DAY, day)
    opening = tight_opening(plan, day)
    held = Counter({key: value for key, value in opening.items() if key[1] != CASH})
    cash = Counter({key[0]: value for key, value in opening.items() if key[1] == CASH})
    pending: dict[str, Transfer] = {}
    run_ledger(plan.hold_legs(), cash, pending)
    run_registry(plan.registry_legs(), held)
    run_ledger(plan.pay_legs(), cash, pending)
    ends = naive_ends(day, opening)
    assert pending == {} and cash[SETTLEMENT] == 0
    assert {key: held[key] for key in ends if key[1] != CASH} == {k: v for k, v in ends.items() if k[1] != CASH}
    assert {key: cash[key[0]] for key in ends if key[1] == CASH} == {k: v for k, v in ends.items() if k[1] == CASH}
    assert plan.volume_t == sum(ob.qty_t for ob in day)
    assert plan.value_fen == sum(ob.price_fen * ob.qty_t for ob in day)


@settings(max_examples=100, deadline=None)
@given(obligations())
def test_the_plan_is_deterministic_and_names_each_leg_once(day: list[Obligation]) -> None:
    plan, again = SettlementPlan(DAY, day), SettlementPlan(DAY, list(day))
    legs = [*plan.hold_legs(), *plan.registry_legs(), *plan.pay_legs()]
    assert legs == [*again.hold_legs(), *again.registry_legs(), *again.pay_legs()] and plan.digest == again.digest
    ledger_ids = [op.transfer_id for op in [*plan.hold_legs(), *plan.pay_legs()] if isinstance(op, Transfer)]
    assert len(ledger_ids) == len(set(ledger_ids))
    assert [leg.transfer_id for leg in plan.registry_legs()] == [f"settle:{DAY}:T{ob.trade_id}:allowance" for ob in day]
    assert {f"settle:{DAY}:T{ob.trade_id}:cash" for ob in day} <= set(ledger_ids)


@settings(max_examples=100, deadline=None)
@given(obligations())
def test_the_exchange_s_view_of_the_nets_checks_clean_and_a_changed_one_does_not(day: list[Obligation]) -> None:
    plan = SettlementPlan(DAY, day)
    ends = naive_ends(day, {})
    positions = [Position(account, asset, 0, -moved) for (account, asset), moved in sorted(ends.items())]
    assert plan.obligation_problems(positions) == []
    if positions:
        first = positions[0]
        changed = [msgspec.structs.replace(first, obligation=first.obligation + 1), *positions[1:]]
        assert [p.split(":")[0] for p in plan.obligation_problems(changed)] == [f"{first.member_id} {first.asset}"]


def test_problems_name_accounts_the_stores_lack_or_that_fall_short() -> None:
    day = [
        Obligation(1, Venue.BUYBACK, "CEA-2025", 10, 5_000, "house:buyback_fund", "M1", 7, None),
        Obligation(2, Venue.BOOK, "CEA-2025", 5, 5_100, "M2", "M1", 8, 9),
    ]
    plan = SettlementPlan(DAY, day)
    # An account the registry lacks is reported once and its legs are left out of the dry run.
    assert plan.delivery_problems({"M1": {"CEA-2025": 12}, "M2": {}}) == ["house:buyback_fund: no registry account"]
    assert plan.delivery_problems({"M1": {"CEA-2025": 12}, "M2": {}, "house:buyback_fund": {}}) == [
        "M1: holds 2 t of CEA-2025, trade 2 delivers 5 t",
    ]
    assert plan.delivery_problems({"M1": {"CEA-2025": 15}, "M2": {}, "house:buyback_fund": {}}) == []
    assert plan.payment_problems({"M1": 0, "M2": 25_500}) == ["house:buyback_fund: no cash account"]
    assert plan.payment_problems({"M1": 0, "M2": 25_499, "house:buyback_fund": 50_000}) == [
        "M2: 254.99 CNY available, 255.00 CNY to pay",
    ]


def test_a_book_fill_becomes_its_obligation() -> None:
    fill = OrderFilled(41, "CEA-2025", 5_820, 60, Side.BUY, 7, "B1", 0, 8, "S1", 40)
    assert obligation_of(fill) == Obligation(41, Venue.BOOK, "CEA-2025", 60, 5_820, "B1", "S1", 7, 8)
    assert obligation_of(fill).value_fen == 349_200
