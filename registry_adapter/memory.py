"""An in-memory registry: the fake that serves tests and the simulation. It keeps the
port's promises (atomic batches, idempotent ids, frozen accounts) without the registry's
full rulebook, which the SQL reference registry implements. ``issue`` takes an operation id
as the SQL registry's authority operations do: a retry changes nothing, the id with another
request is refused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from registry_adapter.port import (
    MEMBER_HOLDING,
    AccountFrozen,
    IdConflict,
    InsufficientHolding,
    OperationIdConflict,
    Transfer,
    UnknownAccount,
)


class InMemoryRegistry:
    def __init__(self) -> None:
        self._holdings: dict[str, dict[str, int]] = {}
        self._frozen: dict[str, bool] = {}
        self._applied: dict[str, Transfer] = {}
        self._operations: dict[str, tuple[str, str, int]] = {}  # operation id -> the issue it made

    def open_account(self, account_id: str, account_type: str = MEMBER_HOLDING, *, actor: str = "", reason: str = "") -> bool:
        """Open an account (the fake keeps no types); ``False`` if it was open already."""
        if account_id in self._holdings:
            return False
        self._holdings[account_id] = {}
        return True

    def issue(self, account_id: str, unit: str, qty_t: int, operation_id: str | None = None) -> None:
        """Credit an account (allocation by the authority, in the fake's terms)."""
        units = self._account(account_id)
        assert qty_t > 0
        if operation_id is not None:
            request = (account_id, unit, qty_t)
            first = self._operations.setdefault(operation_id, request)
            if first != request:
                raise OperationIdConflict(operation_id, f"issue {first}")
            if first is not request:
                return  # a retry: the first credited the account
        units[unit] = units.get(unit, 0) + qty_t

    def holdings(self, account_id: str) -> Mapping[str, int]:
        return dict(self._account(account_id))

    def apply_transfers(self, transfers: Sequence[Transfer], actor: str, reason: str) -> None:
        fresh: list[Transfer] = []
        in_batch: dict[str, Transfer] = {}
        for transfer in transfers:
            seen = in_batch.setdefault(transfer.transfer_id, transfer)
            if seen != transfer:
                raise IdConflict(transfer.transfer_id)
            if seen is transfer and self._is_new(transfer):
                fresh.append(transfer)
        balances = {account: dict(units) for account, units in self._holdings.items()}
        for transfer in fresh:  # check the whole batch against a copy first: all or nothing
            for account in (transfer.from_account, transfer.to_account):
                if account not in balances:
                    raise UnknownAccount(account)
                if self._frozen.get(account):
                    raise AccountFrozen(account)
            source = balances[transfer.from_account]
            held = source.get(transfer.unit, 0)
            if held < transfer.qty_t:
                raise InsufficientHolding(transfer.from_account, transfer.unit, held, transfer.qty_t)
            source[transfer.unit] = held - transfer.qty_t
            target = balances[transfer.to_account]
            target[transfer.unit] = target.get(transfer.unit, 0) + transfer.qty_t
        self._holdings = balances
        for transfer in fresh:
            self._applied[transfer.transfer_id] = transfer

    def _is_new(self, transfer: Transfer) -> bool:
        known = self._applied.get(transfer.transfer_id)
        if known is None:
            return True
        if known != transfer:
            raise IdConflict(transfer.transfer_id)
        return False

    def freeze(self, account_id: str, actor: str, reason: str) -> None:
        self._account(account_id)
        self._frozen[account_id] = True

    def unfreeze(self, account_id: str, actor: str, reason: str) -> None:
        self._account(account_id)
        self._frozen.pop(account_id, None)

    def _account(self, account_id: str) -> dict[str, int]:
        if account_id not in self._holdings:
            raise UnknownAccount(account_id)
        return self._holdings[account_id]
