import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest

from fraud_detection import model
from fraud_detection.evaluation import precision_at_k_per_day
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import COUNTERPARTY_TYPES, LEGIT, TX_TYPES, Transaction
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.rules import load_rules
from tests.unit.kernel_rows import collect, expected_decision, featured_rows

SAMPLE = Path(__file__).parents[2] / "data" / "sample"


@pytest.fixture(scope="module")
def table():
    sample = read_transactions(SAMPLE)
    return sample.filter(np.array([t.day <= 10 for t in sample["event_time"].to_pylist()]))


@pytest.fixture(scope="module")
def training(table):
    """The training table: detection's own features, as `features` exports them."""
    out = kernel.detect(table, kernel.Decider(load_rules()), features_only=True)
    return out.sort_by("transaction_id")


def _matrix(training) -> np.ndarray:
    return np.column_stack([training[name].to_numpy() for name in model.MODEL_FEATURES])


@pytest.fixture(scope="module")
def model_dir(training, tmp_path_factory) -> Path:
    fraud = np.array([label != LEGIT for label in training["label"].to_pylist()], dtype=int)
    folder = tmp_path_factory.mktemp("model")
    model.save(model.train(_matrix(training), fraud), folder, len(fraud), int(fraud.sum()))
    return folder


def test_a_saved_model_loads_with_its_version_and_features(model_dir: Path) -> None:
    trained, info = model.load(model_dir)
    assert info.features == model.MODEL_FEATURES and info.train_frauds > 0
    assert hasattr(trained, "predict_proba")


def test_a_model_trained_on_other_features_is_refused(model_dir: Path, tmp_path: Path) -> None:
    info = json.loads((model_dir / model.INFO_FILE).read_text())
    info["features"] = info["features"][:-1]
    (tmp_path / model.INFO_FILE).write_text(json.dumps(info))
    (tmp_path / model.MODEL_FILE).write_bytes((model_dir / model.MODEL_FILE).read_bytes())
    with pytest.raises(model.ModelError, match="retrain"):
        model.load_info(tmp_path)
    with pytest.raises(model.ModelError, match="no model in"):
        model.load_info(tmp_path / "missing")


def test_a_model_keeps_its_feature_settings_and_serving_follows_them(
        training, tmp_path: Path, caplog) -> None:
    rules = load_rules()
    fraud = np.array([label != LEGIT for label in training["label"].to_pylist()], dtype=int)
    settings = model.FeatureSettings.of(rules, 3, 14)
    model.save(model.train(_matrix(training), fraud), tmp_path, len(fraud), int(fraud.sum()),
               settings=settings)
    info = model.load_info(tmp_path)
    assert info.settings == settings
    assert info.check_settings(settings, "here") is None
    with pytest.raises(model.ModelError, match="label_delay_days 7 against 3"):
        info.check_settings(model.FeatureSettings.of(rules, 7, 14), "here")
    assert "other rules" in info.check_settings(model.FeatureSettings.of(rules[1:], 3, 14),
                                                "here")
    # A pipeline that sets neither takes the model's; one that sets another is refused.
    served = DetectFraud(rules, model_dir=tmp_path)
    served._check_model()
    assert (served.delay_days, served.window_days) == (3, 14)
    with pytest.raises(model.ModelError, match="counterparty_window_days 28 against 14"):
        DetectFraud(rules, model_dir=tmp_path, window_days=28)._check_model()
    with caplog.at_level("WARNING"):
        DetectFraud(rules[1:], model_dir=tmp_path)._check_model()
    assert "other rules" in caplog.text


def test_detect_fraud_scores_with_the_model(table, training, model_dir: Path,
                                           tmp_path: Path) -> None:
    rules = load_rules()
    trained, info = model.load(model_dir)
    probabilities = dict(zip(training["transaction_id"].to_pylist(),
                             trained.predict_proba(_matrix(training))[:, 1].tolist(),
                             strict=True))
    rows = featured_rows(table)
    expected = {}
    for tx_id, row in rows.items():
        values = {k: row[k] for k in (*kernel.TRANSACTION_SCHEMA.names, *kernel.FEATURE_NAMES)}
        expected[tx_id] = expected_decision(values, rules, 0.5, probabilities[tx_id],
                                            info.version)
    transactions = [Transaction(**r) for r in table.to_pylist()]
    scored = collect(lambda p: p | beam.Create(transactions)
                     | DetectFraud(rules, 0.5, model_dir=model_dir), tmp_path / "scored")
    assert len(scored) == len(transactions)
    assert {s.transaction.transaction_id for s in scored} == set(expected)
    for s in scored:
        score, flagged, reasons = expected[s.transaction.transaction_id]
        assert s.model_version == info.version
        assert s.score == pytest.approx(score, abs=1e-9)
        assert (s.flagged, s.reasons) == (flagged, reasons)
        assert any(r.startswith(f"model {info.version}") for r in s.reasons)
    # Without the model, rules alone: other scores.
    rules_only = kernel.detect(table, kernel.Decider(rules, 0.5))
    assert not any(r.startswith("model ") for rs in rules_only["reasons"].to_pylist()
                   for r in rs)
    with_model = {s.transaction.transaction_id: s.score for s in scored}
    assert any(with_model[t] != s for t, s in zip(rules_only["transaction_id"].to_pylist(),
                                                  rules_only["score"].to_pylist(), strict=True))


def test_precision_at_k_counts_each_caught_account_once() -> None:
    days = np.array([1, 1, 1, 2, 2, 2])
    accounts = np.array(["a", "b", "c", "a", "b", "c"], dtype=object)
    scores = np.array([0.9, 0.8, 0.1, 0.9, 0.7, 0.2])
    fraud = np.array([True, False, False, True, True, False])
    # Day 1: top 2 = a (fraud), b -> 1/2. Day 2: a is blocked; top 2 = b (fraud), c -> 1/2.
    assert precision_at_k_per_day(days, accounts, scores, fraud, k=2) == 0.5


def test_features_reach_the_model_matrix_in_order(table) -> None:
    featured, _ = kernel.account_step(table.slice(0, 40), None, keep_state=False)
    features = kernel.features_of(featured)
    features.update((name, np.full(featured.num_rows, 0.25))
                    for name in kernel.COUNTERPARTY_FEATURES)
    matrix = kernel.model_matrix(featured, features, np.full(featured.num_rows, 0.5))
    assert matrix.shape == (40, len(model.MODEL_FEATURES))
    column = {name: matrix[:, i] for i, name in enumerate(model.MODEL_FEATURES)}
    assert (column["counterparty_risk"] == 0.25).all()
    assert (column["rules_score"] == 0.5).all()
    for name in kernel.ACCOUNT_FEATURES:
        assert column[name].tolist() == [float(v) for v in featured[name].to_pylist()], name
    assert column["hour"].tolist() == [t.hour for t in featured["event_time"].to_pylist()]
    for i, (kind, cp_kind) in enumerate(zip(featured["tx_type"].to_pylist(),
                                            featured["counterparty_type"].to_pylist(),
                                            strict=True)):
        assert [column[f"tx_type_{t}"][i] for t in TX_TYPES] == \
            [float(t == kind) for t in TX_TYPES]
        assert [column[f"counterparty_type_{t}"][i] for t in COUNTERPARTY_TYPES] == \
            [float(t == cp_kind) for t in COUNTERPARTY_TYPES]
