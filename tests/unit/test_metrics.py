"""The evaluation's metrics against small cases worked out by hand."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from fraud_detection.evaluation import (
    _result,
    bootstrap_interval,
    precision_at_k_by_day,
    precision_at_k_per_day,
)

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def test_account_precision_at_k_per_day_blocks_caught_accounts():
    days = np.array([D1, D1, D1, D2, D2], dtype=object)
    accounts = np.array(["a", "b", "c", "a", "b"], dtype=object)
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.6])
    fraud = np.array([True, False, False, True, True])
    # Day 1: a (0.9) and b (0.8) reviewed, a is fraud: 1/2; a is blocked from then on.
    # Day 2: a no longer counts; b is the only account left and is fraud: 1 of k=2.
    assert precision_at_k_by_day(days, accounts, scores, fraud, 2) == {D1: 0.5, D2: 0.5}
    assert precision_at_k_per_day(days, accounts, scores, fraud, 2) == 0.5
    # k=1: day 1 reviews a (fraud): 1; day 2 reviews b (fraud): 1.
    assert precision_at_k_per_day(days, accounts, scores, fraud, 1) == 1.0


def test_an_account_counts_once_a_day_at_its_highest_score():
    days = np.array([D1, D1, D1], dtype=object)
    accounts = np.array(["a", "a", "b"], dtype=object)
    scores = np.array([0.2, 0.95, 0.9])
    fraud = np.array([False, False, True])
    # a's best is 0.95, above b: the top 1 is a, which had no fraud.
    assert precision_at_k_by_day(days, accounts, scores, fraud, 1) == {D1: 0.0}


def test_a_flag_is_ranked_as_a_flag():
    # Frauds at rows 0 and 1, flagged rows 0 and 2. As a score, the flag has two levels:
    # at 1, precision 1/2 and recall 1/2; at 0, precision 2/4 and recall 1.
    # AP = 1/2 * 1/2 + (1 - 1/2) * 2/4 = 0.5.
    labels = np.array(["spending_spike", "account_takeover", "legit", "legit"], dtype=object)
    flagged = np.array([True, False, True, False])
    days = np.array([D1, D1, D2, D2], dtype=object)
    accounts = np.array(["a", "b", "c", "d"], dtype=object)
    result = _result("flag", flagged.astype(float), flagged, labels, days, accounts, 1)
    assert math.isclose(result.average_precision, 0.5)
    assert math.isclose(result.auc_roc, 0.5)
    assert result.legit_flagged == 0.5
    assert result.recall == {"account_takeover": 0.0, "spending_spike": 1.0}
    # Day 1 reviews a (fraud), day 2 reviews c (legit).
    assert result.precision_at_k == 0.5


def test_bootstrap_resamples_whole_groups():
    groups = np.array([1, 1, 2, 2, 3, 3])
    same = np.full(6, 0.25)
    assert bootstrap_interval(lambda rows: float(same[rows].mean()), groups) == (0.25, 0.25)
    values = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.5])
    low, high = bootstrap_interval(lambda rows: float(values[rows].mean()), groups, seed=3)
    assert 0.0 <= low < 0.5 < high <= 1.0
    # Three groups with means 0, 1 and 0.5, drawn whole: every resample's mean is a
    # multiple of 1/6 (drawing single rows would also give odd twelfths), and every
    # resample has six rows.
    seen = []
    bootstrap_interval(lambda rows: seen.append(rows) or 0.0, groups)
    assert all(len(rows) == 6 for rows in seen)
    assert all(math.isclose(values[rows].mean() * 6, round(values[rows].mean() * 6))
               for rows in seen)
    again = bootstrap_interval(lambda rows: float(values[rows].mean()), groups, seed=3)
    assert again == (low, high)


def test_undefined_resamples_are_left_out():
    groups = np.array([1, 2])
    values = np.array([1.0, 2.0])
    interval = bootstrap_interval(lambda rows: float("nan"), groups)
    assert all(math.isnan(x) for x in interval)
    low, high = bootstrap_interval(
        lambda rows: float(values[rows].mean()) if len(set(rows)) > 1 else float("nan"),
        groups)
    assert low == high == 1.5
