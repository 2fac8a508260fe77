"""Units and their bounds: money in fen, quantities in tonnes, all plain ``int``.

Every bound keeps values, and any notional (price x quantity), below 2**63 so that a
PostgreSQL ``BIGINT`` holds them. Decimal strings such as ``"58.20"`` appear only at the
edges (wire, reports, the CLI summary); :func:`format_fen` and :func:`parse_fen` are the one
exact conversion, never through ``float``.

A trading day is an ISO date, ``YYYY-MM-DD``: :func:`parse_trading_day` is the one parser the
core, the operator API and the CLI share, so ``2026-13-45`` is refused everywhere alike. The
shape alone is not enough (a regular expression let ``2026-13-45`` open, trade and settle,
and then refuse every real date as not after it); nor is ``date.fromisoformat`` alone, which
also takes ``20261204`` and ``2026-W49-5`` from Python 3.11 on.
"""

from __future__ import annotations

import re
from datetime import date

FEN_PER_YUAN = 100
BASIS_POINTS = 10_000

MAX_PRICE_FEN = 100_000_000  # 1,000,000.00 CNY per tonne
MAX_QTY_T = 1_000_000_000  # a billion tonnes, far above any city cap
MAX_NOTIONAL_FEN = MAX_PRICE_FEN * MAX_QTY_T  # 1e17 < 2**63 (9.2e18)
MAX_ID = 2**63 - 1

assert MAX_NOTIONAL_FEN < 2**63


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half away from zero for non-negative inputs."""
    assert numerator >= 0 and denominator > 0
    return (2 * numerator + denominator) // (2 * denominator)


def round_half_up_to_tick(numerator: int, denominator: int, tick: int) -> int:
    """The multiple of ``tick`` nearest to ``numerator / denominator``, halves rounded up."""
    return round_half_up(numerator, denominator * tick) * tick


def price_band(prev_close_fen: int, band_bps: int, tick_fen: int) -> tuple[int, int]:
    """The day's (lower, upper) price limits: previous close x (1 -/+ band), half-up to tick.

    The lower limit never falls below one tick: a price must stay positive.
    """
    assert prev_close_fen > 0 and 0 <= band_bps < BASIS_POINTS and tick_fen > 0
    lower = round_half_up_to_tick(prev_close_fen * (BASIS_POINTS - band_bps), BASIS_POINTS, tick_fen)
    upper = round_half_up_to_tick(prev_close_fen * (BASIS_POINTS + band_bps), BASIS_POINTS, tick_fen)
    return max(lower, tick_fen), min(upper, MAX_PRICE_FEN - MAX_PRICE_FEN % tick_fen)


def format_fen(amount_fen: int, grouped: bool = False) -> str:
    """``5820`` -> ``"58.20"`` (``grouped``: ``"1,115,449,997.66"``); exact, for the edges only."""
    sign = "-" if amount_fen < 0 else ""
    yuan, fen = divmod(abs(amount_fen), FEN_PER_YUAN)
    return f"{sign}{yuan:,}.{fen:02d}" if grouped else f"{sign}{yuan}.{fen:02d}"


def parse_fen(text: str) -> int:
    """``"58.20"`` -> ``5820``; at most two decimal places, no exponent, no float.

    Raises ``ValueError`` naming the problem.
    """
    body = text.strip()
    negative = body.startswith("-")
    if negative:
        body = body[1:]
    whole, dot, frac = body.partition(".")
    if not whole.isdigit() or (dot and not frac.isdigit()) or not whole.isascii() or not frac.isascii():
        raise ValueError(f"not a decimal amount with at most two places: {text!r}")
    if len(frac) > 2:
        raise ValueError(f"more than two decimal places: {text!r}")
    value = int(whole) * FEN_PER_YUAN + int(frac.ljust(2, "0") or "0")
    return -value if negative else value


_DAY_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits: ``\d`` takes any script's


def parse_trading_day(text: str) -> date:
    """``"2026-12-04"`` -> that date; a calendar date in the canonical ``YYYY-MM-DD`` form only.

    Raises ``ValueError`` naming the problem (the shape, or why the calendar has no such day).
    """
    if not isinstance(text, str) or not _DAY_SHAPE.fullmatch(text):
        raise ValueError(f"a trading day is a date written YYYY-MM-DD, not {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"{text} is not a date on the calendar ({error})") from None


def is_trading_day(text: str) -> bool:
    """Whether ``text`` is a date that :func:`parse_trading_day` accepts."""
    try:
        parse_trading_day(text)
    except ValueError:
        return False
    return True
