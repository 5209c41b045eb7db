"""The evaluation's metrics against small cases worked out by hand, its windows, and
that it leaks nothing from the test window."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import numpy as np
import pyarrow as pa
import pytest

from fraud_detection.errors import UsageError
from fraud_detection.evaluation import (
    Windows,
    _result,
    bootstrap_interval,
    evaluate_table,
    precision_at_k_by_day,
    precision_at_k_per_day,
    time_split,
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


def _days(first: str, last: str) -> list[dt.date]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def test_windows_from_day_counts_and_from_dates():
    days = _days("2024-01-01", "2024-01-10")
    d = dt.date.fromisoformat
    assert time_split(days, 5, 1, 4) == ((d("2024-01-01"), d("2024-01-05")),
                                          (d("2024-01-07"), d("2024-01-10")))
    # Warm-up: training starts later; the days before it still feed the features.
    assert time_split(days, 3, 0, 2, Windows(train_from=d("2024-01-02"))) == (
        (d("2024-01-02"), d("2024-01-04")), (d("2024-01-05"), d("2024-01-06")))
    # Dates win over counts; the delay is then the days between.
    assert time_split(days, 30, 7, 21, Windows(d("2024-01-01"), d("2024-01-03"),
                                               d("2024-01-06"), d("2024-01-08"))) == (
        (d("2024-01-01"), d("2024-01-03")), (d("2024-01-06"), d("2024-01-08")))
    assert time_split(days, 2, 1, 3, Windows(train_to=d("2024-01-04"))) == (
        (d("2024-01-01"), d("2024-01-04")), (d("2024-01-06"), d("2024-01-08")))


def test_windows_that_overlap_or_leave_the_data_are_refused():
    days = _days("2024-01-01", "2024-01-10")
    d = dt.date.fromisoformat
    with pytest.raises(UsageError, match="must start after the training window"):
        time_split(days, 5, 1, 3, Windows(test_from=d("2024-01-05")))
    with pytest.raises(UsageError, match=r"ends .* before it starts"):
        time_split(days, 5, 1, 3, Windows(train_from=d("2024-01-05"),
                                          train_to=d("2024-01-04")))
    with pytest.raises(UsageError, match=re.escape("train 5 + delay 1 + test 2024-01-07..")):
        time_split(days, 5, 1, 3, Windows(test_to=d("2024-01-12")))
    with pytest.raises(UsageError, match="training starts on 2023-12-31"):
        time_split(days, 5, 1, 3, Windows(train_from=d("2023-12-31")))


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> pa.Table:
    """A 21-day world's transactions."""
    from fraud_detection.datagen.world import WorldConfig, generate
    from fraud_detection.io.parquet import read_transactions

    out = tmp_path_factory.mktemp("metrics-world")
    generate(WorldConfig(days=21, seed=11, rows=12_000, banks=1), out, progress=False)
    return read_transactions(out)


@pytest.fixture(scope="module")
def feature_table(transactions) -> pa.Table:
    """Its feature table (the table `features` writes)."""
    from fraud_detection.transforms import kernel
    from fraud_detection.transforms.rules import load_rules

    return kernel.detect(transactions, kernel.Decider(load_rules(), 0.5), features_only=True)


def test_evaluation_is_reproducible_and_windows_equal_their_counts(feature_table):
    d = dt.date.fromisoformat
    by_counts = evaluate_table(feature_table, 10, 2, 7, 0.5, k=10)
    assert by_counts == evaluate_table(feature_table, 10, 2, 7, 0.5, k=10)
    by_dates = evaluate_table(feature_table, 99, 99, 99, 0.5, k=10, windows=Windows(
        d("2024-01-01"), d("2024-01-10"), d("2024-01-13"), d("2024-01-19")))
    assert by_dates == by_counts


def test_shuffled_test_labels_give_chance_level_precision(feature_table):
    """No leakage: if the test window's labels are shuffled, nothing the model learned
    can find them, and its AP falls to about the fraud rate."""
    rng = np.random.default_rng(0)
    days = np.array([t.date() for t in feature_table["event_time"].to_pylist()])
    in_test = (days >= dt.date(2024, 1, 13)) & (days <= dt.date(2024, 1, 19))
    labels = np.array(feature_table["label"].to_pylist(), dtype=object)
    shuffled = labels.copy()
    shuffled[in_test] = rng.permutation(labels[in_test])
    table = feature_table.set_column(feature_table.schema.get_field_index("label"), "label",
                                     pa.array(shuffled.tolist(), pa.string()))
    honest = evaluate_table(feature_table, 10, 2, 7, 0.5, k=10)
    blind = evaluate_table(table, 10, 2, 7, 0.5, k=10)
    assert (blind.test_rows, blind.test_frauds) == (honest.test_rows, honest.test_frauds)
    rate = blind.test_frauds / blind.test_rows
    model = {s.name: s for s in blind.systems}["model alone"]
    assert model.average_precision < 3 * rate
    assert abs(model.auc_roc - 0.5) < 0.1
    assert {s.name: s for s in honest.systems}["model alone"].average_precision > 5 * rate


def test_the_precision_ceiling_is_what_a_perfect_ranking_scores(feature_table):
    report = evaluate_table(feature_table, 10, 2, 7, 0.5, k=10)
    assert all(s.precision_at_k <= report.precision_at_k_ceiling for s in report.systems)
    # Each test day: its fraudulent accounts not caught (reviewed) on an earlier day, at
    # most k; ties at the top are broken by account id.
    days = np.array([t.date() for t in feature_table["event_time"].to_pylist()])
    accounts = np.array(feature_table["account_id"].to_pylist(), dtype=object)
    fraud = np.array([label not in (None, "legit") for label in
                      feature_table["label"].to_pylist()])
    caught: set[str] = set()
    per_day = []
    for day in sorted(set(days[(days >= report.test[0]) & (days <= report.test[1])])):
        reviewed = sorted(set(accounts[(days == day) & fraud]) - caught)[:10]
        per_day.append(len(reviewed) / 10)
        caught |= set(reviewed)
    assert report.precision_at_k_ceiling == pytest.approx(np.mean(per_day))
    assert report.precision_at_k_ceiling > 0


def test_excluding_known_frauds_leaves_out_exactly_their_test_rows(feature_table):
    from fraud_detection.evaluation import known_fraud_accounts

    full = evaluate_table(feature_table, 10, 2, 7, 0.5, k=10)
    fresh = evaluate_table(feature_table, 10, 2, 7, 0.5, k=10, exclude_known_frauds=True)
    days = np.array([t.date() for t in feature_table["event_time"].to_pylist()])
    accounts = np.array(feature_table["account_id"].to_pylist(), dtype=object)
    fraud = np.array([label not in (None, "legit") for label in
                      feature_table["label"].to_pylist()])
    known = known_fraud_accounts(accounts, days, fraud, full.test[0])
    in_test = (days >= full.test[0]) & (days <= full.test[1])
    of_known = in_test & np.isin(accounts, list(known))
    assert known and of_known.any()
    assert fresh.known_fraud_rows == int(of_known.sum())
    assert fresh.test_rows == full.test_rows - int(of_known.sum())
    assert fresh.test_frauds == full.test_frauds - int((of_known & fraud).sum())


def test_prequential_folds_step_back_from_the_window_end_less_the_delay():
    from fraud_detection.model import prequential_folds

    days = np.array(_days("2024-01-01", "2024-01-30"))
    folds = prequential_folds(days, delay_days=7)
    d = dt.date.fromisoformat
    got = [((days[fit].min(), days[fit].max()), (days[val].min(), days[val].max()))
           for fit, val in folds]
    # Validation weeks 24-30 and 17-23, each fitted up to 8 days before it; a third
    # (10-16) would fit on 2 days, fewer than a week: left out.
    assert got == [((d("2024-01-01"), d("2024-01-16")), (d("2024-01-24"), d("2024-01-30"))),
                   ((d("2024-01-01"), d("2024-01-09")), (d("2024-01-17"), d("2024-01-23")))]


def test_selection_keeps_the_candidate_with_the_best_prequential_ap(feature_table, tmp_path):
    from fraud_detection import model

    days = np.array([t.date() for t in feature_table["event_time"].to_pylist()])
    vectors = np.column_stack([feature_table[n].to_numpy() for n in model.MODEL_FEATURES])
    fraud = np.array([label not in (None, "legit") for label in
                      feature_table["label"].to_pylist()]).astype(int)
    from sklearn.metrics import average_precision_score

    grid_in = (model.Candidate("logistic regression", (("C", 1.0),)), model.DEFAULT)
    chosen, grid = model.select(vectors, fraud, days, delay_days=2, grid=grid_in)
    # Each figure is the AP of a model fitted before its validation week, delay left out.
    folds = model.prequential_folds(days, 2)
    for candidate, result in zip(grid_in, grid, strict=True):
        aps = [average_precision_score(fraud[val], model.train(
            vectors[fit], fraud[fit], 0, candidate).predict_proba(vectors[val])[:, 1])
            for fit, val in folds]
        assert result["ap_by_fold"] == [round(a, 4) for a in aps]
        assert result["model"] == candidate.describe()
    assert chosen == grid_in[int(np.argmax([r["mean_ap"] for r in grid]))]
    info = model.save(model.train(vectors, fraud, candidate=chosen), tmp_path, len(fraud),
                      int(fraud.sum()), candidate=chosen, grid=grid)
    assert info.params["family"] == chosen.family
    assert json.loads((tmp_path / model.GRID_FILE).read_text()) == grid


def test_recall_at_one_percent_of_legit_flagged_whatever_the_threshold():
    from fraud_detection.evaluation import _result

    n = 203  # 200 legit: 1% of them is 2
    scores = np.linspace(0.3, 0.0, n)  # all below the 0.5 threshold
    labels = np.array(["legit"] * n, dtype=object)
    labels[[0, 5]] = "spike"
    labels[4] = "skimming"
    result = _result("s", scores, scores >= 0.5, labels, np.ones(n), np.arange(n), k=10)
    assert result.recall == {"skimming": 0.0, "spike": 0.0}
    # Above the third-highest legit score (row 3): rows 0-2, of which 2 legit.
    assert result.budget_recall == {"skimming": 0.0, "spike": 0.5}
    assert result.budget_legit_flagged == 2 / 200
    # A flag on more than 1% of the legit rows cannot be cut inside the budget.
    flag = np.zeros(n)
    flag[:10] = 1.0
    result = _result("f", flag, flag > 0, labels, np.ones(n), np.arange(n), k=10)
    assert result.budget_recall == {"skimming": 0.0, "spike": 0.0}
    assert result.budget_legit_flagged == 0.0


def test_rules_ablation_rows_are_the_model_with_each_rule_set(transactions):
    from fraud_detection.evaluation import rules_ablation
    from fraud_detection.transforms import kernel
    from fraud_detection.transforms.rules import load_rules

    rules = load_rules()[:2]
    text = rules_ablation(transactions, rules, 10, 2, 7, 0.5, k=10)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1]
            for line in text.splitlines()[2:]}
    assert list(rows) == ["every rule", "no rules",
                          *(f"without {r.rule_id}" for r in rules)]
    # Each row is what evaluate gives its model + rules with that rule set.
    for name, subset in (("every rule", rules), ("no rules", []),
                         (f"without {rules[0].rule_id}", rules[1:])):
        table = kernel.detect(transactions, kernel.Decider(subset), features_only=True)
        ap = evaluate_table(table, 10, 2, 7, 0.5, k=10).systems[0].average_precision
        assert rows[name].startswith(f"{ap:.3f} ("), name


def test_every_family_of_the_grid_trains_the_same_model_twice_and_scores_after_reload(
        feature_table, tmp_path):
    from fraud_detection import model

    vectors = np.column_stack([feature_table[n].to_numpy() for n in model.MODEL_FEATURES])
    fraud = np.array([label not in (None, "legit") for label in
                      feature_table["label"].to_pylist()]).astype(int)
    families = {candidate.family: candidate for candidate in reversed(model.GRID)}
    assert "lightgbm" in families
    for family, candidate in families.items():
        first = model.train(vectors, fraud, 3, candidate).predict_proba(vectors)[:, 1]
        trained = model.train(vectors, fraud, 3, candidate)
        # A random forest on two threads sums its trees in the order they finish: the
        # last bit may differ.
        np.testing.assert_allclose(trained.predict_proba(vectors)[:, 1], first, rtol=1e-12,
                                   atol=1e-15, err_msg=family)
        model.save(trained, tmp_path / family.replace(" ", "-"), len(fraud),
                   int(fraud.sum()), candidate=candidate)
        loaded, info = model.load(tmp_path / family.replace(" ", "-"))
        assert info.params["family"] == family
        np.testing.assert_allclose(loaded.predict_proba(vectors)[:, 1], first, rtol=1e-12,
                                   atol=1e-15, err_msg=family)
