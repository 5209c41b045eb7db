"""Rows/s of WriteToCassandra against the raw driver writing the same rows, same node.

Reference: cassandra-driver's execute_concurrent, the plain way to write these rows,
sending the same requests (consecutive transactions' rows packed into unlogged batches
of the same prepared statements, bound by the driver) at the same concurrency, given
the rows ready-made. The sink gets scored tables of 1,000 transactions, as streaming
firings give it, and serializes them column-wise. The Beam pipelines read the same
generated world from Parquet; the same pipeline with a no-op sink is timed too, and its
time is taken off, so "net" is what the sink costs. Runs alternate. Goal: net ratio >=
0.9. Needs the stack's Cassandra (`python -m fraud_detection stack up`).

    python bench/sink_throughput.py [--transactions 40000] [--runs 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from fraud_detection.config import load_settings
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.cassandra import WriteToCassandra, one_request, packed
from fraud_detection.io.parquet import TRANSACTION_SCHEMA, transaction_files
from fraud_detection.records import LEGIT, ScoredTransaction, validate_transaction
from fraud_detection.store.keyspace import apply_schema, connect, drop_keyspace
from fraud_detection.store.tables import (
    STATEMENTS,
    RowWrite,
    scored_table_rows,
    scored_transaction_rows,
)
from fraud_detection.transforms.kernel import scored_table


def scored_file(path: str) -> list[ScoredTransaction]:
    scored = []
    for raw in pq.read_table(path, schema=TRANSACTION_SCHEMA).to_pylist():
        tx, _ = validate_transaction(raw)
        fraud = tx.label != LEGIT
        scored.append(ScoredTransaction(tx, 0.9 if fraud else 0.1, fraud,
                                        ("bench",) if fraud else ()))
    return scored


def raw_driver(settings, records: list[list[RowWrite]], concurrency: int) -> None:
    """The transactions' rows as the same requests the sink sends, ready-made."""
    from cassandra.concurrent import execute_concurrent

    store = connect(settings)
    try:
        prepared = {table: store.prepare(cql) for table, cql in STATEMENTS.items()}
        execute_concurrent(store.session,
                           ((one_request(prepared, rows), ()) for rows in packed(records)),
                           concurrency=concurrency, raise_on_first_error=True)
    finally:
        store.close()


def scored_tables(path: str, rows: int = 1_000) -> list[pa.Table]:
    """A file's scored transactions as tables of the size a streaming firing gives."""
    scored = scored_file(path)
    return [scored_table(scored[i:i + rows]) for i in range(0, len(scored), rows)]


def pipeline(files: list[str], beam_args: list[str], settings=None) -> None:
    """Parquet -> scored tables -> WriteToCassandra, or a no-op sink without settings."""
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        scored = p | beam.Create(files) | beam.FlatMap(scored_tables)
        if settings is None:
            _ = scored | beam.Reshuffle() | beam.Map(lambda _: None)
        else:
            _ = scored | WriteToCassandra(settings, scored_table_rows, batched=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cassandra-port", type=int, default=9042)
    args = parser.parse_args()
    settings = load_settings({"cassandra_keyspace": "bench_sink",
                              "cassandra_port": args.cassandra_port})
    drop_keyspace(settings)
    apply_schema(settings)
    world = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    generate(WorldConfig(days=30, seed=3, rows=args.transactions), world, progress=False)
    files = [str(f) for f in transaction_files(world)]
    scored = [s for f in files for s in scored_file(f)]
    records = [scored_transaction_rows(s) for s in scored]
    rows = sum(map(len, records))
    concurrency = settings.cassandra_max_in_flight
    fnapi = ["--runner=FnApiRunner"]
    two = ["--runner=FnApiRunner", "--direct_num_workers=2",
           "--direct_running_mode=multi_processing"]
    timings: dict[str, list[float]] = defaultdict(list)
    candidates = {
        "reference": lambda: raw_driver(settings, records, concurrency),
        "no-op 1": lambda: pipeline(files, fnapi),
        "sink 1": lambda: pipeline(files, fnapi, settings),
        "no-op 2": lambda: pipeline(files, two),
        "sink 2": lambda: pipeline(files, two, settings),
    }
    for _ in range(args.runs):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    median = {name: statistics.median(t) for name, t in timings.items()}
    reference = rows / median["reference"]
    print(f"{len(scored)} transactions -> {rows} rows, concurrency {concurrency}, "
          f"median of {args.runs} runs")
    print(f"{'writer':<44} {'total s':>8} {'no-op s':>8} {'net s':>7} {'rows/s':>8} "
          f"{'ratio':>6}")
    print(f"{'execute_concurrent (reference)':<44} {median['reference']:>8.2f} "
          f"{'':>8} {median['reference']:>7.2f} {reference:>8.0f} {1:>6.2f}")
    for workers, label in (("1", "1 worker"), ("2", "2 processes")):
        total, noop = median[f"sink {workers}"], median[f"no-op {workers}"]
        net = max(total - noop, 1e-9)
        print(f"{'WriteToCassandra, FnApiRunner, ' + label:<44} {total:>8.2f} {noop:>8.2f} "
              f"{net:>7.2f} {rows / net:>8.0f} {rows / net / reference:>6.2f}")
    drop_keyspace(settings)
    shutil.rmtree(world, ignore_errors=True)


if __name__ == "__main__":
    main()
