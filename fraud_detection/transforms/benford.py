"""Benford's-law statistics: first-digit and first-two-digit tests (Nigrini)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

FIRST_DIGITS = np.arange(1, 10)
FIRST_TWO_DIGITS = np.arange(10, 100)
EXPECTED_FIRST = np.log10(1 + 1 / FIRST_DIGITS)
EXPECTED_FIRST_TWO = np.log10(1 + 1 / FIRST_TWO_DIGITS)

# Nigrini's MAD conformity thresholds: (upper bound, level), checked in order.
MAD_LEVELS_FIRST = ((0.006, "close"), (0.012, "acceptable"), (0.015, "marginal"))
MAD_LEVELS_FIRST_TWO = ((0.0012, "close"), (0.0018, "acceptable"), (0.0022, "marginal"))
NONCONFORMITY = "nonconformity"


@dataclass(frozen=True)
class BenfordResult:
    test: str  # "first" or "first_two"
    n: int
    observed: tuple[float, ...]  # proportions per digit (or digit pair)
    expected: tuple[float, ...]
    mad: float
    chi_square: float
    level: str


def leading_digits(amounts: Iterable[int] | np.ndarray, digits: int = 1) -> np.ndarray:
    """The first `digits` significant digits of each positive amount; others dropped."""
    values = np.asarray(amounts, dtype=np.int64) if not isinstance(amounts, np.ndarray) \
        else amounts.astype(np.int64)
    values = values[values >= 10 ** (digits - 1)]
    # Integer arithmetic: float log10 misplaces exact powers of ten.
    width = np.char.str_len(values.astype(str))
    return values // (10 ** (width - digits).astype(np.int64))


def benford_test(amounts: Iterable[int] | np.ndarray, digits: int = 1) -> BenfordResult:
    """MAD and chi-square of amounts' leading digits against Benford's law."""
    if digits not in (1, 2):
        raise ValueError("digits must be 1 or 2")
    lead = leading_digits(amounts, digits)
    support = FIRST_DIGITS if digits == 1 else FIRST_TWO_DIGITS
    expected = EXPECTED_FIRST if digits == 1 else EXPECTED_FIRST_TWO
    levels = MAD_LEVELS_FIRST if digits == 1 else MAD_LEVELS_FIRST_TWO
    n = int(lead.size)
    counts = np.bincount(lead, minlength=support[-1] + 1)[support[0]:]
    observed = counts / n if n else np.zeros_like(expected)
    mad = float(np.mean(np.abs(observed - expected)))
    chi_square = float(np.sum((counts - n * expected) ** 2 / (n * expected))) if n else 0.0
    level = next((name for bound, name in levels if mad <= bound), NONCONFORMITY)
    return BenfordResult(
        test="first" if digits == 1 else "first_two", n=n,
        observed=tuple(float(x) for x in observed), expected=tuple(float(x) for x in expected),
        mad=mad, chi_square=chi_square, level=level,
    )
