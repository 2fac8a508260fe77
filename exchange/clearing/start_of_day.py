"""Start of day: the registry's settled holdings become commands for the engine.

The core never touches the registry (it does no I/O); the clearing house's start-of-day job
reads each member's holdings through the registry port and sends one ``LoadHolding`` per
member and listed instrument, which the engine journals like any other command. An
instrument the registry does not show for a member loads as zero, so yesterday's view never
lingers. Members are taken in the order given and instruments sorted, so the commands are
deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable

from exchange.model.commands import LoadHolding
from registry_adapter.port import Registry


def load_holdings_commands(registry: Registry, members: Iterable[str], symbols: Iterable[str]) -> list[LoadHolding]:
    listed = sorted(symbols)
    commands: list[LoadHolding] = []
    for member in members:
        held = registry.holdings(member)
        commands.extend(LoadHolding(member, symbol, held.get(symbol, 0)) for symbol in listed)
    return commands
