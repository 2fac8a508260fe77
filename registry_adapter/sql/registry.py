"""The reference registry, put together from its parts."""

from __future__ import annotations

from registry_adapter.sql.account_operations import AccountOperations
from registry_adapter.sql.audit import Audit
from registry_adapter.sql.authority import AuthorityOperations
from registry_adapter.sql.holders import HolderOperations
from registry_adapter.sql.queries import Queries
from registry_adapter.sql.transfers import PortTransfers


class SqlRegistry(AccountOperations, AuthorityOperations, HolderOperations, PortTransfers, Queries, Audit):
    """The reference registry. ``clock`` gives the time of each operation in ns since the
    epoch; it is read once per operation, outside the rules."""
