import datetime as dt
from collections import Counter
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.util import assert_that

from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import Transaction
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.rules import load_rules, parse_rules

SAMPLE = Path(__file__).parents[2] / "data" / "sample"


def test_rule_weights_combine_as_a_noisy_or():
    tx = Transaction("t-1", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "b", "u", "a", "m",
                     "merchant", "PAYMENT", 1000, "EUR")

    def score(*weights: float) -> float:
        rules = parse_rules({"rules": [
            {"id": f"r{i}", "weight": w, "when": {"field": "amount_cents", "op": ">",
                                                  "value": 0}}
            for i, w in enumerate(weights)]})
        (value,) = kernel.detect(kernel.table_of([tx]), kernel.Decider(rules))["score"] \
            .to_pylist()
        return value

    assert score() == 0.0
    assert score(0.5, 0.5) == 0.75
    assert score(1.0, 0.1) == 1.0
    assert score(0.3) == 0.3
    assert score(0.1, 0.2, 0.3) == round(1 - 0.9 * 0.8 * 0.7, 6)


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
