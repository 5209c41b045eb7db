"""The trained model: its feature vector, training, and how it is saved and served.

A model folder holds `model.pkl` (a scikit-learn estimator, loaded by Beam's
RunInference) and `model.json` (version, feature names, what it was trained on). The
pipeline refuses a model whose feature list differs from the code's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fraud_detection.errors import UsageError
from fraud_detection.records import COUNTERPARTY_TYPES, TX_TYPES
from fraud_detection.transforms.features import FEATURE_NAMES, FeaturedTransaction

MODEL_FEATURES: tuple[str, ...] = (
    *FEATURE_NAMES,
    "log_amount",
    "hour",
    *(f"tx_type_{t}" for t in TX_TYPES),
    *(f"counterparty_type_{t}" for t in COUNTERPARTY_TYPES),
)
MODEL_FILE, INFO_FILE = "model.pkl", "model.json"


class ModelError(UsageError):
    pass


def model_vector(featured: FeaturedTransaction) -> np.ndarray:
    tx = featured.transaction
    values = [float(getattr(featured.features, name)) for name in FEATURE_NAMES]
    values.append(math.log1p(tx.amount_cents))
    values.append(float(tx.event_time.hour))
    values.extend(float(tx.tx_type == t) for t in TX_TYPES)
    values.extend(float(tx.counterparty_type == t) for t in COUNTERPARTY_TYPES)
    return np.asarray(values, dtype=np.float64)


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


def train(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A gradient-boosted tree model. Not re-weighted: its probabilities stay calibrated
    to the real fraud rate, so a probability of 0.5 means what the threshold says."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ModelError("training needs both fraud and legitimate transactions")
    model = HistGradientBoostingClassifier(**PARAMS, random_state=seed)
    model.fit(features, labels)
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


def fraud_probabilities(model: Any, batch: Sequence[np.ndarray],
                        inference_args: dict[str, Any] | None = None) -> np.ndarray:
    """RunInference's inference_fn: P(fraud) for each example, not the class."""
    return model.predict_proba(np.stack(batch, axis=0))[:, 1]


def model_handler(folder: Path):
    """A keyed Beam model handler: (key, vector) -> (key, PredictionResult)."""
    from apache_beam.ml.inference.base import KeyedModelHandler
    from apache_beam.ml.inference.sklearn_inference import ModelFileType, SklearnModelHandlerNumpy

    load_info(folder)
    return KeyedModelHandler(SklearnModelHandlerNumpy(
        model_uri=str(folder / MODEL_FILE), model_file_type=ModelFileType.PICKLE,
        inference_fn=fraud_probabilities, min_batch_size=1, max_batch_size=2048))
