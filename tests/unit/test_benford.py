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


def test_an_account_that_broke_benford_last_window_carries_the_verdict():
    from fraud_detection.transforms import kernel
    from fraud_detection.transforms.benford import MIN_SAMPLE, window_index
    from fraud_detection.transforms.kernel import BENFORD_WINDOW_DAYS

    rng = np.random.default_rng(3)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    window_end = dt.datetime.fromtimestamp(
        (window_index(start.timestamp(), BENFORD_WINDOW_DAYS) + 1) * BENFORD_WINDOW_DAYS * 86_400,
        dt.UTC)

    def history_with(amounts) -> list[Transaction]:
        history = []
        for i, amount in enumerate(amounts):
            moment = start + dt.timedelta(minutes=i)
            assert moment < window_end
            history.append(Transaction(f"t{i}", moment, "b", "u", "a", "m", "merchant",
                                       "PAYMENT", int(amount), "EUR"))
        return history

    def next_window_flag(history: list[Transaction]) -> bool:
        later = Transaction("next", window_end + dt.timedelta(days=1), "b", "u", "a", "m",
                            "merchant", "PAYMENT", 1234, "EUR")
        # The account's state after its history, then the next window's transaction...
        _, states = kernel.account_step(kernel.table_of(history), None)
        featured, _ = kernel.account_step(kernel.table_of([later]), states)
        (carried,) = featured["benford_nonconforming"].to_pylist()
        # ...or all of it in one batch: the same verdict.
        whole, _ = kernel.account_step(kernel.table_of([*history, later]), None)
        flags = dict(zip(whole["transaction_id"].to_pylist(),
                         whole["benford_nonconforming"].to_pylist(), strict=True))
        assert flags["next"] == carried
        assert not any(flag for tx_id, flag in flags.items() if tx_id != "next")  # same window
        return carried

    conforming = np.rint(10 ** rng.uniform(2, 6, MIN_SAMPLE + 50))
    invented = rng.integers(900_000, 999_999, MIN_SAMPLE + 50)  # every amount starts with 9
    assert not next_window_flag(history_with(conforming))
    assert next_window_flag(history_with(invented))
    assert not next_window_flag(history_with(invented[:MIN_SAMPLE - 1]))  # too few to judge
    # The same amounts through BenfordReports give the same verdict for that window.
    assert benford_test(invented).level == "nonconformity"
    assert benford_test(conforming).level != "nonconformity"
