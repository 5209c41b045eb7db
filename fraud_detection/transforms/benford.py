"""Benford's-law statistics: first-digit and first-two-digit tests (Nigrini)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import FixedWindows

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
    values = np.asarray(amounts, dtype=np.int64)
    values = values[values >= 10 ** (digits - 1)]
    # Integer arithmetic: float log10 misplaces exact powers of ten.
    width = np.char.str_len(values.astype(str))
    return values // (10 ** (width - digits).astype(np.int64))


def benford_test(amounts: Iterable[int] | np.ndarray, digits: int = 1) -> BenfordResult:
    """MAD and chi-square of amounts' leading digits against Benford's law."""
    if digits not in (1, 2):
        raise ValueError("digits must be 1 or 2")
    return result_from_counts(np.bincount(leading_digits(amounts, digits), minlength=100),
                              digits)


def result_from_counts(counts: np.ndarray, digits: int = 1) -> BenfordResult:
    """The test from counts indexed by leading digit(s), e.g. a combiner's accumulator."""
    support = FIRST_DIGITS if digits == 1 else FIRST_TWO_DIGITS
    expected = EXPECTED_FIRST if digits == 1 else EXPECTED_FIRST_TWO
    levels = MAD_LEVELS_FIRST if digits == 1 else MAD_LEVELS_FIRST_TWO
    observed_counts = np.asarray(counts)[support[0]:support[-1] + 1]
    n = int(observed_counts.sum())
    observed = observed_counts / n if n else np.zeros_like(expected)
    mad = float(np.mean(np.abs(observed - expected)))
    chi_square = (float(np.sum((observed_counts - n * expected) ** 2 / (n * expected)))
                  if n else 0.0)
    level = next((name for bound, name in levels if mad <= bound), NONCONFORMITY)
    return BenfordResult(
        test="first" if digits == 1 else "first_two", n=n,
        observed=tuple(float(x) for x in observed), expected=tuple(float(x) for x in expected),
        mad=mad, chi_square=chi_square, level=level,
    )


MIN_SAMPLE = 300  # below this, MAD says more about the sample size than the data
INSUFFICIENT = "insufficient_sample"


@dataclass(frozen=True)
class BenfordReport:
    scope: str  # "bank" or "account"
    key: str
    window_start: str  # ISO dates of the fixed window
    window_end: str
    first: BenfordResult
    first_two: BenfordResult

    @property
    def level(self) -> str:
        return INSUFFICIENT if self.first.n < MIN_SAMPLE else self.first.level


def two_digit_prefix(amount: int) -> int | None:
    """The first two digits of an amount in minor units (10..99), None under 10."""
    return int(str(amount)[:2]) if amount >= 10 else None


def first_digit_counts(two_digit_counts: np.ndarray) -> np.ndarray:
    first = np.zeros(10, dtype=np.int64)
    np.add.at(first, np.arange(10, 100) // 10, np.asarray(two_digit_counts)[10:])
    return first


def window_index(epoch_seconds: float, window_days: int) -> int:
    """The fixed window (aligned to the epoch, like Beam's FixedWindows) of a moment."""
    return int(epoch_seconds // (window_days * 86_400))


class LeadingDigitCounts(beam.CombineFn):
    """Counts of first-two-digit prefixes; first digits are derived from them."""

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(100, dtype=np.int64)

    def add_input(self, acc: np.ndarray, amount: int) -> np.ndarray:
        prefix = two_digit_prefix(amount)
        if prefix is not None:
            acc[prefix] += 1
        return acc

    def merge_accumulators(self, accs) -> np.ndarray:
        return np.sum(list(accs), axis=0)

    def extract_output(self, acc: np.ndarray) -> np.ndarray:
        return acc


def _report(scope: str, window_days: int):
    def build(element, window=beam.DoFn.WindowParam) -> BenfordReport:
        key, two_digit_counts = element
        first = first_digit_counts(two_digit_counts)
        return BenfordReport(
            scope=scope, key=key,
            window_start=window.start.to_utc_datetime().date().isoformat(),
            window_end=window.end.to_utc_datetime().date().isoformat(),
            first=result_from_counts(first, 1),
            first_two=result_from_counts(two_digit_counts, 2))
    return build


class BenfordReports(beam.PTransform):
    """Transactions (event-time stamped) -> BenfordReport per bank and per account per window.

    Amounts under 10 minor units have no two leading digits and are left out of both
    tests, so the two tests count the same population.
    """

    def __init__(self, window_days: int = 30) -> None:
        super().__init__()
        self.window_days = window_days

    def expand(self, transactions):
        windowed = transactions | "Window" >> beam.WindowInto(
            FixedWindows(self.window_days * 86_400))
        reports = []
        for scope, key_of in (("bank", lambda t: t.bank_id), ("account", lambda t: t.account_id)):
            reports.append(
                windowed
                | f"Key{scope}" >> beam.Map(lambda t, k=key_of: (k(t), t.amount_cents))
                | f"Count{scope}" >> beam.CombinePerKey(LeadingDigitCounts())
                | f"Report{scope}" >> beam.Map(_report(scope, self.window_days)))
        return reports | "All" >> beam.Flatten()
