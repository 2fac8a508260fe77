"""The port to the allowance registry (登记簿): what the exchange asks of it.

It speaks for an outside system, so it imports nothing from ``exchange``. The trading day
needs the settled holdings of a member's account at its start; settlement needs a batch of
transfers applied atomically, each transfer carrying an idempotency id, and freezing.

Idempotency: a transfer id, once applied, is remembered with its body. Applying a batch
again (a retry after a timeout, a restarted settlement) changes nothing and succeeds; a
transfer whose id is known with a *different* body is refused with :class:`IdConflict`, and
so is the whole batch. A batch is all or nothing: any refusal leaves the registry unchanged.

Opening a member's account (``open_account``) is the one authority operation the exchange
calls: admitting a member opens its holding account, under the member's id, in the same step.

The authority's operations (issue, allocate, correct an allocation: not part of this port, the
exchange never calls them) keep the same promise by an operation id: a retry with a known id
returns the first result and changes nothing, the id with another request is refused with
:class:`OperationIdConflict`. Transfer ids and operation ids are one set of ids per registry.
"""

from __future__ import annotations

from typing import Protocol
from collections.abc import Mapping, Sequence

import msgspec


class RegistryError(Exception):
    """Base of the registry's typed errors."""


class UnknownAccount(RegistryError):
    """The registry holds no account under that id."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"unknown registry account {account_id!r}")
        self.account_id = account_id


class InsufficientHolding(RegistryError):
    """A transfer would take more units than the account holds."""

    def __init__(self, account_id: str, unit: str, held_t: int, wanted_t: int) -> None:
        super().__init__(f"account {account_id!r} holds {held_t} t of {unit}, {wanted_t} t wanted")
        self.account_id, self.unit, self.held_t, self.wanted_t = account_id, unit, held_t, wanted_t


class AccountFrozen(RegistryError):
    """The account is frozen: nothing moves out of it (or into it) until it is unfrozen."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"registry account {account_id!r} is frozen")
        self.account_id = account_id


class IdConflict(RegistryError):
    """An idempotency id already applied with a different body."""

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"transfer id {transfer_id!r} was already used for a different transfer")
        self.transfer_id = transfer_id


class OperationIdConflict(RegistryError):
    """An operation id already used for another request (another operation, other
    arguments, or a transfer). ``first`` says what the id was used for."""

    def __init__(self, operation_id: str, first: str) -> None:
        super().__init__(f"operation id {operation_id!r} was already used for another request: {first}")
        self.operation_id, self.first = operation_id, first


class NotTradable(RegistryError):
    """Compliance-only units may be surrendered but not transferred between holders."""

    def __init__(self, unit: str) -> None:
        super().__init__(f"{unit} units are compliance-only and cannot be traded")
        self.unit = unit


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or did not answer in time: whether the call took
    effect is unknown. Callers retry with the same idempotency ids, which settles it."""


class Transfer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Move ``qty_t`` of ``unit`` from one account to another. ``transfer_id`` is the
    idempotency id (settlement derives it from the trading day, the trade and the leg)."""

    transfer_id: str
    from_account: str
    to_account: str
    unit: str
    qty_t: int
    memo: str = ""


MEMBER_HOLDING = "member_holding"  # the account type of a member's own holdings


class Registry(Protocol):
    def open_account(self, account_id: str, account_type: str, *, actor: str, reason: str) -> bool:
        """Open an account of ``account_type`` (a member's: :data:`MEMBER_HOLDING`); ``False``
        if it is already open with that type, which changes nothing (a retry is harmless).
        Raises a :class:`RegistryError` naming why it cannot be opened (the id taken by an
        account of another type, a malformed id, the registry unavailable)."""
        ...

    def holdings(self, account_id: str) -> Mapping[str, int]:
        """Settled, tradable holdings of an account: unit type (e.g. ``CEA-2025``) -> tonnes.
        Compliance-only units are not included: they cannot be traded. Raises
        :class:`UnknownAccount`."""
        ...

    def apply_transfers(self, transfers: Sequence[Transfer], actor: str, reason: str) -> None:
        """Apply every transfer or none (see the module docstring on idempotency). Raises a
        :class:`RegistryError` naming the first refusal."""
        ...

    def freeze(self, account_id: str, actor: str, reason: str) -> None: ...

    def unfreeze(self, account_id: str, actor: str, reason: str) -> None: ...
