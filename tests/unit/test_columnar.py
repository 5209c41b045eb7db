"""The columnar batch path against the per-element path that streaming runs."""

import datetime as dt
import pickle
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraud_detection import model
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import LEGIT, Transaction
from fraud_detection.transforms import columnar
from fraud_detection.transforms.detect import DetectFraud, DetectFraudTables
from fraud_detection.transforms.features import FEATURE_NAMES, AccountHistory
from fraud_detection.transforms.rules import evaluate, load_rules, parse_rules

SAMPLE = Path(__file__).parents[2] / "data" / "sample"


@pytest.fixture(scope="module")
def table():
    sample = read_transactions(SAMPLE)
    return sample.filter(np.array([t.day <= 12 for t in sample["event_time"].to_pylist()]))


@pytest.fixture(scope="module")
def model_dir(table, tmp_path_factory) -> Path:
    ordered = columnar.in_account_order(table)
    features = columnar.account_features(ordered)
    features["counterparty_risk"] = columnar.counterparty_risk(
        ordered, columnar.counterparty_days(ordered))
    fraud = np.array([label != LEGIT for label in ordered["label"].to_pylist()], dtype=int)
    folder = tmp_path_factory.mktemp("model")
    model.save(model.train(columnar.model_matrix(ordered, features), fraud), folder,
               len(fraud), int(fraud.sum()))
    return folder


def _dump(items: list, path: str) -> None:
    Path(path).write_bytes(pickle.dumps(items))


def _outcome(scored) -> tuple:
    return (scored.transaction.transaction_id, scored.score, scored.flagged, scored.reasons,
            scored.late, scored.model_version)


def _run(build, out: Path) -> list:
    with beam.Pipeline("FnApiRunner") as p:
        _ = (build(p) | beam.Map(_outcome) | beam.combiners.ToList()
             | beam.Map(_dump, str(out)))
    return sorted(pickle.loads(out.read_bytes()))


def test_columnar_detection_equals_the_per_element_path(table, model_dir, tmp_path) -> None:
    rules = load_rules()
    transactions = [Transaction(**r) for r in table.to_pylist()]
    per_element = _run(lambda p: p | beam.Create(transactions)
                       | DetectFraud(rules, 0.5, model_dir=model_dir), tmp_path / "a")
    # Tables cut across accounts and days, as Parquet row groups are.
    parts = [table.slice(i, 3000) for i in range(0, table.num_rows, 3000)]
    columnar_path = _run(lambda p: p | beam.Create(parts)
                         | DetectFraudTables(rules, 0.5, model_dir=model_dir, shards=4)
                         | beam.FlatMap(columnar.scored_records), tmp_path / "b")
    assert len(columnar_path) == table.num_rows
    assert columnar_path == per_element
    assert any(outcome[2] for outcome in columnar_path)  # something was flagged


def test_rules_over_columns_equal_rules_over_records(table) -> None:
    rules = parse_rules({"rules": [
        {"id": "any_not", "when": {"any": [
            {"field": "tx_type", "op": "in", "value": ["CASH_OUT", "TRANSFER"]},
            {"not": {"field": "night", "op": "==", "value": True}}]}},
        {"id": "nullable", "when": {"field": "balance_after_cents", "op": "between",
                                    "value": [0, 50_000]}},
        {"id": "string_vs_number", "when": {"field": "tx_type", "op": ">", "value": 3}},
        {"id": "number_vs_string", "when": {"field": "amount_cents", "op": "==",
                                            "value": "PAYMENT"}},
        {"id": "not_equal", "when": {"field": "counterparty_type", "op": "!=",
                                     "value": "merchant"}},
        {"id": "round", "when": {"all": [
            {"field": "amount_cents", "op": "multiple_of", "value": 1000},
            {"field": "amount_zscore", "op": "<=", "value": 1.5}]}},
        {"id": "missing_field", "when": {"field": "no_such_field", "op": ">", "value": 0}},
        {"id": "paused", "when": {"field": "amount_cents", "op": ">", "value": 0},
         "paused": True},
    ]})
    ordered = columnar.in_account_order(table)
    features = columnar.account_features(ordered)
    features["counterparty_risk"] = np.zeros(ordered.num_rows)
    by_column = columnar.rule_hits(rules, ordered, features)
    for row, record in enumerate(ordered.to_pylist()):
        values = {**record, **{name: features[name][row].item() for name in FEATURE_NAMES}}
        assert by_column.get(row, []) == evaluate(rules, values), record["transaction_id"]


def test_an_account_with_more_counterparties_than_remembered_is_replayed_exactly() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    # 1,200 distinct counterparties, then the first ones again: forgotten, so new again.
    payees = [f"m{i}" for i in range(1200)] + [f"m{i}" for i in range(5)] + ["m1199"]
    transactions = [Transaction(
        transaction_id=f"t{i:05d}", event_time=start + dt.timedelta(minutes=i), bank_id="b",
        user_id="u", account_id="a", counterparty_id=payee, counterparty_type="merchant",
        tx_type="PAYMENT", amount_cents=1000 + i, currency="EUR")
        for i, payee in enumerate(payees)]
    history = AccountHistory()
    expected = [history.observe(t) for t in transactions]
    features = columnar.account_features(columnar.table_of(transactions))
    for name in FEATURE_NAMES:
        if name != "counterparty_risk":
            assert features[name].tolist() == [getattr(f, name) for f in expected], name
    assert features["new_counterparty"][-6:].tolist() == [True] * 5 + [False]


def test_scored_records_round_trip_the_transaction(table) -> None:
    ordered = columnar.in_account_order(table.slice(0, 50))
    scored = columnar.score_table(ordered, load_rules(), 0.5,
                                  columnar.counterparty_days(ordered))
    records = list(columnar.scored_records(scored))
    assert [r.transaction.to_dict() for r in records] == ordered.to_pylist()
    assert all(0 <= r.score <= 1 and r.flagged == (r.score >= 0.5) for r in records)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e3, max_value=1e3),
    st.integers(-10**9, 10**9).map(lambda n: (n + 0.5) / 1e6),  # halves of the 6th decimal
    st.integers(-10**12, 10**12).map(lambda n: n / 7)), min_size=1, max_size=50))
def test_round6_is_pythons_round(values: list[float]) -> None:
    assert columnar.round6(np.array(values)).tolist() == [round(v, 6) for v in values]


def _feature_outcome(featured, rules) -> tuple:
    from fraud_detection.transforms.score import combine, rule_values

    hits = evaluate(rules, rule_values(featured))
    return (featured.transaction.transaction_id, combine([h.weight for h in hits]),
            tuple(model.model_vector(featured).tolist()))


def test_the_training_table_is_the_per_element_features(table, tmp_path) -> None:
    from fraud_detection.transforms.detect import FeatureTransactions

    rules = load_rules()
    transactions = [Transaction(**r) for r in table.to_pylist()]
    with beam.Pipeline("FnApiRunner") as p:
        _ = (p | beam.Create(transactions) | FeatureTransactions()
             | beam.Map(_feature_outcome, rules) | beam.combiners.ToList()
             | beam.Map(_dump, str(tmp_path / "a")))
    per_element = sorted(pickle.loads((tmp_path / "a").read_bytes()))
    features = columnar.feature_table(table, rules, columnar.counterparty_days(table))
    assert features.schema == columnar.FEATURE_TABLE_SCHEMA
    rows = features.to_pylist()
    tabled = sorted((r["transaction_id"], r["rules_score"],
                     tuple(r[name] for name in model.MODEL_FEATURES)) for r in rows)
    assert tabled == per_element
    assert any(score > 0 for _, score, _ in tabled)
