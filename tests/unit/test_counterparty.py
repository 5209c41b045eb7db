import datetime as dt

import apache_beam as beam
from apache_beam.testing.util import assert_that

from fraud_detection.records import Transaction
from fraud_detection.transforms.counterparty import (
    MIN_TRANSACTIONS,
    CounterpartyHistory,
    LabelEvent,
)
from fraud_detection.transforms.detect import FeatureTransactions

T0 = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def test_labels_count_only_after_the_delay_and_within_the_window():
    history = CounterpartyHistory(delay_days=7, window_days=14)
    for i in range(20):
        history.add_transaction(day(0), "compromised_merchant" if i < 5 else "legit")
    assert history.risk(day(0)) == 0.0
    assert history.risk(day(6)) == 0.0  # the frauds are not confirmed yet
    assert history.risk(day(7.5)) == 0.25
    assert history.risk(day(20)) == 0.25  # day 0 is still inside [day 6, day 20)
    assert history.risk(day(22)) == 0.0  # and now it has left the window


def test_too_few_transactions_say_nothing():
    history = CounterpartyHistory(delay_days=1, window_days=7)
    for _ in range(MIN_TRANSACTIONS - 1):
        history.add_transaction(day(0), "card_testing")
    assert history.risk(day(2)) == 0.0
    history.add_transaction(day(0), "legit")
    assert history.risk(day(2)) == round((MIN_TRANSACTIONS - 1) / MIN_TRANSACTIONS, 6)


def test_streaming_label_events_count_once_for_the_transaction_day():
    history = CounterpartyHistory(delay_days=2, window_days=7)
    for _ in range(10):
        history.add_transaction(day(0), None)  # live transactions carry no label
    event = LabelEvent("t-1", "m-1", day(0), "compromised_merchant", day(1))
    history.add_label(event)
    history.add_label(event)  # an analyst's verdict delivered twice
    assert history.risk(day(3)) == 0.1


def test_state_is_pruned_to_the_delay_plus_the_window():
    history = CounterpartyHistory(delay_days=7, window_days=28)
    for n in range(200):
        history.add_transaction(day(n), "legit")
    assert len(history.days) <= 7 + 28 + 1


def test_pipeline_gives_a_compromised_merchant_a_risk_after_the_delay():
    def tx(i: int, when: dt.datetime, merchant: str, label: str) -> Transaction:
        return Transaction(f"t-{i:04d}", when, "b", f"u-{i % 7}", f"a-{i % 7}", merchant,
                           "merchant", "PAYMENT", 1000, "EUR", label=label)

    txs = [tx(i, day(i / 10), "m-bad" if i % 2 else "m-good",
              "compromised_merchant" if i % 2 and i < 100 else "legit") for i in range(300)]

    def check(featured):
        risk = {(f.transaction.counterparty_id, f.transaction.event_time.date()):
                f.features.counterparty_risk for f in featured}
        assert risk[("m-bad", day(2).date())] == 0.0  # nothing confirmed yet
        assert risk[("m-bad", day(12).date())] > 0.5
        assert max(r for (m, _), r in risk.items() if m == "m-good") == 0.0

    with beam.Pipeline("FnApiRunner") as p:
        featured = p | beam.Create(txs) | FeatureTransactions(delay_days=7, window_days=28)
        assert_that(featured | beam.combiners.ToList(), lambda lists: check(lists[0]))
