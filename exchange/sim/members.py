"""The cast of a simulated run: who the members are, how they are admitted, what they hold.

Drawn once from the run's seed, in one order (every style, then every holding, then every
admission: the order of the original in-process session, whose journal is pinned), so the
in-process and the served run of one seed have the same members with the same styles, kinds,
allocations and holdings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from exchange.model import MemberKind
from exchange.sim.strategies import draw_style

CASH_PER_MEMBER_FEN = 500_000_000  # 5 million CNY, deposited for each member at admission
LINKED_PAIRS = 10  # the first ten members come in linked pairs (G0 .. G4)


@dataclass(frozen=True)
class MemberPlan:
    member_id: str
    style: str
    kind: MemberKind
    annual_allocation_t: int
    linked_group: str
    holdings_t: dict[str, int]  # per instrument, what the registry gives it before day one


def member_ids(count: int) -> list[str]:
    return [f"M{n:04d}" for n in range(1, count + 1)]


def plan_members(rnd: random.Random, members: list[str], symbols: list[str]) -> list[MemberPlan]:
    """Styles, holdings, admissions, drawn in that order for all members."""
    styles = [draw_style(rnd) for _ in members]
    holdings = [{symbol: rnd.randrange(20_000, 200_000, 100) for symbol in symbols} for _ in members]
    plans = []
    for number, member in enumerate(members):
        covered = rnd.random() < 0.6
        kind = MemberKind.COVERED if covered else MemberKind.VOLUNTARY
        allocation = rnd.randrange(50_000, 500_000, 1_000) if covered else 0
        group = f"G{number // 2}" if number < LINKED_PAIRS else ""
        plans.append(MemberPlan(member, styles[number], kind, allocation, group, holdings[number]))
    return plans
