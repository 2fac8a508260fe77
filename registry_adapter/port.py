"""The port to the allowance registry (登记簿): what the exchange asks of it.

It speaks for an outside system, so it imports nothing from ``exchange``. This first part is
what the trading day needs at its start: the settled holdings of a member's account. The
transfer batch, freeze and unfreeze, and their typed errors join it with settlement.
"""

from __future__ import annotations

from typing import Mapping, Protocol


class RegistryError(Exception):
    """Base of the registry's typed errors."""


class UnknownAccount(RegistryError):
    """The registry holds no account under that id."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"unknown registry account {account_id!r}")
        self.account_id = account_id


class Registry(Protocol):
    def holdings(self, account_id: str) -> Mapping[str, int]:
        """Settled, tradable holdings of an account: unit type (e.g. ``CEA-2025``) -> tonnes.
        Compliance-only units are not included: they cannot be traded. Raises
        :class:`UnknownAccount`."""
        ...
