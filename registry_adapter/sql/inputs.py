"""Checks of the arguments an operation is called with, made before any database work."""

from __future__ import annotations

import enum
import re
from typing import TypeVar

from registry_adapter.sql.errors import InvalidInput, InvalidQuantity, UnknownUnit
from registry_adapter.sql.vocabulary import CCER, FIRST_YEAR, LAST_YEAR, MAX_QTY_T, vintage_of


def check_unit(unit: str) -> str:
    if unit != CCER and vintage_of(unit) is None:
        raise UnknownUnit(unit)
    return unit


def check_allowance(unit: str) -> int:
    year = vintage_of(unit)
    if year is None:
        raise UnknownUnit(unit, "an allowance unit CEA-YYYY")
    return year


def check_quantity(qty_t: object, allow_zero: bool = False) -> int:
    if type(qty_t) is not int or not (0 if allow_zero else 1) <= qty_t <= MAX_QTY_T:
        raise InvalidQuantity(qty_t)
    return qty_t


def check_year(year: object) -> int:
    if type(year) is not int or not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInput(f"year {year!r} is not between {FIRST_YEAR} and {LAST_YEAR}")
    return year


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInput(f"{what} {value!r} must be a non-empty string of at most 200 characters")
    return value


OPERATION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def check_operation_id(value: object) -> str:
    """An authority's operation id: 1 to 64 of letters, digits and _ . : - (as the exchange's
    payment references), so it prints and greps cleanly in the history."""
    if not isinstance(value, str) or not OPERATION_ID.fullmatch(value):
        raise InvalidInput(f"operation id {value!r} must be 1 to 64 of letters, digits and _ . : -")
    return value


E = TypeVar("E", bound=enum.StrEnum)


def parse_enum(kind: type[E], value: str, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise InvalidInput(f"{what} {value!r} is not one of: {choices}") from None
