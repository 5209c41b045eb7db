"""The trained model: its feature vector, training, and how it is saved and served.

A model folder holds `model.pkl` (a scikit-learn estimator, applied by the detection
kernel to each batch) and `model.json` (version, feature names, what it was trained on,
and the settings its features were computed with). The pipeline refuses a model whose
feature list or feature settings differ from its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fraud_detection.errors import UsageError
from fraud_detection.transforms.kernel import MODEL_FEATURES
from fraud_detection.transforms.rules import Rule

MODEL_FILE, INFO_FILE, GRID_FILE = "model.pkl", "model.json", "grid.json"


class ModelError(UsageError):
    pass


@dataclass(frozen=True)
class FeatureSettings:
    """What a feature table was computed with. A model's inputs mean the same only with
    the same settings: the counterparty windows end label_delay_days back, and
    rules_score is the noisy-or of these rules (rules_digest)."""

    label_delay_days: int
    counterparty_window_days: int
    rules_digest: str | None  # None: rules not known before the run (read live)

    @classmethod
    def of(cls, rules: Sequence[Rule] | None, label_delay_days: int,
           counterparty_window_days: int) -> FeatureSettings:
        return cls(label_delay_days, counterparty_window_days,
                   None if rules is None else rules_digest(rules))


def rules_digest(rules: Sequence[Rule]) -> str:
    """Stable for the same rules in the same order; paused rules count as absent."""
    active = [asdict(rule) for rule in rules if not rule.paused]
    return hashlib.sha256(json.dumps(active, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


@dataclass(frozen=True)
class ModelInfo:
    version: str
    features: tuple[str, ...]
    trained_at: str
    train_rows: int
    train_frauds: int
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # FeatureSettings as a dict; empty in models saved before it was recorded.
    feature_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> FeatureSettings | None:
        return FeatureSettings(**self.feature_settings) if self.feature_settings else None

    def check_settings(self, used: FeatureSettings, where: str) -> str | None:
        """Features whose counterparty windows end elsewhere than the training ones mean
        something else: refused. Other rules only move the rules_score input (rules are
        edited live): the warning to log, or None."""
        trained = self.settings
        if trained is None:
            return None
        wrong = [f"{name} {getattr(used, name)} against {getattr(trained, name)}"
                 for name in ("label_delay_days", "counterparty_window_days")
                 if getattr(used, name) != getattr(trained, name)]
        if wrong:
            raise ModelError(f"model {self.version} was trained on features computed "
                             f"otherwise than {where}: {'; '.join(wrong)} (here against "
                             f"the model's); compute them alike or retrain")
        if used.rules_digest not in (None, trained.rules_digest):
            return (f"model {self.version} was trained with other rules than {where}'s: "
                    "its rules_score input differs from training")
        return None


@dataclass(frozen=True)
class Candidate:
    """A model family and its settings: one point of the selection grid."""
    family: str  # "gradient boosting", "lightgbm", "random forest", "logistic regression"
    params: tuple[tuple[str, Any], ...]
    class_weight: str | None = None  # None: as sampled; "balanced": frauds weigh more

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.family} ({shown}{', balanced' if self.class_weight else ''})"

    def build(self, seed: int):
        params = dict(self.params)
        if self.family == "gradient boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(**params, early_stopping=False,
                                                  class_weight=self.class_weight,
                                                  random_state=seed)
        if self.family == "lightgbm":
            from lightgbm import LGBMClassifier

            # Deterministic: the same rows give the same model, with both cores.
            return LGBMClassifier(**params, class_weight=self.class_weight, random_state=seed,
                                  n_jobs=2, deterministic=True, force_col_wise=True,
                                  verbose=-1)
        if self.family == "random forest":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(**params, n_jobs=2, random_state=seed,
                                          class_weight=self.class_weight)
        if self.family == "logistic regression":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            return make_pipeline(StandardScaler(), LogisticRegression(
                **params, max_iter=2000, class_weight=self.class_weight))
        raise ValueError(f"unknown model family: {self.family}")


# Leaves of at least 100 rows: a training window holds a few compromises, and smaller
# leaves fit their sales one by one (test AP on three 90-day worlds: 0.632, 0.782, 0.626
# against 0.627, 0.781, 0.513, the last below the model without the rules' input).
DEFAULT = Candidate("gradient boosting", (("max_iter", 300), ("learning_rate", 0.08),
                                          ("max_leaf_nodes", 31), ("min_samples_leaf", 100),
                                          ("l2_regularization", 1.0)))
# What `train --select` and `evaluate --select` compare, by prequential average precision.
GRID = (
    DEFAULT,
    Candidate("gradient boosting", (("max_iter", 200), ("learning_rate", 0.05),
                                    ("max_leaf_nodes", 15), ("min_samples_leaf", 40),
                                    ("l2_regularization", 1.0))),
    Candidate("gradient boosting", DEFAULT.params, "balanced"),
    # LightGBM's row and column subsampling, which scikit-learn's lacks.
    Candidate("lightgbm", (("n_estimators", 300), ("learning_rate", 0.05), ("num_leaves", 31),
                           ("min_child_samples", 100), ("reg_lambda", 1.0),
                           ("subsample", 0.8), ("subsample_freq", 1),
                           ("colsample_bytree", 0.8))),
    Candidate("random forest", (("n_estimators", 100), ("min_samples_leaf", 2))),
    Candidate("random forest", (("n_estimators", 100), ("min_samples_leaf", 5)),
              "balanced"),
    Candidate("logistic regression", (("C", 1.0),)),
    Candidate("logistic regression", (("C", 0.1),), "balanced"),
)


# Above this many legitimate rows, training takes a uniform sample of them, each weighted
# by the inverse of its sampling rate: the trees see every fraud, the probabilities stay
# calibrated to the real fraud rate, and 1M rows train in a fraction of the time.
MAX_LEGIT_ROWS = 200_000


def train(features: np.ndarray, labels: np.ndarray, seed: int = 0,
          candidate: Candidate = DEFAULT):
    """A fitted model of the candidate's family (by default gradient-boosted trees, not
    re-weighted towards fraud: its probabilities stay calibrated to the real fraud
    rate, so a probability of 0.5 means what the threshold says)."""
    rows, weights = training_sample(labels, seed)
    if rows is not None:
        features, labels = features[rows], labels[rows]
    return fit(features, labels, weights, seed, candidate)


def training_sample(labels: np.ndarray, seed: int = 0
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The rows train fits on (None: all) and their weights (see MAX_LEGIT_ROWS)."""
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ModelError("training needs both fraud and legitimate transactions")
    legit = np.flatnonzero(labels == 0)
    if len(legit) <= MAX_LEGIT_ROWS:
        return None, None
    sample = np.random.default_rng(seed).choice(legit, MAX_LEGIT_ROWS, replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(labels != 0), sample]))
    return rows, np.where(labels[rows] == 0, len(legit) / MAX_LEGIT_ROWS, 1.0)


def fit(features: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, seed: int,
        candidate: Candidate):
    """The candidate fitted on rows already sampled by training_sample."""
    model = candidate.build(seed)
    if candidate.family == "logistic regression":
        model.fit(features, labels, logisticregression__sample_weight=weights)
    else:
        model.fit(features, labels, sample_weight=weights)
    return model


def prequential_folds(days: np.ndarray, delay_days: int, folds: int = 3,
                      fold_days: int = 7, min_fit_days: int = 7
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, validation rows) masks inside a training window: validation weeks
    that step back from its end, each fitted on the days before it less the label
    delay, as the model will be used. Folds with too little history are left out."""
    first, last = days.min(), days.max()
    out = []
    for f in range(folds):
        val_to = last - dt.timedelta(days=f * fold_days)
        val_from = val_to - dt.timedelta(days=fold_days - 1)
        fit_to = val_from - dt.timedelta(days=delay_days + 1)
        if (fit_to - first).days + 1 < min_fit_days:
            break
        out.append((days <= fit_to, (days >= val_from) & (days <= val_to)))
    return out


def select(features: np.ndarray, labels: np.ndarray, days: np.ndarray, delay_days: int,
           grid: tuple[Candidate, ...] = GRID, seed: int = 0,
           ) -> tuple[Candidate, list[dict[str, Any]]]:
    """The grid's candidate with the best mean average precision over the prequential
    folds, and every candidate's figures."""
    from sklearn.metrics import average_precision_score

    folds = [(fit, val) for fit, val in prequential_folds(days, delay_days)
             if 0 < labels[fit].sum() < fit.sum() and 0 < labels[val].sum() < val.sum()]
    if not folds:
        raise ModelError("the training window is too short for model selection: it needs "
                         f"{7 + delay_days + 7} days with fraud in each part")
    results = []
    for candidate in grid:
        aps = [float(average_precision_score(labels[val], train(
            features[fit], labels[fit], seed, candidate).predict_proba(features[val])[:, 1]))
            for fit, val in folds]
        results.append({"model": candidate.describe(), "family": candidate.family,
                        "params": dict(candidate.params),
                        "class_weight": candidate.class_weight,
                        "ap_by_fold": [round(a, 4) for a in aps],
                        "mean_ap": round(float(np.mean(aps)), 4)})
    best = max(range(len(grid)), key=lambda i: results[i]["mean_ap"])
    return grid[best], results


def train_on_table(table, folder: Path, since: dt.date | None = None,
                   until: dt.date | None = None, select_model: bool = False,
                   delay_days: int = 7, settings: FeatureSettings | None = None,
                   ) -> tuple[ModelInfo, Candidate, list[dict[str, Any]] | None]:
    """Trains on a feature table's days from since to until (earlier days only warmed
    the features up), choosing the family by prequential validation if asked, and saves
    the model in folder."""
    from fraud_detection.records import LEGIT

    days = np.array([t.date() for t in table["event_time"].to_pylist()])
    keep = np.ones(len(days), dtype=bool)
    if since:
        keep &= days >= since
    if until:
        keep &= days <= until
    rows = np.flatnonzero(keep)
    labels = table["label"].to_pylist()
    fraud = np.array([(labels[i] or LEGIT) != LEGIT for i in rows], dtype=int)
    chosen, grid, vectors = DEFAULT, None, None
    if select_model:  # the folds need the whole window's input
        vectors = model_input(table, rows=rows)
        chosen, grid = select(vectors, fraud, days[keep], delay_days)
    # Otherwise only the rows the fit samples are built, picked column by column rather
    # than by filtering the table, which the caller still holds: on 1M rows the whole
    # window's input and a filtered copy of the table were 0.7 GB more at the fit.
    window_rows, window_frauds = len(fraud), int(fraud.sum())
    sample, weights = training_sample(fraud)
    if sample is not None:
        rows, fraud = rows[sample], fraud[sample]
    if vectors is None:
        vectors = model_input(table, rows=rows)
    elif sample is not None:
        vectors = vectors[sample]
    trained = fit(vectors, fraud, weights, 0, chosen)
    info = save(trained, folder, window_rows, window_frauds, candidate=chosen, grid=grid,
                settings=settings)
    return info, chosen, grid


def model_input(table: Any, names: Sequence[str] = MODEL_FEATURES,
                rows: np.ndarray | None = None) -> np.ndarray:
    """A feature table's model input (of the given row positions, else every row), a row
    per transaction, filled column by column: stacking a list of each column's copy held
    the features twice more."""
    out = np.empty((table.num_rows if rows is None else len(rows), len(names)))
    for i, name in enumerate(names):
        column = table[name].to_numpy()
        out[:, i] = column if rows is None else column[rows]
    return out


def save(model: Any, folder: Path, train_rows: int, train_frauds: int,
         metrics: dict[str, float] | None = None, candidate: Candidate = DEFAULT,
         grid: list[dict[str, Any]] | None = None,
         settings: FeatureSettings | None = None) -> ModelInfo:
    folder.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(model)
    version = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + \
        hashlib.sha256(payload).hexdigest()[:8]
    info = ModelInfo(version, MODEL_FEATURES, dt.datetime.now(dt.UTC).isoformat(),
                     train_rows, train_frauds,
                     {"family": candidate.family, **dict(candidate.params),
                      "class_weight": candidate.class_weight}, dict(metrics or {}),
                     asdict(settings) if settings else {})
    (folder / MODEL_FILE).write_bytes(payload)
    (folder / INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n")
    if grid is not None:  # what the selection compared, beside what it chose
        (folder / GRID_FILE).write_text(json.dumps(grid, indent=2) + "\n")
    return info


def load_info(folder: Path) -> ModelInfo:
    try:
        raw = json.loads((folder / INFO_FILE).read_text())
        info = ModelInfo(**{**raw, "features": tuple(raw["features"])})
    except FileNotFoundError:
        raise ModelError(f"no model in {folder} (expected {INFO_FILE} and {MODEL_FILE}); "
                         "train one with `python -m fraud_detection train`") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{folder / INFO_FILE}: not a model description: {exc}") from None
    if info.features != MODEL_FEATURES:
        raise ModelError(f"model {info.version} was trained on other features than this "
                         "code computes; retrain it")
    if not (folder / MODEL_FILE).is_file():
        raise ModelError(f"{folder / MODEL_FILE} is missing")
    return info


def load(folder: Path) -> tuple[Any, ModelInfo]:
    info = load_info(folder)
    return pickle.loads((folder / MODEL_FILE).read_bytes()), info
