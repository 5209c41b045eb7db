"""Rows/s of DetectFraud in a batch pipeline against plain numpy computing the same
per-account window features, in the same run.

Reference: the account features that vectorise (transactions and amounts over the
last 1 h / 24 h / 7 d / 30 d in hour buckets, time since the previous transaction, first
payment to a counterparty) over columns sorted by account and time, with numpy. It
leaves out the robust z-score, Benford and counterparty risk, so it is a floor, not
the whole job. Goal: ratio >= 0.5.

    python bench/detect_throughput.py [--rows 50000] [--runner FnApiRunner|PrismRunner]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.options.pipeline_options import PipelineOptions

from fraud_detection.beam_pipelines.options import with_local_runner
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import Transaction
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.features import WINDOWS_HOURS
from fraud_detection.transforms.rules import load_rules


def numpy_features(table: pa.Table) -> dict[str, np.ndarray]:
    order = pc.sort_indices(table, [("account_id", "ascending"), ("event_time", "ascending"),
                                    ("transaction_id", "ascending")])
    table = table.take(order)
    account = pc.dictionary_encode(table["account_id"]).combine_chunks().indices.to_numpy()
    micros = table["event_time"].cast(pa.int64()).to_numpy()
    amount = table["amount_cents"].to_numpy()
    hour = micros // 3_600_000_000
    # One sorted key per (account, hour): a window is a searchsorted range of it.
    key = account.astype(np.int64) * 10**7 + hour
    index = np.arange(len(key))
    cumulative = np.concatenate([[0], np.cumsum(amount)])
    out: dict[str, np.ndarray] = {}
    for name, hours in WINDOWS_HOURS.items():
        first = np.searchsorted(key, key - hours + 1, side="left")
        out[f"count_{name}"] = index - first
        out[f"amount_{name}"] = cumulative[index] - cumulative[first]
    starts = np.r_[True, account[1:] != account[:-1]]
    since = np.empty(len(micros))
    since[1:] = (micros[1:] - micros[:-1]) / 1e6
    since[starts] = -1.0
    out["seconds_since_last"] = since
    pair = pc.binary_join_element_wise(table["account_id"], table["counterparty_id"], "|")
    _, first_seen = np.unique(pair.to_numpy(zero_copy_only=False), return_index=True)
    new = np.zeros(len(key), dtype=bool)
    new[first_seen] = True
    out["new_counterparty"] = new
    return out


def beam_detect(transactions: list[Transaction], runner: str) -> None:
    options = with_local_runner(PipelineOptions([f"--runner={runner}"]))
    with beam.Pipeline(options=options) as p:
        _ = (p | beam.Create(transactions, reshuffle=False)
             | DetectFraud(load_rules(), 0.5)
             | beam.Map(lambda s: None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runner", default="FnApiRunner")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(WorldConfig(days=30, seed=9, rows=args.rows), Path(tmp), progress=False)
        table = read_transactions(Path(tmp))
    transactions = [Transaction(**r) for r in table.to_pylist()]
    rows = len(transactions)

    started = time.perf_counter()
    numpy_features(table)
    reference = time.perf_counter() - started
    started = time.perf_counter()
    beam_detect(transactions, args.runner)
    ours = time.perf_counter() - started

    print(f"{rows} transactions, 30 days")
    print(f"{'what':<52} {'seconds':>8} {'rows/s':>10} {'ratio':>7}")
    print(f"{'numpy window features (reference)':<52} {reference:>8.2f} "
          f"{rows / reference:>10.0f} {1:>7.3f}")
    print(f"{'DetectFraud, ' + args.runner + ' (features, risk, rules)':<52} {ours:>8.2f} "
          f"{rows / ours:>10.0f} {reference / ours:>7.3f}")


if __name__ == "__main__":
    main()
