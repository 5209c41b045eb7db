"""Helpers for the kernel's unit tests: per-row views of its output, and the per-row
specification of a decision (rules.evaluate, a noisy-or, reasons in rule order)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa

from fraud_detection.transforms import kernel
from fraud_detection.transforms.rules import Rule, evaluate


def featured_rows(table: pa.Table, labels: pa.Table | None = None,
                  delay_days: int = kernel.DELAY_DAYS,
                  window_days: int = kernel.WINDOW_DAYS) -> dict[str, dict[str, Any]]:
    """transaction id -> its fields, late and every feature (FEATURE_NAMES), from the
    kernel's two steps over the whole table from empty state."""
    featured, _ = kernel.account_step(table, None, keep_state=False)
    ordered = kernel.in_order(featured, "counterparty_id")
    features, _ = kernel.counterparty_features(ordered, labels, None, delay_days,
                                               window_days, keep_state=False)
    features.update(kernel.features_of(ordered))
    rows = {}
    for i, row in enumerate(ordered.to_pylist()):
        row.update((name, features[name][i].item()) for name in kernel.FEATURE_NAMES)
        rows[row["transaction_id"]] = row
    return rows


def reason_text(rule_id: str, description: str, field: str, value: Any) -> str:
    shown = f"{value:.2f}" if isinstance(value, float) else value
    return f"{description or rule_id} [{rule_id}: {field} = {shown}]"


def expected_decision(values: Mapping[str, Any], rules: Sequence[Rule], threshold: float,
                      probability: float | None = None,
                      version: str = "") -> tuple[float, bool, tuple[str, ...]]:
    """(score, flagged, reasons) of one row, from the per-row rule semantics."""
    hits = evaluate(rules, values)
    remaining = 1.0
    for hit in hits:
        remaining *= 1.0 - hit.weight
    reasons = [reason_text(h.rule_id, h.description, h.field, h.value) for h in hits]
    if probability is not None:  # the model has the rules' noisy-or among its inputs
        remaining = 1.0 - probability
        reasons.append(f"model {version or 'score'}: {probability:.2f}")
    if values.get("late"):
        reasons.append(kernel.LATE_REASON)
    score = round(1.0 - remaining, 6)
    return score, score >= threshold, tuple(reasons)


def _dump(items: list, path: str) -> None:
    Path(path).write_bytes(pickle.dumps(items))


def collect(build, out: Path) -> list:
    """Run a pipeline on FnApiRunner; `build(p)` gives a PCollection; its elements back."""
    with beam.Pipeline("FnApiRunner") as p:
        _ = (build(p) | "All" >> beam.combiners.ToList()
             | "Dump" >> beam.Map(_dump, str(out)))
    return pickle.loads(out.read_bytes())


def table_rows(tables: Sequence[pa.Table]) -> dict[str, dict[str, Any]]:
    """transaction id -> row, over tables; fails on a transaction seen twice."""
    rows: dict[str, dict[str, Any]] = {}
    for table in tables:
        for row in table.to_pylist():
            assert row["transaction_id"] not in rows, row["transaction_id"]
            rows[row["transaction_id"]] = row
    return rows
