"""An in-memory registry: the fake that serves tests and the simulation until the SQL
reference registry exists."""

from __future__ import annotations

from typing import Mapping

from registry_adapter.port import UnknownAccount


class InMemoryRegistry:
    def __init__(self, holdings: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._holdings: dict[str, dict[str, int]] = {
            account: dict(units) for account, units in (holdings or {}).items()
        }

    def open_account(self, account_id: str) -> None:
        self._holdings.setdefault(account_id, {})

    def issue(self, account_id: str, unit: str, qty_t: int) -> None:
        """Credit an account (allocation by the authority, in the fake's terms)."""
        if account_id not in self._holdings:
            raise UnknownAccount(account_id)
        assert qty_t > 0
        units = self._holdings[account_id]
        units[unit] = units.get(unit, 0) + qty_t

    def holdings(self, account_id: str) -> Mapping[str, int]:
        if account_id not in self._holdings:
            raise UnknownAccount(account_id)
        return dict(self._holdings[account_id])
