"""The registry's refusals beyond the port's (:mod:`registry_adapter.port`)."""

from __future__ import annotations

from registry_adapter.port import RegistryError
from registry_adapter.sql.vocabulary import MAX_QTY_T


class InvalidQuantity(RegistryError):
    def __init__(self, qty_t: object) -> None:
        super().__init__(f"quantity {qty_t!r} is not a whole number of tonnes between 1 and {MAX_QTY_T}")
        self.qty_t = qty_t


class InvalidInput(RegistryError):
    """A malformed argument: an empty id, a year out of range, an unknown type name."""


class UnknownUnit(RegistryError):
    def __init__(self, unit: str, expected: str = "CEA-YYYY or CCER") -> None:
        super().__init__(f"unit {unit!r} is not valid here: expected {expected}")
        self.unit = unit


class AccountExists(RegistryError):
    def __init__(self, account_id: str, account_type: str) -> None:
        super().__init__(f"registry account {account_id!r} already exists as {account_type}")
        self.account_id, self.account_type = account_id, account_type


class AccountNotOpened(RegistryError):
    def __init__(self, account_type: str) -> None:
        super().__init__(f"no {account_type} account is open in the registry")
        self.account_type = account_type


class WrongAccountType(RegistryError):
    def __init__(self, account_id: str, account_type: str, role: str) -> None:
        super().__init__(f"registry account {account_id!r} ({account_type}) cannot {role}")
        self.account_id, self.account_type, self.role = account_id, account_type, role


class CapNotSet(RegistryError):
    def __init__(self, year: int) -> None:
        super().__init__(f"no annual cap is set for {year}")
        self.year = year


class CapExceeded(RegistryError):
    def __init__(self, year: int, cap_t: int, issued_t: int, wanted_t: int) -> None:
        super().__init__(f"issuing {wanted_t} t would exceed the {year} cap of {cap_t} t ({issued_t} t issued)")
        self.year, self.cap_t, self.issued_t, self.wanted_t = year, cap_t, issued_t, wanted_t


class CapTooLow(RegistryError):
    def __init__(self, year: int, cap_t: int, why: str) -> None:
        super().__init__(f"a {year} cap of {cap_t} t is too low: {why}")
        self.year, self.cap_t = year, cap_t


class ReserveCapExceeded(RegistryError):
    def __init__(self, unit: str, limit_t: int, would_hold_t: int) -> None:
        super().__init__(f"the adjustment reserve would hold {would_hold_t} t of {unit}, above its limit of {limit_t} t")
        self.unit, self.limit_t, self.would_hold_t = unit, limit_t, would_hold_t


class UnknownProject(RegistryError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"unknown CCER project {project_id!r}")
        self.project_id = project_id


class ProjectExists(RegistryError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"CCER project {project_id!r} is already registered with other attributes")
        self.project_id = project_id


class ExcludedProject(RegistryError):
    def __init__(self, project_id: str, reduction_kind: str) -> None:
        super().__init__(
            f"CCER project {project_id!r} reduces {reduction_kind} at a covered facility of the city: "
            "its reductions may not be used here"
        )
        self.project_id, self.reduction_kind = project_id, reduction_kind


class NoObligation(RegistryError):
    def __init__(self, account_id: str, year: int) -> None:
        super().__init__(f"no verified emissions are recorded for {account_id!r} in {year}")
        self.account_id, self.year = account_id, year


class ExceedsObligation(RegistryError):
    def __init__(self, account_id: str, year: int, remaining_t: int, wanted_t: int) -> None:
        super().__init__(f"{account_id!r} owes {remaining_t} t for {year}; {wanted_t} t offered")
        self.account_id, self.year, self.remaining_t, self.wanted_t = account_id, year, remaining_t, wanted_t


class OffsetCapExceeded(RegistryError):
    def __init__(self, account_id: str, year: int, limit_t: int, used_t: int, wanted_t: int) -> None:
        super().__init__(
            f"{account_id!r} may offset at most {limit_t} t of CCER for {year}: {used_t} t used, {wanted_t} t more asked"
        )
        self.account_id, self.year, self.limit_t, self.used_t, self.wanted_t = account_id, year, limit_t, used_t, wanted_t


class ShortfallOutstanding(RegistryError):
    def __init__(self, account_id: str, year: int, shortfall_t: int) -> None:
        super().__init__(f"{account_id!r} still owes {shortfall_t} t for {year}: its allowances can't be banked")
        self.account_id, self.year, self.shortfall_t = account_id, year, shortfall_t


class NotAnAllocation(RegistryError):
    def __init__(self, seq: int) -> None:
        super().__init__(f"registry entry {seq} is not an allocation")
        self.seq = seq


class EmissionsCorrectionRefused(RegistryError):
    def __init__(self, account_id: str, year: int, why: str) -> None:
        super().__init__(f"verified emissions of {account_id!r} for {year} can't be set: {why}")
        self.account_id, self.year = account_id, year
