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
        assert order.price_fen is not None  # a limit order
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
    """Pure: the standard library's random (a generator handed in), the model, typing helpers
    (``typing``, ``collections.abc``), nothing else."""
    import ast

    source = (ROOT / "exchange" / "sim" / "strategies.py").read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    assert names <= {"__future__", "random", "dataclasses", "typing", "collections.abc", "exchange.model"}


def load_turns(count: int, view: View, seed: int = 13) -> list[NewOrderIntent | CancelIntent[Order]]:
    rnd = random.Random(seed)
    member = Member("L8x000", "load", ["CEA-2025"], {"CEA-2025": 5_820})
    return [strategies.load_turn(rnd, member, view) for _ in range(count)]


def test_the_load_mix_has_the_baseline_shape() -> None:
    """The gateway benchmark's mix: small day limit orders within 5 ticks of 58.20, a fifth
    cancels of the oldest open order; fair value does not move."""
    oldest, newer = Order(7, 5_818, 4), Order(8, 5_822, 9)
    intents = load_turns(10_000, View([oldest, newer]))
    cancels = [i for i in intents if isinstance(i, CancelIntent)]
    orders = [i for i in intents if isinstance(i, NewOrderIntent)]
    assert len(cancels) + len(orders) == len(intents)
    assert 0.18 <= len(cancels) / len(intents) <= 0.22
    assert all(c.order is oldest and c.symbol == "CEA-2025" for c in cancels)
    assert {o.qty_t for o in orders} == set(range(1, 11))
    assert {o.price_fen for o in orders} == {5_820 + ticks for ticks in range(-5, 6)}
    assert all(o.order_type is OrderType.LIMIT and o.tif is TimeInForce.DAY and not o.deliberately_bad for o in orders)
    assert all(o.symbol == "CEA-2025" for o in orders)
    buys = sum(o.side is Side.BUY for o in orders) / len(orders)
    assert 0.47 <= buys <= 0.53


def test_the_load_mix_cancels_only_what_is_open_and_repeats_for_a_seed() -> None:
    assert all(isinstance(i, NewOrderIntent) for i in load_turns(1_000, View()))
    view = View([Order(7, 5_818, 4)])
    assert load_turns(500, view) == load_turns(500, view)


def test_the_load_mix_draws_as_the_baseline_generator_did() -> None:
    """The same draws in the same order as the load generator before the shared strategies
    (``bench/gateway_load.py``: roll, side, price index over +-5 ticks, quantity)."""
    seed, resting = 20250602 * 1_000, [Order(7, 5_818, 4)]
    old = random.Random(seed)
    expected: list[tuple[str, int] | tuple[Side, int | None, int]] = []
    for _ in range(2_000):
        roll = old.random()
        if roll < 0.2:
            expected.append(("cancel", 7))
            continue
        side = Side.BUY if old.random() < 0.5 else Side.SELL
        price = 5_820 - 5 + old.randrange(11)
        expected.append((side, price, old.randint(1, 10)))
    got: list[tuple[str, int] | tuple[Side, int | None, int]] = []
    for i in load_turns(2_000, View(resting), seed):
        if isinstance(i, CancelIntent):
            assert i.order is not None  # the load mix cancels only its own open orders
            got.append(("cancel", i.order.order_id))
        else:
            got.append((i.side, i.price_fen, i.qty_t))
    assert got == expected
