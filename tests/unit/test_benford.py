import datetime as dt

import apache_beam as beam
import numpy as np
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue

from fraud_detection.records import Transaction
from fraud_detection.transforms.benford import (
    EXPECTED_FIRST,
    INSUFFICIENT,
    BenfordReports,
    benford_test,
    leading_digits,
)


def test_leading_digits_are_exact_at_powers_of_ten():
    assert leading_digits([1, 10, 100, 999, 1000, 5]).tolist() == [1, 1, 1, 9, 1, 5]
    assert leading_digits([9, 10, 100, 1999], digits=2).tolist() == [10, 10, 19]


def test_benford_sample_conforms_and_uniform_does_not():
    rng = np.random.default_rng(1)
    benford = np.rint(10 ** rng.uniform(2, 7, 20_000)).astype(np.int64)
    uniform = rng.integers(100, 1_000, 20_000)
    assert benford_test(benford).level == "close"
    assert benford_test(benford, 2).level in ("close", "acceptable")
    assert benford_test(uniform).level == "nonconformity"
    assert benford_test(uniform).chi_square > 1_000
    exact = benford_test([d for d in range(1, 10) for _ in range(round(EXPECTED_FIRST[d - 1]
                                                                         * 10_000))])
    assert exact.mad < 1e-4


def test_reports_per_bank_and_account_per_window():
    rng = np.random.default_rng(2)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    txs = []
    for i, amount in enumerate(np.rint(10 ** rng.uniform(2, 6, 3_000)).astype(int)):
        txs.append(Transaction(
            f"t{i}", t0 + dt.timedelta(minutes=i), "bank-1", "u", f"a-{i % 2}", "m",
            "merchant", "PAYMENT", int(amount), "EUR"))
    txs.append(Transaction("late", t0 + dt.timedelta(days=40), "bank-1", "u", "a-0", "m",
                           "merchant", "PAYMENT", 9_500_00, "EUR"))

    def check(reports):
        banks = [r for r in reports if r.scope == "bank" and r.first.n == 3000]
        assert len(banks) == 1 and banks[0].level in ("close", "acceptable")
        assert banks[0].first_two.n == 3000
        accounts = [r for r in reports if r.scope == "account" and r.first.n == 1500]
        assert len(accounts) == 2
        tiny = [r for r in reports if r.first.n == 1]
        assert tiny and all(r.level == INSUFFICIENT for r in tiny)

    with beam.Pipeline("FnApiRunner") as p:
        reports = (p | beam.Create(txs)
                   | beam.Map(lambda t: TimestampedValue(t, t.event_time.timestamp()))
                   | BenfordReports(window_days=30))
        assert_that(reports, check)
