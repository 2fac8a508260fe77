"""Operation ids of the authority's operations: issue, allocate and correct an allocation.

An authority that loses the answer to ``issue`` (a dropped connection, a killed terminal)
runs it again; with the same operation id the second run finds the first and changes
nothing. *Decisions*:

- The request is the operation and its arguments as canonical JSON (the reason and the actor
  are not part of it: a retry may say why in other words). A known id with the same request
  returns the first result, the entry it recorded; with another request, or an id a transfer
  already used, it is :class:`OperationIdConflict` naming what the id was used for.
- A correction that changed nothing (the allocation already had that amount) still takes its
  id, with no entry: a later retry must not undo a correction made in between.
- A refused operation records nothing, its id included (the transaction rolls back), so the
  authority may fix the cause and run it again under the same id.
- The lookup runs after the operation's account locks, so two runs of one id on PostgreSQL
  follow each other and the second finds the first; a race that slips through fails on the
  primary key and is retried from scratch (``RegistryBase._write``), which then finds it.
- Ids are kept forever, like the entries they point at.
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from registry_adapter.port import OperationIdConflict
from registry_adapter.sql.inputs import check_operation_id
from registry_adapter.sql.schema import entries, operation_ids
from registry_adapter.sql.transaction import Transaction
from registry_adapter.sql.vocabulary import Operation, OperationRecord


def request_of(*arguments: Any) -> str:
    return msgspec.json.encode(list(arguments)).decode()


def known_operation(tx: Transaction, operation_id: str, operation: Operation, request: str) -> OperationRecord | None:
    """The first run of this id, when it is a retry of the same request; None for a new id."""
    row = tx.connection.execute(sa.select(operation_ids).where(operation_ids.c.operation_id == operation_id)).first()
    if row is None:
        transfer = tx.connection.execute(sa.select(entries.c.seq).where(entries.c.idempotency_id == operation_id)).scalar()
        if transfer is not None:
            raise OperationIdConflict(operation_id, f"entry {transfer}")
        return None
    if (row.operation, row.request) != (operation.value, request):
        raise OperationIdConflict(operation_id, f"{row.operation} {row.request}")
    return OperationRecord(**row._asdict())


def remember_operation(tx: Transaction, operation_id: str, operation: Operation, request: str, entry_seq: int | None) -> None:
    tx.connection.execute(operation_ids.insert().values(
        operation_id=operation_id, operation=operation.value, request=request, entry_seq=entry_seq,
        actor=tx.actor, at_ns=tx.at_ns,
    ))


class Identified:
    """One call's operation id (or None: an unidentified call, recorded anew every time, as
    the demo set-up and the rule tests make them) and its request."""

    def __init__(self, operation_id: str | None, operation: Operation, *arguments: Any) -> None:
        self.operation_id = None if operation_id is None else check_operation_id(operation_id)
        self.operation, self.request = operation, request_of(*arguments)

    def first(self, tx: Transaction) -> OperationRecord | None:
        """Call after the operation's locks (see the module docstring)."""
        if self.operation_id is None:
            return None
        return known_operation(tx, self.operation_id, self.operation, self.request)

    def columns(self) -> dict[str, Any]:
        """The entry's columns: the id goes into ``idempotency_id``."""
        return {} if self.operation_id is None else {"idempotency_id": self.operation_id}

    def remember(self, tx: Transaction, entry_seq: int | None) -> None:
        if self.operation_id is not None:
            remember_operation(tx, self.operation_id, self.operation, self.request, entry_seq)
