"""The shared member strategies: pure, seeded, and the same intents for every runner."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from exchange.model import OrderType, Side, TimeInForce
from exchange.sim import strategies
from exchange.sim.members import member_ids, plan_members
from exchange.sim.strategies import (
    AmendIntent,
    CancelIntent,
    MassCancelIntent,
    Member,
    NewOrderIntent,
    OperatorTurn,
    member_turn,
    operator_action,
)

ROOT = Path(__file__).resolve().parents[2]
BAND = (5_238, 6_402)


@dataclass
class Order:
    order_id: int
    price_fen: int | None
    qty_t: int


class View:
    def __init__(self, orders: list[Order] | None = None, best: int | None = None) -> None:
        self.orders, self.best = orders or [], best

    def band(self, symbol: str) -> tuple[int, int]:
        return BAND

    def best_price(self, symbol: str, side: Side) -> int | None:
        return self.best

    def market_price(self, symbol: str) -> int | None:
        return None

    def open_orders(self, member_id: str, symbol: str) -> list[Order]:
        return self.orders

    def unknown_order_id(self, rnd: random.Random) -> int:
        return rnd.randint(1, 1_000)


def turns(style: str, count: int, view: View, seed: int = 1) -> list:
    rnd = random.Random(seed)
    member = Member("M0001", style, ["CEA-2025"], {"CEA-2025": 5_820})
    return [member_turn(rnd, member, view) for _ in range(count)]


def test_the_same_seed_gives_the_same_intents() -> None:
    view = View([Order(7, 5_800, 100)])
    assert turns("trader", 500, view) == turns("trader", 500, view)


def test_every_kind_of_intent_appears_and_stays_in_the_band() -> None:
    intents = turns("trader", 5_000, View([Order(7, 5_800, 100)], best=5_830))
    kinds = {type(intent) for intent in intents}
    assert kinds == {NewOrderIntent, CancelIntent, AmendIntent, MassCancelIntent, OperatorTurn}
    good = [i for i in intents if isinstance(i, NewOrderIntent) and not i.deliberately_bad]
    assert {i.tif for i in good} == set(TimeInForce)
    assert all(i.price_fen is None or BAND[0] <= i.price_fen <= BAND[1] for i in good)
    assert all((i.price_fen is None) == (i.order_type is OrderType.MARKET) for i in good)
    bad = [i for i in intents if isinstance(i, NewOrderIntent) and i.deliberately_bad]
    assert {i.qty_t for i in bad} >= {0, 100, strategies.UNAFFORDABLE_QTY_T, strategies.BLOCK_SIZE_QTY_T}


def test_a_maker_quotes_on_its_side_of_fair_value() -> None:
    rnd = random.Random(3)
    for _ in range(200):
        order = strategies.passive_order(rnd, "maker", "CEA-2025", 5_820, View())
        assert (order.price_fen < 5_820) if order.side is Side.BUY else (order.price_fen > 5_820)


def test_fair_value_is_pulled_toward_the_market_and_kept_inside_the_band() -> None:
    class Market(View):
        def market_price(self, symbol: str) -> int | None:
            return 6_000

    member = Member("M0001", "maker", ["CEA-2025"], {"CEA-2025": 5_820})
    rnd = random.Random(5)
    for _ in range(100):
        strategies.drift_fair(rnd, member, "CEA-2025", Market())
    assert 5_990 <= member.fair_fen["CEA-2025"] <= BAND[1] - strategies.FAIR_MARGIN_FEN


def test_the_operator_undoes_halts_and_kill_switches_only() -> None:
    rnd = random.Random(11)
    decisions = [operator_action(rnd, "M0001", "CCER", halted=False, killed=False) for _ in range(400)]
    undone = {d.action.kind: d.undo.kind for d in decisions if d.undo is not None}
    assert undone == {"halt": "resume", "kill": "restore"}
    assert all(strategies.UNDO_AFTER[0] <= d.undo_after < strategies.UNDO_AFTER[1] for d in decisions if d.undo)
    pulled = [operator_action(rnd, "M0001", "CCER", halted=True, killed=True) for _ in range(100)]
    assert {d.action.kind for d in pulled} == {"deposit", "withdraw"}


def test_the_cast_is_seeded_and_the_first_ten_come_in_pairs() -> None:
    members = member_ids(12)
    plans = plan_members(random.Random(7), members, ["CCER", "CEA-2025"])
    assert plans == plan_members(random.Random(7), members, ["CCER", "CEA-2025"])
    assert [p.linked_group for p in plans] == [f"G{n // 2}" for n in range(10)] + ["", ""]
    assert all(p.style in strategies.STYLES for p in plans)


def test_the_strategies_do_no_io() -> None:
    """Pure: the standard library's random (a generator handed in), the model, nothing else."""
    import ast

    source = (ROOT / "exchange" / "sim" / "strategies.py").read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    assert names <= {"__future__", "random", "dataclasses", "typing", "exchange.model"}
