from collections import Counter
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.util import assert_that

from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import Transaction
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.rules import load_rules
from fraud_detection.transforms.score import combine

SAMPLE = Path(__file__).parents[2] / "data" / "sample"


def test_combine_is_a_noisy_or():
    assert combine([]) == 0.0
    assert combine([0.5, 0.5]) == 0.75
    assert combine([1.0, 0.1]) == 1.0


def test_default_rules_catch_scenarios_more_than_legit_traffic():
    transactions = [Transaction(**r) for r in read_transactions(SAMPLE).to_pylist()]

    def check(scored):
        assert len(scored) == len(transactions)
        flagged, total = Counter(), Counter()
        for s in scored:
            total[s.transaction.label] += 1
            flagged[s.transaction.label] += s.flagged
            assert 0.0 <= s.score <= 1.0
            assert s.flagged == (s.score >= 0.5)
            assert bool(s.reasons) == (s.score > 0)
        rate = {label: flagged[label] / total[label] for label in total}
        assert rate["legit"] < 0.02, rate
        # Rules alone: spending spikes and compromised merchants need the model and
        # counterparty risk; these three have rules of their own.
        assert rate["structuring"] > 0.9, rate
        assert rate["card_testing"] > 0.3, rate
        assert rate["account_takeover"] > 0.2, rate

    with beam.Pipeline("FnApiRunner") as p:
        scored = (p | beam.Create(transactions)
                  | DetectFraud(load_rules(), threshold=0.5)
                  | beam.combiners.ToList())
        assert_that(scored, lambda lists: check(lists[0]))
