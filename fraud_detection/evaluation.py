"""Evaluation on a time split: train on the first days, skip a delay (labels are not yet
known), test on the days after. Compares the model with the rules, and both with the
seed project's only rule, amount > 5,000, on the same test days. Each figure comes with
a bootstrap 95% interval over the test days, so two systems can be told apart."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraud_detection import model
from fraud_detection.errors import UsageError
from fraud_detection.model import MODEL_FEATURES
from fraud_detection.model import train as train_model
from fraud_detection.records import LEGIT
from fraud_detection.transforms.kernel import DELAY_DAYS, RULES_SCORE, WINDOW_DAYS

SEED_RULE_CENTS = 500_000
# An operating point to compare systems at: each flags what scores above its own top 1%
# of legitimate test transactions (recall at a 1% false-positive rate, a ranking figure
# like AUC: it uses the labels to place the cut).
LEGIT_BUDGET = 0.01
BOOTSTRAP_ROUNDS = 200

Interval = tuple[float, float]


@dataclass(frozen=True)
class SystemResult:
    name: str
    auc_roc: float
    average_precision: float
    precision_at_k: float  # mean over test days, accounts already caught not counted again
    legit_flagged: float  # share of legitimate test transactions flagged
    recall: dict[str, float]  # fraud label -> share flagged
    auc_interval: Interval = (float("nan"), float("nan"))  # bootstrap 95%, over days
    ap_interval: Interval = (float("nan"), float("nan"))
    precision_at_k_interval: Interval = (float("nan"), float("nan"))
    # The same with at most LEGIT_BUDGET of legitimate test transactions flagged.
    budget_legit_flagged: float = float("nan")
    budget_recall: dict[str, float] = field(default_factory=dict)


def _with_interval(value: float, interval: Interval) -> str:
    low, high = interval
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


@dataclass(frozen=True)
class EvaluationReport:
    train: tuple[dt.date, dt.date]
    test: tuple[dt.date, dt.date]
    train_rows: int
    train_frauds: int
    test_rows: int
    test_frauds: int
    k: int
    threshold: float
    systems: list[SystemResult]
    # What a perfect ranking would score: the test days' fraudulent accounts, at most k.
    precision_at_k_ceiling: float = float("nan")
    known_fraud_rows: int = 0  # test rows of accounts known compromised, left out

    def table(self) -> str:
        labels = sorted({label for s in self.systems for label in s.recall})
        head = (f"| system | AUC ROC | AP | precision@{self.k}/day (ceiling "
                f"{self.precision_at_k_ceiling:.3f}) | legit flagged | "
                + " | ".join(f"recall {label}" for label in labels) + " |")
        lines = [head, "|" + " --- |" * (5 + len(labels))]
        for s in self.systems:
            cells = [s.name, _with_interval(s.auc_roc, s.auc_interval),
                     _with_interval(s.average_precision, s.ap_interval),
                     _with_interval(s.precision_at_k, s.precision_at_k_interval),
                     f"{s.legit_flagged:.2%}",
                     *(f"{s.recall.get(label, float('nan')):.0%}" for label in labels)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def budget_table(self) -> str:
        """Recall per scenario with at most LEGIT_BUDGET of legitimate rows flagged."""
        labels = sorted({label for s in self.systems for label in s.budget_recall})
        lines = [f"| system (at most {LEGIT_BUDGET:.0%} of legit flagged) | legit flagged | "
                 + " | ".join(f"recall {label}" for label in labels) + " |",
                 "|" + " --- |" * (2 + len(labels))]
        for s in self.systems:
            lines.append("| " + " | ".join([s.name, f"{s.budget_legit_flagged:.2%}", *(
                f"{s.budget_recall.get(label, float('nan')):.0%}" for label in labels)])
                + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        return (f"train {self.train[0]}..{self.train[1]}: {self.train_rows} rows, "
                f"{self.train_frauds} frauds; test {self.test[0]}..{self.test[1]}: "
                f"{self.test_rows} rows, {self.test_frauds} frauds; flagged at "
                f"score >= {self.threshold}; precision@{self.k}/day at best (every "
                f"fraudulent account ranked first): {self.precision_at_k_ceiling:.3f}"
                + (f"; {self.known_fraud_rows} test rows of accounts with a fraud "
                   "labelled before the test window left out" if self.known_fraud_rows
                   else ""))


def bootstrap_interval(statistic: Callable[[np.ndarray], float], groups: np.ndarray,
                       rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """The percentile interval of statistic(rows) over resamples that draw whole groups
    (days) with replacement: rows of one day are not independent. Resamples where the
    statistic is undefined (nan: one class only) are left out."""
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(inverse.max() + 2))
    rows_of = [order[bounds[g]:bounds[g + 1]] for g in range(len(bounds) - 1)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        picked = rng.integers(0, len(rows_of), len(rows_of))
        value = statistic(np.concatenate([rows_of[g] for g in picked]))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def precision_at_k_by_day(days: np.ndarray, accounts: np.ndarray, scores: np.ndarray,
                          fraud: np.ndarray, k: int) -> dict:
    """Account precision@k of each day: the k accounts with the highest transaction
    score that day are reviewed, and the share of them with a fraud that day is its
    precision. An account found fraudulent is blocked and not counted on later days."""
    caught: set[str] = set()
    precisions = {}
    for day in sorted(set(days.tolist())):
        on_day = days == day
        best: dict[str, float] = defaultdict(float)
        bad: set[str] = set()
        for account, score, is_fraud in zip(accounts[on_day], scores[on_day], fraud[on_day],
                                            strict=True):
            if account in caught:
                continue
            best[account] = max(best[account], float(score))
            if is_fraud:
                bad.add(account)
        top = sorted(best, key=lambda a: (-best[a], a))[:k]
        if not top:
            continue
        hits = [a for a in top if a in bad]
        precisions[day] = len(hits) / k
        caught.update(hits)
    return precisions


def precision_at_k_per_day(days: np.ndarray, accounts: np.ndarray, scores: np.ndarray,
                           fraud: np.ndarray, k: int) -> float:
    """precision_at_k_by_day averaged over the days."""
    by_day = precision_at_k_by_day(days, accounts, scores, fraud, k)
    return float(np.mean(list(by_day.values()))) if by_day else 0.0


def _defined(metric: Callable[[np.ndarray, np.ndarray], float]):
    def score(fraud: np.ndarray, scores: np.ndarray) -> float:
        return metric(fraud, scores) if 0 < fraud.sum() < len(fraud) else float("nan")
    return score


def _result(name: str, scores: np.ndarray, flagged: np.ndarray, labels: np.ndarray,
            days: np.ndarray, accounts: np.ndarray, k: int) -> SystemResult:
    from sklearn.metrics import average_precision_score, roc_auc_score

    fraud = labels != LEGIT
    scenarios = sorted(set(labels.tolist()) - {LEGIT})
    recall = {str(label): float(flagged[labels == label].mean()) for label in scenarios}
    # Flagged within the budget: above the score of the legit row ranked just past it.
    legit_scores = np.sort(scores[~fraud])[::-1]
    allowed = math.floor(LEGIT_BUDGET * len(legit_scores))
    cut = legit_scores[allowed] if allowed < len(legit_scores) else -np.inf
    alerts = scores > cut
    auc, ap = _defined(roc_auc_score), _defined(average_precision_score)
    by_day = precision_at_k_by_day(days, accounts, scores, fraud, k)
    day_list = np.array(list(by_day), dtype=object)
    day_precision = np.array(list(by_day.values()), dtype=float)
    return SystemResult(
        name, float(auc(fraud, scores)), float(ap(fraud, scores)),
        float(day_precision.mean()) if len(day_precision) else 0.0,
        float(flagged[~fraud].mean()) if (~fraud).any() else 0.0, recall,
        auc_interval=bootstrap_interval(lambda rows: auc(fraud[rows], scores[rows]), days),
        ap_interval=bootstrap_interval(lambda rows: ap(fraud[rows], scores[rows]), days),
        precision_at_k_interval=bootstrap_interval(
            lambda rows: float(day_precision[rows].mean()), day_list),
        budget_legit_flagged=float(alerts[~fraud].mean()) if (~fraud).any() else 0.0,
        budget_recall={str(label): float(alerts[labels == label].mean())
                       for label in scenarios})


@dataclass(frozen=True)
class Windows:
    """Explicit dates: what a user passes; None is worked out from the day counts."""
    train_from: dt.date | None = None
    train_to: dt.date | None = None
    test_from: dt.date | None = None
    test_to: dt.date | None = None


def time_split(days: list[dt.date], train_days: int, delay_days: int, test_days: int,
               windows: Windows = Windows()
               ) -> tuple[tuple[dt.date, dt.date], tuple[dt.date, dt.date]]:
    """(train first, last), (test first, last). By default training starts on the first
    day; a date given in `windows` overrides what the day counts would give. The delay
    (labels not yet known) separates the two: with --test-from it is the days between."""
    day = dt.timedelta(days=1)
    first, last = min(days), max(days)
    train_from = windows.train_from or first
    train_to = windows.train_to or train_from + (train_days - 1) * day
    test_from = windows.test_from or train_to + (delay_days + 1) * day
    test_to = windows.test_to or test_from + (test_days - 1) * day
    if train_to < train_from:
        raise UsageError(f"the training window ends ({train_to}) before it starts "
                         f"({train_from})")
    if test_to < test_from:
        raise UsageError(f"the test window ends ({test_to}) before it starts ({test_from})")
    if test_from <= train_to:
        raise UsageError(f"the test window ({test_from}..{test_to}) must start after the "
                         f"training window ({train_from}..{train_to}) ends")
    if test_to > last:
        train = (f"{train_days}" if windows.train_to is None and windows.train_from is None
                 else f"{train_from}..{train_to}")
        test = (f"{test_days}" if windows.test_from is None and windows.test_to is None
                else f"{test_from}..{test_to}")
        raise UsageError(f"the data covers {first}..{last}, but train {train} + delay "
                         f"{(test_from - train_to).days - 1} + test {test} days end on "
                         f"{test_to}")
    if train_from < first:
        raise UsageError(f"the data covers {first}..{last}, but training starts on "
                         f"{train_from}")
    return (train_from, train_to), (test_from, test_to)


def check_input(pattern: str, train_days: int, delay_days: int, test_days: int,
                windows: Windows = Windows()) -> None:
    """Fails in one line, before any feature is computed, when the transactions a glob
    matches cannot be evaluated: no fraud labels, too few days for train + delay + test,
    or no fraud in the train or the test days. Reads only their times and labels."""
    from fraud_detection.io.parquet import read_columns

    if delay_days < 0:
        raise UsageError(f"--delay-days must not be negative, got {delay_days}")
    table = read_columns(pattern, ("event_time", "label"))
    times = table["event_time"].drop_null()
    if len(times) == 0:
        raise UsageError(f"{pattern}: no transactions to evaluate")
    labels = pc.fill_null(table["label"], LEGIT)
    fraud = pc.not_equal(labels, LEGIT)
    if not pc.any(fraud).as_py():
        raise UsageError(f"{pattern}: the input has no fraud labels (every transaction is "
                         "unlabelled or legit): nothing to evaluate against")
    days = pc.cast(pc.floor_temporal(table["event_time"], unit="day"), pa.date32())
    distinct = pc.unique(days.drop_null()).to_pylist()
    train, test = time_split(distinct, train_days, delay_days, test_days, windows)
    for name, (first, last) in (("train", train), ("test", test)):
        inside = pc.and_(pc.greater_equal(days, first), pc.less_equal(days, last))
        if not pc.any(pc.and_(fraud, inside)).as_py():
            raise UsageError(f"no fraud labels in the {name} days {first}..{last}")


def known_fraud_accounts(accounts: np.ndarray, days: np.ndarray, fraud: np.ndarray,
                         before: dt.date) -> set[str]:
    """Accounts with a fraud labelled on a day before `before`: already known to be
    compromised when the test window starts."""
    return set(accounts[fraud & (days < before)].tolist())


def _split(days: np.ndarray, train_days: int, delay_days: int, test_days: int,
           windows: Windows) -> tuple[tuple[dt.date, dt.date], tuple[dt.date, dt.date],
                                      np.ndarray, np.ndarray]:
    """time_split's windows, and which rows fall in each."""
    train_range, test_range = time_split(days.tolist(), train_days, delay_days, test_days,
                                         windows)
    return (train_range, test_range, (days >= train_range[0]) & (days <= train_range[1]),
            (days >= test_range[0]) & (days <= test_range[1]))


def evaluate_table(table: pa.Table, train_days: int, delay_days: int, test_days: int,
                   threshold: float, k: int = 100, seed: int = 0,
                   windows: Windows = Windows(), saved: tuple[Any, str] | None = None,
                   exclude_known_frauds: bool = False, select: bool = False,
                   ) -> EvaluationReport:
    """Trains on the train days of a feature table (see beam_pipelines/feature_table.py) and
    scores the test days with every system. Every earlier day fed the features.

    saved: (model, version) from `train`, scored instead of models trained here.
    exclude_known_frauds: accounts with a fraud labelled before the test window are
    left out of the test metrics, as the literature does.
    select: pick the model by prequential AP inside the training window (model.GRID),
    and show each family's best alone."""
    days, labels, fraud, all_accounts, vectors = _columns(table)
    if not fraud.any():
        raise UsageError("the input has no fraud labels: nothing to evaluate against")
    train_range, test_range, in_train, in_test = _split(days, train_days, delay_days,
                                                        test_days, windows)
    excluded = 0
    if exclude_known_frauds:
        known = known_fraud_accounts(all_accounts, days, fraud, test_range[0])
        left_out = in_test & np.isin(all_accounts, list(known))
        excluded = int(left_out.sum())
        in_test &= ~left_out
    if not fraud[in_test].any():
        raise UsageError(f"no fraud in the test days {test_range[0]}..{test_range[1]}")
    rules = table[RULES_SCORE].to_numpy()[in_test]
    amount = table["amount_cents"].to_numpy()[in_test]
    accounts = all_accounts[in_test]
    args = (labels[in_test], days[in_test], accounts, k)
    if saved is not None:
        trained, version = saved
        combined = trained.predict_proba(vectors[in_test])[:, 1]
        systems = [_result(f"DetectFraud: model {version} + rules", combined,
                           combined >= threshold, *args)]
    else:
        # The model alone does without the rules' score among its inputs.
        alone = [i for i, name in enumerate(MODEL_FEATURES) if name != RULES_SCORE]
        train_fraud = fraud[in_train].astype(int)
        chosen, by_family = model.DEFAULT, {}
        if select:
            chosen, grid = model.select(vectors[in_train], train_fraud, days[in_train],
                                        (test_range[0] - train_range[1]).days - 1, seed=seed)
            for candidate, result in zip(model.GRID, grid, strict=True):
                best = by_family.get(candidate.family)
                if best is None or result["mean_ap"] > best[1]:
                    by_family[candidate.family] = (candidate, result["mean_ap"])
        combined = train_model(vectors[in_train], train_fraud, seed,
                               chosen).predict_proba(vectors[in_test])[:, 1]
        probability = train_model(vectors[in_train][:, alone], train_fraud, seed,
                                  chosen).predict_proba(vectors[in_test][:, alone])[:, 1]
        name = f" ({chosen.describe()})" if select else ""
        systems = [
            _result(f"DetectFraud: model{name} + rules", combined, combined >= threshold,
                    *args),
            _result(f"model{name} alone", probability, probability >= threshold, *args)]
        for candidate, _ in by_family.values():
            if candidate == chosen:
                continue
            other = train_model(vectors[in_train][:, alone], train_fraud, seed,
                                candidate).predict_proba(vectors[in_test][:, alone])[:, 1]
            systems.append(_result(f"{candidate.describe()} alone", other,
                                   other >= threshold, *args))
    systems += [
        _result("rules alone", rules, rules >= threshold, *args),
        # A rule is ranked by what it outputs, its flag, not by the amount it looks at.
        _result("seed rule: amount > 5,000", (amount > SEED_RULE_CENTS).astype(float),
                amount > SEED_RULE_CENTS, *args),
    ]
    ceiling = precision_at_k_per_day(days[in_test], accounts, fraud[in_test].astype(float),
                                     fraud[in_test], k)
    return EvaluationReport(train_range, test_range, int(in_train.sum()),
                            int(fraud[in_train].sum()), int(in_test.sum()),
                            int(fraud[in_test].sum()), k, threshold, systems, ceiling,
                            excluded)


def _columns(table: pa.Table) -> tuple[np.ndarray, ...]:
    """A feature table's days, labels, fraud flags, accounts and model input."""
    days = np.array([t.date() for t in table["event_time"].to_pylist()])
    labels = np.array([label or LEGIT for label in table["label"].to_pylist()], dtype=object)
    accounts = np.array(table["account_id"].to_pylist(), dtype=object)
    vectors = model.model_input(table, MODEL_FEATURES)
    return days, labels, labels != LEGIT, accounts, vectors


def rules_ablation(transactions: pa.Table, rules: list, train_days: int, delay_days: int,
                   test_days: int, threshold: float, k: int = 100, seed: int = 0,
                   windows: Windows = Windows(), label_delay_days: int = DELAY_DAYS,
                   counterparty_window_days: int = WINDOW_DAYS) -> str:
    """What each rule earns: the model trained with the rules' score, with every rule,
    with none, and without each rule in turn, on the same windows. A table: AP, and
    recall per scenario with at most LEGIT_BUDGET of legitimate rows flagged."""
    from fraud_detection.transforms import kernel

    variants = [("every rule", rules), ("no rules", []),
                *((f"without {rule.rule_id}", [r for r in rules if r is not rule])
                  for rule in rules)]
    results: list[SystemResult] = []
    for name, subset in variants:
        table = kernel.detect(transactions, kernel.Decider(subset), features_only=True,
                              delay_days=label_delay_days,
                              window_days=counterparty_window_days)
        days, labels, fraud, accounts, vectors = _columns(table)
        _, _, in_train, in_test = _split(days, train_days, delay_days, test_days, windows)
        scores = train_model(vectors[in_train], fraud[in_train].astype(int),
                             seed).predict_proba(vectors[in_test])[:, 1]
        results.append(_result(name, scores, scores >= threshold, labels[in_test],
                               days[in_test], accounts[in_test], k))
    scenarios = sorted({label for r in results for label in r.budget_recall})
    lines = [f"| model trained with | AP | recall at most {LEGIT_BUDGET:.0%} legit flagged: "
             + " | ".join(scenarios) + " |", "|" + " --- |" * (2 + len(scenarios))]
    for r in results:
        lines.append("| " + " | ".join([r.name, _with_interval(r.average_precision,
                                                              r.ap_interval),
                                        *(f"{r.budget_recall.get(x, 0):.0%}"
                                          for x in scenarios)]) + " |")
    return "\n".join(lines)


def ablate_rules(pattern: str, values: dict, train_days: int, delay_days: int,
                 test_days: int, threshold: float, k: int, windows: Windows,
                 progress=lambda line: None) -> str:
    """rules_ablation over a Parquet input, with the feature options in values (the
    features pipeline's, defaults included)."""
    from fraud_detection.beam_pipelines.feature_table import feature_options
    from fraud_detection.io.parquet import read_valid_transactions
    from fraud_detection.transforms.rules import load_rules

    options = feature_options(values)
    check_input(pattern, train_days, delay_days, test_days, windows)
    transactions, invalid = read_valid_transactions(pattern)
    if invalid:
        progress(f"{invalid} invalid rows left out")
    return rules_ablation(transactions, load_rules(Path(options.rules)), train_days,
                          delay_days, test_days, threshold, k, windows=windows,
                          label_delay_days=options.label_delay_days,
                          counterparty_window_days=options.counterparty_window_days)
