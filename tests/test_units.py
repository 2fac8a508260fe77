"""Units: exact fen arithmetic, half-up rounding, the price band, decimal strings at the edge."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.model.units import (
    MAX_PRICE_FEN,
    format_fen,
    parse_fen,
    price_band,
    round_half_up,
    round_half_up_to_tick,
)


@given(st.integers(0, 10**15), st.integers(1, 10**9))
def test_round_half_up_matches_exact_fractions(numerator: int, denominator: int) -> None:
    exact = Fraction(numerator, denominator)
    rounded = round_half_up(numerator, denominator)
    assert abs(exact - rounded) <= Fraction(1, 2)
    if exact - int(exact) == Fraction(1, 2):
        assert rounded == int(exact) + 1  # halves go up


@pytest.mark.parametrize(
    ("numerator", "denominator", "tick", "expected"),
    [(5_825, 1, 5, 5_825), (5_827, 1, 5, 5_825), (11_655, 2, 5, 5_830), (5_822, 1, 5, 5_820)],
)
def test_round_half_up_to_tick(numerator: int, denominator: int, tick: int, expected: int) -> None:
    assert round_half_up_to_tick(numerator, denominator, tick) == expected


@pytest.mark.parametrize(
    ("close", "band_bps", "tick", "expected"),
    [
        (5_820, 1_000, 1, (5_238, 6_402)),  # 58.20 -> 52.38 .. 64.02
        (5_825, 1_000, 1, (5_243, 6_408)),  # 5242.5 and 6407.5 round half up
        (10_000, 1_000, 5, (9_000, 11_000)),
        (1, 1_000, 1, (1, 1)),  # never below one tick
    ],
)
def test_price_band(close: int, band_bps: int, tick: int, expected: tuple[int, int]) -> None:
    assert price_band(close, band_bps, tick) == expected


@given(st.integers(1, MAX_PRICE_FEN // 2), st.integers(0, 5_000))
def test_band_contains_the_close(close: int, band_bps: int) -> None:
    lower, upper = price_band(close, band_bps, 1)
    assert 1 <= lower <= close <= upper <= MAX_PRICE_FEN


@given(st.integers(-(10**17), 10**17))
def test_format_and_parse_round_trip(amount: int) -> None:
    assert parse_fen(format_fen(amount)) == amount
    assert parse_fen(format_fen(amount, grouped=True).replace(",", "")) == amount


@pytest.mark.parametrize(("text", "fen"), [("58.20", 5_820), ("58.2", 5_820), ("58", 5_800), ("0.01", 1), ("-1.50", -150)])
def test_parse_fen(text: str, fen: int) -> None:
    assert parse_fen(text) == fen


@pytest.mark.parametrize("text", ["58.205", "1e3", "", ".5", "58.", "5,8", "nan", "１２"])
def test_parse_fen_refuses_what_is_not_an_exact_amount(text: str) -> None:
    with pytest.raises(ValueError, match="decimal|places"):
        parse_fen(text)
