"""Rows/s of DetectFraud in a batch pipeline against the same detection in plain
pyarrow/numpy, in one process, in the same run. Goal: ratio >= 0.8 at 1M rows.

References: read the Parquet files with pyarrow, then `kernel.detect` over the whole table
from empty state: every feature, the rules, the decision and reasons, and (second
reference) the model. No Beam, no shards.
Ours: a Beam pipeline (FnApiRunner) reading the same files with
ReadAllFromParquetBatched into DetectFraud(as_tables=True): the same work, in account
and counterparty shards, with and without the model (trained on the reference's
features); each ratio is against the reference doing the same work. Between them, for
where the time goes: the same shards and steps in one process, no Beam. Each Beam run
checks, from its `detect/scored` counter, that every row came out. The process keeps its
freed memory (fraud_detection.memory), as DetectFraud's workers do. The machine is
shared: --repeat runs them all in turn that many times, and the table shows each one's
best (least disturbed) and median seconds; rows/s and ratio use the best.

--profile prints where the time of each kernel step goes (cProfile, top functions by
cumulative time), and of a whole Beam run with the rules.

    python bench/detect_throughput.py [--rows 1000000] [--shards 4] [--repeat 1] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics.metric import MetricsFilter

from fraud_detection import model
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import transaction_files
from fraud_detection.memory import keep_freed_memory
from fraud_detection.records import LEGIT
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DEFAULT_SHARDS, DetectFraud
from fraud_detection.transforms.rules import load_rules


def features(files: list[Path]) -> tuple[pa.Table, np.ndarray]:
    """The training table's model input and labels: what the model is trained on."""
    table = pa.concat_tables(pq.read_table(f) for f in files)
    rows = kernel.detect(table, kernel.Decider(load_rules(), 0.5), features_only=True)
    matrix = np.column_stack([rows[name].to_numpy() for name in kernel.MODEL_FEATURES])
    return matrix, np.array([label != LEGIT for label in rows["label"].to_pylist()])


def reference(files: list[Path], model_dir: Path | None) -> int:
    """kernel.detect over the whole table in one process: the same work as DetectFraud."""
    table = pa.concat_tables(pq.read_table(f) for f in files)
    trained, version = (model.load(model_dir)[0], "bench") if model_dir else (None, "")
    return kernel.detect(table, kernel.Decider(load_rules(), 0.5, trained, version)).num_rows


def sharded(files: list[Path], shards: int) -> int:
    """What DetectFraud with rules does, in one process without Beam: the same shards by
    account then by counterparty, each step per shard, rules and decision. The gap to
    the reference is sharding and deciding; the gap from here to Beam is Beam's."""
    table = pa.concat_tables(pq.read_table(f) for f in files)
    decider = kernel.Decider(load_rules(), 0.5)
    featured = [kernel.account_step(part, None, keep_state=False)[0]
                for _, part in kernel.split_by(kernel.with_positions(table), "account_id",
                                               shards)]
    featured_all = pa.concat_tables(featured)
    scored = [kernel.counterparty_step(part, None, decider, None, keep_state=False)[0]
              for _, part in kernel.split_by(featured_all, "counterparty_id", shards)]
    return sum(t.num_rows for t in scored)


def beam_tables(files: list[Path], model_dir: Path | None, shards: int) -> int:
    """DetectFraud over the files; the rows it scored."""
    pipeline = beam.Pipeline("FnApiRunner")
    _ = (pipeline | beam.Create([str(f) for f in files])
         | beam.io.ReadAllFromParquetBatched()
         | DetectFraud(load_rules(), 0.5, model_dir=model_dir, shards=shards, as_tables=True)
         | beam.Map(lambda t: t.num_rows))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("scored"))["counters"]
    return sum(c.committed or c.attempted or 0 for c in counters)


def timed(action, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = action(*args)
    return time.perf_counter() - started, result


def profiled(title: str, action, *args, top: int = 18) -> None:
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(action, *args)
    seconds = time.perf_counter() - started
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(top)
    print(f"\n=== {title}: {seconds:.2f} s (under cProfile) ===")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def profile_steps(files: list[Path], shards: int) -> None:
    table = pa.concat_tables(pq.read_table(f) for f in files)
    profiled("kernel.account_step, whole table", kernel.account_step, table, None, False)
    featured, _ = kernel.account_step(table, None, keep_state=False)
    decider = kernel.Decider(load_rules(), 0.5)
    profiled("kernel.counterparty_step, whole table, rules", kernel.counterparty_step,
             featured, None, decider, None, kernel.DELAY_DAYS, kernel.WINDOW_DAYS, False)
    # What the Beam shard functions do besides the steps, per shard.
    parts = list(kernel.split_by(table, "account_id", shards))
    profiled(f"split_by account_id into {shards} shards + with_positions",
             lambda: list(kernel.split_by(kernel.with_positions(table), "account_id", shards)))
    profiled(f"account_step per shard ({shards})",
             lambda: [kernel.account_step(p, None, keep_state=False) for _, p in parts])
    profiled("DetectFraud, FnApiRunner, rules (the Beam run)", beam_tables, files, None,
             shards, top=40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate(WorldConfig(days=30, seed=9, rows=args.rows), world, progress=False)
        files = transaction_files(world)
        rows = pq.ParquetDataset(files).read().num_rows
        matrix, labels = features(files)
        model_dir = Path(tmp) / "model"
        model.save(model.train(matrix, labels.astype(int)), model_dir, len(labels),
                   int(labels.sum()))
        del matrix, labels
        plans = {
            "reference": (reference, files, None),
            "reference_model": (reference, files, model_dir),
            "sharded": (sharded, files, args.shards),
            "rules": (beam_tables, files, None, args.shards),
            "model": (beam_tables, files, model_dir, args.shards),
        }
        runs: dict[str, list[float]] = {key: [] for key in plans}
        scored: dict[str, int] = {}
        for _ in range(args.repeat):
            for key, (action, *action_args) in plans.items():
                seconds, scored[key] = timed(action, *action_args)
                runs[key].append(seconds)
        if args.profile:
            profile_steps(files, args.shards)

    print(f"\n{rows} transactions, 30 days, {len(files)} files, {args.shards} shards, "
          f"2 cores, best of {args.repeat}")
    print(f"{'what':<46} {'rows':>8} {'best s':>7} {'median s':>8} {'rows/s':>8} {'ratio':>6}")
    lines = [  # (what, key, the reference its ratio is against)
        ("kernel.detect, rules (reference)", "reference", "reference"),
        ("kernel in shards, rules, no Beam", "sharded", "reference"),
        ("DetectFraud, FnApiRunner, rules", "rules", "reference"),
        ("kernel.detect, rules + model (reference)", "reference_model", "reference_model"),
        ("DetectFraud, FnApiRunner, rules + model", "model", "reference_model"),
    ]
    for what, key, against in lines:
        n, best = scored[key], min(runs[key])
        rate = n / best
        ratio = rate / (scored[against] / min(runs[against]))
        print(f"{what:<46} {n:>8} {best:>7.2f} {statistics.median(runs[key]):>8.2f} "
              f"{rate:>8.0f} {ratio:>6.3f}")
    for what, key, _ in lines:
        if scored[key] != rows:
            print(f"!! {what}: scored {scored[key]} of {rows} rows")


if __name__ == "__main__":
    main()
