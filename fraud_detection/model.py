"""The trained model: its feature vector, training, and how it is saved and served.

A model folder holds `model.pkl` (a scikit-learn estimator, applied by the detection
kernel to each batch) and `model.json` (version, feature names, what it was trained on). The
pipeline refuses a model whose feature list differs from the code's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fraud_detection.errors import UsageError
from fraud_detection.transforms.kernel import MODEL_FEATURES

MODEL_FILE, INFO_FILE = "model.pkl", "model.json"


class ModelError(UsageError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    version: str
    features: tuple[str, ...]
    trained_at: str
    train_rows: int
    train_frauds: int
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


PARAMS = {"max_iter": 300, "learning_rate": 0.08, "max_leaf_nodes": 31,
          "l2_regularization": 1.0, "early_stopping": False}


# Above this many legitimate rows, training takes a uniform sample of them, each weighted
# by the inverse of its sampling rate: the trees see every fraud, the probabilities stay
# calibrated to the real fraud rate, and 1M rows train in a fraction of the time.
MAX_LEGIT_ROWS = 200_000


def train(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A gradient-boosted tree model. Not re-weighted towards fraud: its probabilities
    stay calibrated to the real fraud rate, so a probability of 0.5 means what the
    threshold says."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ModelError("training needs both fraud and legitimate transactions")
    legit = np.flatnonzero(labels == 0)
    weights = None
    if len(legit) > MAX_LEGIT_ROWS:
        sample = np.random.default_rng(seed).choice(legit, MAX_LEGIT_ROWS, replace=False)
        rows = np.sort(np.concatenate([np.flatnonzero(labels != 0), sample]))
        weights = np.where(labels[rows] == 0, len(legit) / MAX_LEGIT_ROWS, 1.0)
        features, labels = features[rows], labels[rows]
    model = HistGradientBoostingClassifier(**PARAMS, random_state=seed)
    model.fit(features, labels, sample_weight=weights)
    return model


def save(model: Any, folder: Path, train_rows: int, train_frauds: int,
         metrics: dict[str, float] | None = None) -> ModelInfo:
    folder.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(model)
    version = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + \
        hashlib.sha256(payload).hexdigest()[:8]
    info = ModelInfo(version, MODEL_FEATURES, dt.datetime.now(dt.UTC).isoformat(),
                     train_rows, train_frauds, dict(PARAMS), dict(metrics or {}))
    (folder / MODEL_FILE).write_bytes(payload)
    (folder / INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n")
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
