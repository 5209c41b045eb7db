import dataclasses
import json
import pickle
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from fraud_detection import model
from fraud_detection.evaluation import precision_at_k_per_day
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import LEGIT, Transaction
from fraud_detection.transforms.detect import DetectFraud, FeatureTransactions
from fraud_detection.transforms.rules import load_rules
from fraud_detection.transforms.score import decide

SAMPLE = Path(__file__).parents[2] / "data" / "sample"


@pytest.fixture(scope="module")
def sample() -> list[Transaction]:
    rows = read_transactions(SAMPLE).to_pylist()
    return [Transaction(**r) for r in rows if r["event_time"].day <= 10]


def _dump(items: list, path: str) -> None:
    Path(path).write_bytes(pickle.dumps(items))


@pytest.fixture(scope="module")
def featured(sample, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("featured") / "featured.pickle")
    with beam.Pipeline("FnApiRunner") as p:
        _ = (p | beam.Create(sample) | FeatureTransactions()
             | beam.combiners.ToList() | beam.Map(_dump, out))
    return sorted(pickle.loads(Path(out).read_bytes()),
                  key=lambda f: f.transaction.transaction_id)


@pytest.fixture(scope="module")
def model_dir(featured, tmp_path_factory) -> Path:
    vectors = np.stack([model.model_vector(f) for f in featured])
    fraud = np.array([f.transaction.label != LEGIT for f in featured], dtype=int)
    folder = tmp_path_factory.mktemp("model")
    model.save(model.train(vectors, fraud), folder, len(fraud), int(fraud.sum()))
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


def test_detect_fraud_scores_with_the_model_through_run_inference(
        sample, featured, model_dir: Path) -> None:
    rules = load_rules()
    trained, info = model.load(model_dir)
    expected = {}
    for f in featured:
        probability = float(trained.predict_proba(model.model_vector(f)[None, :])[0, 1])
        expected[f.transaction.transaction_id] = decide(f, rules, 0.5, probability,
                                                        info.version)

    def check(scored):
        assert len(scored) == len(sample)
        for s in scored:
            want = expected[s.transaction.transaction_id]
            assert s.model_version == info.version
            assert s.score == pytest.approx(want.score, abs=1e-9)
            assert s.reasons == want.reasons
            assert any(r.startswith(f"model {info.version}") for r in s.reasons)

    with beam.Pipeline("FnApiRunner") as p:
        scored = p | beam.Create(sample) | DetectFraud(rules, 0.5, model_dir=model_dir)
        assert_that(scored | beam.combiners.ToList(), lambda lists: check(lists[0]))


def test_precision_at_k_counts_each_caught_account_once() -> None:
    days = np.array([1, 1, 1, 2, 2, 2])
    accounts = np.array(["a", "b", "c", "a", "b", "c"], dtype=object)
    scores = np.array([0.9, 0.8, 0.1, 0.9, 0.7, 0.2])
    fraud = np.array([True, False, False, True, True, False])
    # Day 1: top 2 = a (fraud), b -> 1/2. Day 2: a is blocked; top 2 = b (fraud), c -> 1/2.
    assert precision_at_k_per_day(days, accounts, scores, fraud, k=2) == 0.5


def test_features_reach_the_model_vector_in_order(featured) -> None:
    f = featured[0]
    vector = model.model_vector(dataclasses.replace(
        f, features=dataclasses.replace(f.features, counterparty_risk=0.25)))
    assert len(vector) == len(model.MODEL_FEATURES)
    assert vector[model.MODEL_FEATURES.index("counterparty_risk")] == 0.25
