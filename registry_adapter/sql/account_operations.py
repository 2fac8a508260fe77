"""Opening, freezing and unfreezing registry accounts.

``freeze``/``unfreeze``: nothing moves into or out of a frozen account, by any operation.
"""

from __future__ import annotations

import sqlalchemy as sa

from registry_adapter.sql.base import RegistryBase
from registry_adapter.sql.errors import AccountExists
from registry_adapter.sql.inputs import check_id, parse_enum
from registry_adapter.sql.rules import SINGLE_ACCOUNT_TYPES
from registry_adapter.sql.schema import accounts
from registry_adapter.sql.transaction import Transaction
from registry_adapter.sql.vocabulary import AccountType, Operation


class AccountOperations(RegistryBase):
    def open_account(self, account_id: str, account_type: str, *, actor: str, reason: str) -> bool:
        """Open an account; ``False`` if it is already open with that type."""
        check_id(account_id, "account id")
        kind = parse_enum(AccountType, account_type, "account type")

        def work(tx: Transaction) -> bool:
            tx.lock([account_id])
            existing = tx.accounts.get(account_id)
            if existing is not None:
                if existing.account_type == kind:
                    return False
                raise AccountExists(account_id, existing.account_type)
            if kind in SINGLE_ACCOUNT_TYPES:
                other = tx.connection.execute(
                    sa.select(accounts.c.account_id).where(accounts.c.account_type == kind.value)
                ).scalar()
                if other is not None:
                    raise AccountExists(other, kind.value)
            tx.connection.execute(
                accounts.insert().values(account_id=account_id, account_type=kind.value, frozen=False, opened_at_ns=tx.at_ns)
            )
            tx.record(Operation.OPEN_ACCOUNT, to_account=account_id, memo=kind.value)
            return True

        return self._write(work, actor, reason)

    def freeze(self, account_id: str, actor: str, reason: str) -> None:
        self._set_frozen(account_id, True, actor, reason)

    def unfreeze(self, account_id: str, actor: str, reason: str) -> None:
        self._set_frozen(account_id, False, actor, reason)

    def _set_frozen(self, account_id: str, frozen: bool, actor: str, reason: str) -> None:
        def work(tx: Transaction) -> None:
            tx.lock([account_id])
            if bool(tx.account(account_id).frozen) == frozen:
                return  # already so: nothing to record
            tx.connection.execute(accounts.update().where(accounts.c.account_id == account_id).values(frozen=frozen))
            tx.record(Operation.FREEZE if frozen else Operation.UNFREEZE, to_account=account_id)

        self._write(work, actor, reason)
