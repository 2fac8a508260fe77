"""Setting up the reference registry for a demonstration or a simulation, as the authority would.

:func:`allocate_holdings` gives each member the units asked for: it opens the member
holding accounts, sets each vintage's annual cap (the allocation plus room for the 5 %
adjustment reserve), issues and allocates the allowances, and issues CCER from one
registered renewable-energy project. Every step is one the registry's rules allow; running
it again on the same registry adds the holdings again (it gives the authority's operations
no operation id: a set-up on a fresh registry, not an authority's retry).
"""

from __future__ import annotations

from collections.abc import Mapping

from registry_adapter.sql import CCER, AccountType, SqlRegistry, allowance_unit, vintage_of

ACTOR = "authority:demo"
PROJECT = "DEMO-RENEWABLE-1"


def allocate_holdings(registry: SqlRegistry, holdings: Mapping[str, Mapping[str, int]]) -> None:
    """``holdings``: member id -> unit (``CEA-2025``, ``CCER``) -> tonnes."""
    why = "simulation set-up"
    registry.open_account("GOV-ALLOCATION", AccountType.GOVERNMENT_ALLOCATION.value, actor=ACTOR, reason=why)
    for member in holdings:
        registry.open_account(member, AccountType.MEMBER_HOLDING.value, actor=ACTOR, reason=why)
    totals: dict[str, int] = {}
    for units in holdings.values():
        for unit, qty in units.items():
            totals[unit] = totals.get(unit, 0) + qty
    for unit, total in sorted(totals.items()):
        year = vintage_of(unit)
        if year is not None:
            registry.set_annual_cap(year, total * 2, actor=ACTOR, reason=why)
            registry.issue(allowance_unit(year), total, actor=ACTOR, reason=why)
    if CCER in totals:
        registry.register_ccer_project(PROJECT, "renewable_energy", False, actor=ACTOR, reason=why)
    for member, units in holdings.items():
        for unit, qty in sorted(units.items()):
            if unit == CCER:
                registry.issue_ccer(PROJECT, member, qty, actor=ACTOR, reason=why)
            elif qty:
                registry.allocate(member, unit, qty, actor=ACTOR, reason=why)
