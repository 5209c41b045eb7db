"""Batch: Parquet -> validation -> DetectFraud -> Cassandra (every query table, balances,
Benford reports, dead letters), plus the dataset's entities when it has them."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindows

from fraud_detection.beam_pipelines.options import (
    DetectOptions,
    DetectSummary,
    InputOptions,
    with_local_runner,
)
from fraud_detection.beam_pipelines.validate import input_pattern
from fraud_detection.config import Settings
from fraud_detection.errors import UsageError
from fraud_detection.io.cassandra import WriteToCassandra
from fraud_detection.io.parquet import ENTITIES_DIR, entity_records
from fraud_detection.store.tables import (
    benford_row,
    dead_letter_row,
    entity_rows,
    scored_transaction_rows,
)
from fraud_detection.transforms.benford import BenfordReports
from fraud_detection.transforms.columnar import scored_records, table_of
from fraud_detection.transforms.detect import DEFAULT_SHARDS, DetectFraudTables
from fraud_detection.transforms.ordered import at_event_time
from fraud_detection.transforms.parse import ValidateTransactions
from fraud_detection.transforms.rules import load_rules

ENTITY_KINDS = ("banks", "users", "accounts", "merchants")


class BatchOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS,
                            help="groups of accounts scored together; a few per worker")


def _dataset_root(input_value: str) -> Path | None:
    """The dataset folder of --input when it is one (its entities/ are loaded too)."""
    root = Path(input_value)
    return root if (root / ENTITIES_DIR).is_dir() else None


def run(argv: list[str], settings: Settings) -> DetectSummary:
    options = with_local_runner(PipelineOptions(argv))
    opts = options.view_as(BatchOptions)
    detect = options.view_as(DetectOptions)
    source = options.view_as(InputOptions).input
    pattern = input_pattern(source)
    rules = load_rules(Path(detect.rules))
    model_dir = Path(detect.model_dir) if detect.model_dir else None
    if opts.shards < 1:
        raise UsageError(f"--shards must be at least 1, got {opts.shards}")
    root = _dataset_root(source)
    entities = [e for kind in ENTITY_KINDS for e in entity_records(root, kind)] if root else []
    # Dead letters of one run share a day, so re-running a day rewrites the same rows.
    received = dt.datetime.combine(dt.date.today(), dt.time(), dt.UTC)
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        checked = (pipeline
                   | "Read" >> beam.io.ReadFromParquet(pattern)
                   | "Validate" >> ValidateTransactions(source=f"parquet:{pattern}"))
        failed = [
            checked.valid
            | "Batches" >> beam.BatchElements(min_batch_size=1_000, max_batch_size=20_000)
            | "Tables" >> beam.Map(table_of)
            | "Detect" >> DetectFraudTables(rules, settings.fraud_threshold,
                                            model_dir=model_dir, shards=opts.shards)
            | "Records" >> beam.FlatMap(scored_records)
            | "WriteTransactions" >> WriteToCassandra(settings, scored_transaction_rows),
            checked.valid
            | "AtEventTime" >> beam.Map(at_event_time)
            | "Benford" >> BenfordReports()
            | "Unwindowed" >> beam.WindowInto(GlobalWindows())
            | "WriteBenford" >> WriteToCassandra(settings, lambda r: [benford_row(r)]),
            checked.dead_letters
            | "WriteDeadLetters" >> WriteToCassandra(
                settings, lambda letter: [dead_letter_row(letter, received)]),
        ]
        if entities:
            failed.append(pipeline
                          | "Entities" >> beam.Create(entities, reshuffle=False)
                          | "WriteEntities" >> WriteToCassandra(settings, entity_rows))
        _ = (failed
             | "Failed" >> beam.Flatten()
             | "FailedJson" >> beam.Map(lambda f: f"{f.table}: {f.error}")
             | "LogFailed" >> beam.io.WriteToText(
                 FileSystems.join("out", "failed-writes", "batch"), file_name_suffix=".txt"))
    result = pipeline.result
    return DetectSummary.of(result, time.monotonic() - started)
