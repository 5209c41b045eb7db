"""Rows/s of DetectFraud in a batch pipeline against plain pyarrow/numpy computing the
same per-account features, in the same run. Goal: ratio >= 0.5.

Reference: read the Parquet files with pyarrow, then the per-account features
(windows, robust z-score, time since last, new counterparty, balance, night/weekend,
Benford) and counterparty risk over the whole table, no Beam, no rules, no model.
Ours: a Beam pipeline (FnApiRunner) reading the same files into Arrow batches through
DetectFraudTables to scored tables: the features plus rules, decision and reasons,
with and without a model. For context, the per-element DetectFraud that streaming
runs, on the first --per-element-rows transactions.

    python bench/detect_throughput.py [--rows 1000000] [--per-element-rows 20000] [--shards 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fraud_detection import model
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import read_transactions, transaction_files
from fraud_detection.records import LEGIT, Transaction
from fraud_detection.transforms import columnar
from fraud_detection.transforms.detect import DEFAULT_SHARDS, DetectFraud, DetectFraudTables
from fraud_detection.transforms.rules import load_rules


def reference(files: list[Path]):
    table = columnar.in_account_order(
        pa.concat_tables(pq.read_table(f) for f in files))
    features = columnar.account_features(table)
    features["counterparty_risk"] = columnar.counterparty_risk(
        table, columnar.counterparty_days(table))
    return table, features


def beam_tables(files: list[Path], model_dir: Path | None, shards: int) -> None:
    with beam.Pipeline("FnApiRunner") as p:
        _ = (p | beam.Create([str(f) for f in files])
             | beam.io.ReadAllFromParquetBatched()
             | DetectFraudTables(load_rules(), 0.5, model_dir=model_dir, shards=shards)
             | beam.Map(lambda t: t.num_rows))


def beam_per_element(transactions: list[Transaction]) -> None:
    with beam.Pipeline("FnApiRunner") as p:
        _ = (p | beam.Create(transactions, reshuffle=False)
             | DetectFraud(load_rules(), 0.5)
             | beam.Map(lambda s: None))


def timed(action, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = action(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-element-rows", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate(WorldConfig(days=30, seed=9, rows=args.rows), world, progress=False)
        files = transaction_files(world)
        rows = pq.ParquetDataset(files).read().num_rows
        seconds_reference, (table, features) = timed(reference, files)
        labels = np.array([label != LEGIT for label in table["label"].to_pylist()])
        model_dir = Path(tmp) / "model"
        model.save(model.train(columnar.model_matrix(table, features), labels.astype(int)),
                   model_dir, len(labels), int(labels.sum()))
        seconds_rules, _ = timed(beam_tables, files, None, args.shards)
        seconds_model, _ = timed(beam_tables, files, model_dir, args.shards)
        sample = [Transaction(**r) for r in
                  read_transactions(world).slice(0, args.per_element_rows).to_pylist()]
        seconds_element, _ = timed(beam_per_element, sample)

    print(f"{rows} transactions, 30 days, {args.shards} shards of accounts, 2 cores")
    print(f"{'what':<58} {'rows':>8} {'seconds':>8} {'rows/s':>9} {'ratio':>6}")
    lines = [
        ("pyarrow/numpy per-account features (reference)", rows, seconds_reference),
        ("DetectFraudTables, FnApiRunner, rules", rows, seconds_rules),
        ("DetectFraudTables, FnApiRunner, rules + model", rows, seconds_model),
        ("DetectFraud per element (the streaming path), FnApiRunner", len(sample),
         seconds_element),
    ]
    reference_rate = rows / seconds_reference
    for what, n, seconds in lines:
        rate = n / seconds
        print(f"{what:<58} {n:>8} {seconds:>8.2f} {rate:>9.0f} {rate / reference_rate:>6.3f}")


if __name__ == "__main__":
    main()
