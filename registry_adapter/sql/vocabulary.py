"""The registry's vocabulary: units and their bounds, account types, operations, the kinds of
CCER reductions, and the records the registry hands out.

Units: allowances by vintage ``CEA-YYYY`` and ``CCER``; quantities are ``int`` tonnes stored as
BIGINT.
"""

from __future__ import annotations

import enum
import re

import msgspec

MAX_QTY_T = 2**63 - 1
CCER = "CCER"
ALLOWANCE_UNIT = re.compile(r"CEA-(\d{4})")
FIRST_YEAR, LAST_YEAR = 1990, 9998  # four digits, and room to bank into the next year


class AccountType(enum.StrEnum):
    MEMBER_HOLDING = "member_holding"
    EXCHANGE_SETTLEMENT = "exchange_settlement"
    GOVERNMENT_ALLOCATION = "government_allocation"
    ADJUSTMENT_RESERVE = "adjustment_reserve"
    AUCTION = "auction"
    CANCELLATION = "cancellation"


class Operation(enum.StrEnum):
    OPEN_ACCOUNT = "open_account"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    SET_CAP = "set_cap"
    REGISTER_PROJECT = "register_project"
    SET_EMISSIONS = "set_emissions"
    ISSUE = "issue"
    ISSUE_CCER = "issue_ccer"
    ALLOCATE = "allocate"
    CHANGE = "change"
    TRANSFER = "transfer"
    SURRENDER = "surrender"
    OFFSET = "offset"
    BANK = "bank"
    CANCEL = "cancel"


MOVEMENTS = frozenset({
    Operation.ISSUE, Operation.ISSUE_CCER, Operation.ALLOCATE, Operation.CHANGE, Operation.TRANSFER,
    Operation.SURRENDER, Operation.OFFSET, Operation.BANK, Operation.CANCEL,
})
CREATIONS = frozenset({Operation.ISSUE, Operation.ISSUE_CCER, Operation.BANK})


class ReductionKind(enum.StrEnum):
    FOSSIL_COMBUSTION = "fossil_combustion"
    INDUSTRIAL_PROCESS = "industrial_process"
    ELECTRICITY_USE = "electricity_use"
    RENEWABLE_ENERGY = "renewable_energy"
    FORESTRY = "forestry"
    METHANE_RECOVERY = "methane_recovery"
    OTHER = "other"


# ---------------------------------------------------------------------------------------------
# What the registry hands out


class Entry(msgspec.Struct, frozen=True):
    seq: int
    operation: str
    idempotency_id: str | None
    from_account: str | None
    to_account: str | None
    unit: str | None
    qty_t: int
    compliance_only: bool
    compliance_year: int | None
    corrects_seq: int | None
    project_id: str | None
    actor: str
    at_ns: int
    reason: str
    memo: str


class OperationRecord(msgspec.Struct, frozen=True):
    """An authority's operation id as the registry remembers it. ``entry_seq`` is the entry
    the operation recorded (None for a correction that changed nothing)."""

    operation_id: str
    operation: str
    request: str  # the arguments, canonical JSON: what a retry must repeat
    entry_seq: int | None
    actor: str
    at_ns: int


class Holding(msgspec.Struct, frozen=True):
    unit: str
    compliance_only: bool
    qty_t: int


class AccountSummary(msgspec.Struct, frozen=True):
    """One account as ``exchange registry accounts`` lists it: tonnes over every unit held."""

    account_id: str
    account_type: AccountType
    frozen: bool
    opened_at_ns: int
    tradable_t: int
    compliance_only_t: int


class ComplianceStatus(msgspec.Struct, frozen=True):
    account_id: str
    year: int
    verified_emissions_t: int
    surrendered_t: int
    offset_t: int
    offset_limit_t: int

    @property
    def shortfall_t(self) -> int:
        return max(0, self.verified_emissions_t - self.surrendered_t - self.offset_t)


class UnitTotals(msgspec.Struct, frozen=True):
    created_t: int  # issued, entered or banked into existence
    retired_t: int  # held by the cancellation account
    outstanding_t: int  # held everywhere else


def allowance_unit(year: int) -> str:
    return f"CEA-{year}"


def vintage_of(unit: str) -> int | None:
    match = ALLOWANCE_UNIT.fullmatch(unit) if isinstance(unit, str) else None
    return int(match[1]) if match else None
