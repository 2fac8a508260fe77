"""The city's measures as the registry applies them: pure checks, no database.

Decisions where the measures are silent are marked *decision*.

- Units: allowances by vintage ``CEA-YYYY`` and ``CCER``. A *compliance-only* flag rides on
  holdings: the authority gives it when it allocates to a member (``allocate(...,
  compliance_only=True)``, also the way to deliver compliance-only units sold at auction from
  the reserve); such units may then be surrendered, offset, banked, cancelled or taken back by a
  correction, but never move between two holders: :class:`NotTradable`. The government and
  reserve accounts hold plain units only (*decision*), so an entry's flag describes the
  holder's side. The port's ``holdings`` and ``apply_transfers`` see tradable units only; a
  transfer that only compliance-only units could cover is refused with ``NotTradable``.
- One government allocation, one adjustment reserve and one cancellation account (*decision*:
  operations find them by type). Settlement (``apply_transfers``) may move units between member
  holding, exchange settlement, auction and reserve accounts, never out of the government
  account or into or out of the cancellation account: those move only by the authority's and
  the holders' operations (:mod:`registry_adapter.sql.authority`, :mod:`registry_adapter.sql.holders`).
- The adjustment reserve holds allowances only, never more than ``reserve_percent`` (5 %) of the
  cap of their vintage, and never less than zero (holdings are never negative); checked at the
  end of every operation (:meth:`registry_adapter.sql.transaction.Transaction.check_reserve`).
- ``offset`` retires CCER, at most ``offset_percent`` (10 %) of the year's verified emissions;
  surrender and offset may not exceed what is still owed (*decision*: no over-surrender).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry_adapter.port import InsufficientHolding, NotTradable, RegistryError, Transfer
from registry_adapter.sql.errors import (
    CapExceeded,
    CapNotSet,
    EmissionsCorrectionRefused,
    ExceedsObligation,
    NoObligation,
    OffsetCapExceeded,
    ShortfallOutstanding,
    WrongAccountType,
)
from registry_adapter.sql.vocabulary import AccountType, ComplianceStatus, Operation, ReductionKind

if TYPE_CHECKING:
    import sqlalchemy as sa

SINGLE_ACCOUNT_TYPES = frozenset(
    {AccountType.GOVERNMENT_ALLOCATION, AccountType.ADJUSTMENT_RESERVE, AccountType.CANCELLATION}
)
# Compliance-only units may move only if one side is one of these.
AUTHORITY_ACCOUNT_TYPES = SINGLE_ACCOUNT_TYPES
# These hold plain units only: the compliance-only flag is given by an allocation from them and
# taken back by a correction into them, so an entry's flag describes the holder's side.
PLAIN_ACCOUNT_TYPES = frozenset({AccountType.GOVERNMENT_ALLOCATION, AccountType.ADJUSTMENT_RESERVE})
TRANSFER_ACCOUNT_TYPES = frozenset(
    {AccountType.MEMBER_HOLDING, AccountType.EXCHANGE_SETTLEMENT, AccountType.AUCTION, AccountType.ADJUSTMENT_RESERVE}
)


# Reductions of these kinds at the city's own covered facilities are already inside the cap.
LOCALLY_EXCLUDED_KINDS = frozenset(
    {ReductionKind.FOSSIL_COMBUSTION, ReductionKind.INDUSTRIAL_PROCESS, ReductionKind.ELECTRICITY_USE}
)


def check_compliance_only_route(source: sa.Row | None, target: sa.Row | None, unit: str) -> None:
    """Compliance-only units go from the authority to a member, and from a holder back to
    the authority or into retirement; never from holder to holder."""
    if source is not None and target is not None:
        if source.account_type not in AUTHORITY_ACCOUNT_TYPES and target.account_type not in AUTHORITY_ACCOUNT_TYPES:
            raise NotTradable(unit)
    plain_source = source is None or source.account_type in PLAIN_ACCOUNT_TYPES
    if plain_source and (target is None or target.account_type != AccountType.MEMBER_HOLDING):
        row = target if target is not None else source
        assert row is not None, "a compliance-only movement names at least one account"
        raise WrongAccountType(row.account_id, row.account_type, "receive compliance-only units")


def excluded_by_measures(kind: ReductionKind, at_covered_facility: bool) -> bool:
    """Whether the measures exclude a CCER project's reductions (see ``LOCALLY_EXCLUDED_KINDS``)."""
    return bool(at_covered_facility) and kind in LOCALLY_EXCLUDED_KINDS


def check_cap_room(year: int, row: sa.Row | None, qty_t: int) -> sa.Row:
    """Issuance of vintage ``year`` stays within its annual cap (``row``: the cap's row).
    Returns the cap's row."""
    if row is None:
        raise CapNotSet(year)
    if row.issued_t + qty_t > row.cap_t:
        raise CapExceeded(year, row.cap_t, row.issued_t, qty_t)
    return row


def check_emissions_correction(record: sa.Row, qty_t: int, offset_percent: int) -> None:
    """Verified emissions can't be corrected below what is already surrendered or offset."""
    used = record.surrendered_t + record.offset_t
    if qty_t < used:
        raise EmissionsCorrectionRefused(record.account_id, record.year, f"{used} t are already surrendered")
    if record.offset_t > qty_t * offset_percent // 100:
        raise EmissionsCorrectionRefused(record.account_id, record.year, f"{record.offset_t} t are already offset")


def check_retirement(
    record: sa.Row | None, operation: Operation, account_id: str, year: int, qty_t: int, offset_percent: int,
) -> sa.Row:
    """A surrender or offset needs an obligation, stays within it and, for CCER, within the
    offset limit. Returns the compliance record."""
    if record is None:
        raise NoObligation(account_id, year)
    remaining = record.verified_emissions_t - record.surrendered_t - record.offset_t
    if qty_t > remaining:
        raise ExceedsObligation(account_id, year, remaining, qty_t)
    if operation == Operation.OFFSET:
        limit = record.verified_emissions_t * offset_percent // 100
        if record.offset_t + qty_t > limit:
            raise OffsetCapExceeded(account_id, year, limit, record.offset_t, qty_t)
    return record


def check_bankable(record: sa.Row | None, account_id: str, year: int, offset_percent: int) -> None:
    """Allowances of a year can't be banked while the member's record for it shows a shortfall."""
    if record is not None:
        status = compliance_status(record, offset_percent)
        if status.shortfall_t:
            raise ShortfallOutstanding(account_id, year, status.shortfall_t)


def shortage(transfer: Transfer, held: int, locked_up: int) -> RegistryError:
    """Why a transfer's source can't cover it: only compliance-only units would, or nothing does."""
    if held + locked_up >= transfer.qty_t:
        return NotTradable(transfer.unit)
    return InsufficientHolding(transfer.from_account, transfer.unit, held, transfer.qty_t)


def compliance_status(record: sa.Row, offset_percent: int) -> ComplianceStatus:
    return ComplianceStatus(
        record.account_id, record.year, record.verified_emissions_t, record.surrendered_t, record.offset_t,
        record.verified_emissions_t * offset_percent // 100,
    )
