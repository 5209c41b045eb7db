"""End-to-end rows/s of `batch` (Parquet -> validation -> DetectFraud -> Cassandra, with
Benford reports and entities) at growing sizes: cost per row should stay flat.

Each size is a generated 30-day world, scored by batch.run into a fresh keyspace on the
stack's Cassandra (`python -m fraud_detection stack up`). DirectRunner here is Beam's
local batch runner, FnApiRunner (what `--runner=DirectRunner` runs for batch). FlinkRunner
[local] runs 1M at parallelism 1 and 2 when its job server jar can be had; otherwise its
rows say why not.

The runner service (`stack up --runner-service --workers 2`: Prism's job service, each
SDK worker a process started by a worker pool) runs --service-rows too: one job in one
pool, then two jobs at once, one per pool, each over half as many rows (Prism starts
one worker per job, so a second pool serves a second job, not the same job faster);
their rows/s is both jobs' rows over the wall time until both ended. Without a running
service its rows say so.

    python bench/batch_throughput.py [--sizes 100000,1000000,5000000] [--flink-rows 1000000]
                                     [--service-rows 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from pathlib import Path

from fraud_detection.beam_pipelines import batch
from fraud_detection.beam_pipelines.options import DetectSummary
from fraud_detection.config import load_settings
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.stack import default_state_dir, status
from fraud_detection.stack.errors import StackError
from fraud_detection.stack.runners import flink_args
from fraud_detection.store.keyspace import apply_schema, drop_keyspace

KEYSPACE = "bench_batch"


def run_batch(world: Path, runner_args: list[str], settings) -> DetectSummary:
    drop_keyspace(settings)
    apply_schema(settings)
    return batch.run(["--input", str(world), *runner_args], settings)


def service_runs(scratch: Path, rows: int, settings) -> list[tuple[str, int, DetectSummary | str]]:
    """One job in one worker pool over `rows`, then two jobs at once, one per pool, each
    over half (two worlds of their own seeds, so their ids do not meet)."""
    running = {s.name for s in status() if s.running}
    if not {"prism", "worker-1", "worker-2"} <= running:
        why = (f"not run: no runner service with 2 worker pools in {default_state_dir()} "
               "(`python -m fraud_detection stack up --runner-service --workers 2`)")
        return [("runner service, 1 job in 1 pool", rows, why),
                ("runner service, 2 jobs in 2 pools", rows, why)]
    results: list[tuple[str, int, DetectSummary | str]] = []
    whole = scratch / "service-whole"
    generate(WorldConfig(days=30, seed=11, rows=rows), whole, progress=False)
    summary = run_batch(whole, ["--runner_service", "--worker_pool=1"], settings)
    results.append(("runner service, 1 job in 1 pool", rows, summary))
    print(f"runner service, 1 job: {summary}", flush=True)
    shutil.rmtree(whole)
    halves = [scratch / f"service-half-{seed}" for seed in (12, 13)]
    for seed, world in zip((12, 13), halves, strict=True):
        generate(WorldConfig(days=30, seed=seed, rows=rows // 2), world, progress=False)
    drop_keyspace(settings)
    apply_schema(settings)
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(batch.run, ["--input", str(world), "--runner_service",
                                        f"--worker_pool={i}"], settings)
                for i, world in enumerate(halves, start=1)]
        both = [job.result() for job in jobs]
    seconds = time.monotonic() - started
    summary = replace(both[0], **{f.name: getattr(both[0], f.name) + getattr(both[1], f.name)
                                  for f in fields(DetectSummary) if f.name != "seconds"},
                      seconds=seconds)
    results.append(("runner service, 2 jobs in 2 pools", rows, summary))
    print(f"runner service, 2 jobs: {summary}", flush=True)
    for world in halves:
        shutil.rmtree(world)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000",
                        help="comma-separated transaction counts for DirectRunner")
    parser.add_argument("--flink-rows", type=int, default=1_000_000,
                        help="rows for FlinkRunner [local] (0: none)")
    parser.add_argument("--service-rows", type=int, default=1_000_000,
                        help="rows for the runner service's rows (0: none)")
    parser.add_argument("--cassandra-port", type=int, default=9042)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    settings = load_settings({"cassandra_keyspace": KEYSPACE,
                              "cassandra_port": args.cassandra_port})
    results: list[tuple[str, int, DetectSummary | str]] = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        for size in sorted({*sizes, *([args.flink_rows] if args.flink_rows else [])}):
            world = scratch / f"world-{size}"
            generate(WorldConfig(days=30, seed=11, rows=size), world, progress=False)
            if size in sizes:
                summary = run_batch(world, ["--runner=FnApiRunner"], settings)
                results.append(("DirectRunner (FnApiRunner)", size, summary))
                print(f"DirectRunner {size}: {summary}", flush=True)
            if size == args.flink_rows:
                for parallelism in (1, 2):
                    what = f"FlinkRunner [local], parallelism {parallelism}"
                    try:
                        runner = flink_args(parallelism=parallelism)
                    except StackError as exc:
                        results.append((what, size, f"not run: {exc}"))
                        continue
                    summary = run_batch(world, runner, settings)
                    results.append((what, size, summary))
                    print(f"{what} {size}: {summary}", flush=True)
            shutil.rmtree(world)
        if args.service_rows:
            results += service_runs(scratch, args.service_rows, settings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        drop_keyspace(settings)

    print()
    print(f"{'runner':<40} {'rows in':>9} {'written':>10} {'flagged':>8} {'seconds':>8} "
          f"{'rows/s':>8} {'us/row':>7}")
    for what, size, summary in results:
        if isinstance(summary, str):
            print(f"{what:<40} {size:>9} {summary}")
            continue
        rate = summary.read / summary.seconds
        print(f"{what:<40} {summary.read:>9} {summary.rows_written:>10} {summary.flagged:>8} "
              f"{summary.seconds:>8.1f} {rate:>8.0f} {1e6 / rate:>7.1f}")


if __name__ == "__main__":
    main()
