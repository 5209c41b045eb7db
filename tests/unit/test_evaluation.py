"""`evaluate` checks its input before computing features (minutes on real data): data
without labels, or with too few days for train + delay + test, fails at once, in one
line, and no feature is computed."""

from __future__ import annotations

import subprocess
import sys
import time

import pyarrow.compute as pc
import pytest

from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.errors import UsageError
from fraud_detection.evaluation import check_input
from fraud_detection.io.parquet import (
    read_transactions,
    transactions_table,
    write_partitioned_transactions,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Ten labelled days."""
    out = tmp_path_factory.mktemp("eval-world")
    generate(WorldConfig(days=10, seed=5, rows=2000, banks=1), out, progress=False)
    return out


@pytest.fixture(scope="module")
def unlabelled(world, tmp_path_factory):
    """The same days with every label removed."""
    out = tmp_path_factory.mktemp("eval-unlabelled")
    table = read_transactions(world)
    columns = {name: table[name] for name in table.column_names}
    columns["label"] = [None] * table.num_rows
    write_partitioned_transactions(transactions_table(columns), out)
    return out


def _evaluate(dataset, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "fraud_detection", "evaluate",
                             "--input", str(dataset), *args],
                            capture_output=True, text=True, timeout=300)
    return result, time.monotonic() - started


def _fails_fast(result: subprocess.CompletedProcess, seconds: float, message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0], lines[0]
    assert "features of" not in result.stdout  # the feature pipeline never ran


def test_data_without_labels_fails_before_any_feature(unlabelled):
    result, seconds = _evaluate(unlabelled, "--train-days", "3", "--delay-days", "1",
                                "--test-days", "3")
    _fails_fast(result, seconds, "has no fraud labels")


def test_too_few_days_fails_before_any_feature(world):
    result, seconds = _evaluate(world)  # 30 + 7 + 21 days wanted, 10 there
    _fails_fast(result, seconds, "the data covers 2024-01-01..2024-01-10, but train 30 + "
                                 "delay 7 + test 21 days end on 2024-02-27")
    result, seconds = _evaluate(world, "--train-days", "5", "--delay-days", "2",
                                "--test-days", "4")
    _fails_fast(result, seconds, "test 4 days end on 2024-01-11")


def test_checks_on_a_glob_and_what_passes(world):
    pattern = f"{world}/transactions/date=*/*.parquet"
    check_input(pattern, 5, 1, 4)  # 5 + 1 + 4 = the 10 days: nothing raised
    check_input(str(world / "transactions" / "date=2024-01-0[1-5]" / "*.parquet"), 2, 0, 3)
    with pytest.raises(UsageError, match="must not be negative"):
        check_input(pattern, 5, -1, 4)
    assert pc.sum(pc.not_equal(read_transactions(world)["label"], "legit")).as_py() > 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "fraud_detection", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_features_once_then_train_and_evaluate_read_them(world, tmp_path):
    """The table `features` writes is what train and evaluate read; a model `train`
    saved on the training window scores as the one evaluate trains there itself."""
    prefix = str(tmp_path / "features" / "world")
    _cli("features", "--input", str(world), "--out", prefix)
    windows = ["--train-days", "5", "--delay-days", "1", "--test-days", "4"]
    trained_here = _cli("evaluate", "--features", prefix, *windows).stdout
    assert "features of" not in trained_here  # read, not computed again
    _cli("train", "--features", prefix, "--from", "2024-01-01", "--until", "2024-01-05",
         "--model-dir", str(tmp_path / "model"))
    saved = _cli("evaluate", "--features", prefix, *windows, "--model-dir",
                 str(tmp_path / "model")).stdout

    def row(text: str, name: str) -> list[str]:
        line = next(x for x in text.splitlines() if x.startswith(f"| {name}"))
        return line.split(" | ")[1:]

    assert row(saved, "DetectFraud: model") == row(trained_here, "DetectFraud: model")
    assert "model alone" not in saved
    # The model keeps what its features were computed with, and refuses features whose
    # counterparty windows end elsewhere.
    from fraud_detection import model
    from fraud_detection.transforms.kernel import DELAY_DAYS, WINDOW_DAYS
    from fraud_detection.transforms.rules import load_rules

    info = model.load_info(tmp_path / "model")
    assert info.settings == model.FeatureSettings.of(load_rules(), DELAY_DAYS, WINDOW_DAYS)
    other = str(tmp_path / "features" / "delay3")
    _cli("features", "--input", str(world), "--out", other, "--label-delay-days", "3")
    refused = subprocess.run(
        [sys.executable, "-m", "fraud_detection", "evaluate", "--features", other, *windows,
         "--model-dir", str(tmp_path / "model")], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "label_delay_days 3 against 7" in refused.stderr.strip().splitlines()[-1]


def test_known_fraud_accounts_are_left_out_of_the_test_metrics():
    import datetime as dt

    import numpy as np

    from fraud_detection.evaluation import known_fraud_accounts

    d = dt.date.fromisoformat
    accounts = np.array(["a", "b", "c", "a", "b"], dtype=object)
    days = np.array([d("2024-01-01"), d("2024-01-03"), d("2024-01-05"), d("2024-01-06"),
                     d("2024-01-06")])
    fraud = np.array([True, False, True, True, True])
    # a's fraud on day 1 is known by day 5; c's on day 5 is not known before day 5.
    assert known_fraud_accounts(accounts, days, fraud, d("2024-01-05")) == {"a"}
    assert known_fraud_accounts(accounts, days, fraud, d("2024-01-06")) == {"a", "c"}
