"""Batch: Parquet -> validation -> DetectFraud -> Cassandra (every query table, balances,
Benford reports, dead letters), plus the dataset's entities when it has them: --input a
dataset folder, or a glob or file inside its transactions/. Entities are read and
checked in the pipeline like transactions; a bad one goes to the dead letters."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindows

from fraud_detection.beam_pipelines.options import (
    DetectOptions,
    DetectSummary,
    InputOptions,
    for_workers,
    runs_here,
    with_local_runner,
)
from fraud_detection.beam_pipelines.validate import input_pattern
from fraud_detection.config import Settings
from fraud_detection.io.cassandra import WriteToCassandra
from fraud_detection.io.parquet import ENTITY_FOLDERS, check_readable, dataset_root, entity_pattern
from fraud_detection.store.keyspace import connect
from fraud_detection.store.tables import (
    benford_row,
    dead_letter_row,
    entity_rows,
    scored_table_rows,
)
from fraud_detection.transforms.benford import BenfordReports
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.parse import (
    ValidateEntities,
    ValidateTransactions,
    at_event_time,
)
from fraud_detection.transforms.rules import load_rules


def run(argv: list[str], settings: Settings, values: Mapping[str, Any] | None = None,
        lookback: Sequence[str] = (), days: tuple[dt.date, dt.date] | None = None,
        entities: bool = True) -> DetectSummary:
    """values: options as typed values (PipelineOptions keywords), over argv's;
    lookback: Parquet files read only to seed detection's history; days: write only the
    transactions of these event days; entities: also write the dataset's entities (a
    backfill re-scores transactions only)."""
    options = with_local_runner(PipelineOptions(argv, **(values or {})))
    detect = options.view_as(DetectOptions)
    source = options.view_as(InputOptions).input
    pattern = input_pattern(source)
    rules = load_rules(Path(detect.rules_source()))
    model_dir = detect.checked_model_dir()
    shards = detect.checked_shards()
    root = dataset_root(source) if entities else None
    entity_globs = {kind: entity_pattern(root, kind) for kind in ENTITY_FOLDERS} if root else {}
    entity_patterns = {kind: glob for kind, glob in entity_globs.items() if glob}
    # A damaged entity file fails here too, in one line, before anything is written.
    check_readable(m.path for glob in entity_patterns.values()
                   for m in FileSystems.match([glob])[0].metadata_list)
    if entities and not entity_patterns:
        logging.getLogger(__name__).warning(
            "no entities/ beside %s: only transactions are written", source)
    # Dead letters of one run share a day, so re-running a day rewrites the same rows.
    received = dt.datetime.combine(dt.date.today(), dt.time(), dt.UTC)
    if runs_here(options):
        # Fail fast: the writers first connect once rows reach them, minutes into a run.
        # Not for a remote runner, whose workers may reach hosts this machine cannot.
        connect(settings).close()
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        checked = (pipeline
                   | "Read" >> beam.io.ReadFromParquet(pattern)
                   | "Validate" >> ValidateTransactions(source=f"parquet:{pattern}"))
        history = checked.valid
        if lookback:
            earlier = (pipeline
                       | "LookBackFiles" >> beam.Create([for_workers(f) for f in lookback])
                       | "ReadLookBack" >> beam.io.ReadAllFromParquet()
                       | "ValidateLookBack" >> ValidateTransactions(
                           source="parquet:lookback", counted=False))
            # Its dead letters belong to the runs of their own days.
            history = (checked.valid, earlier.valid) | "WithLookBack" >> beam.Flatten()
        failed = [
            (history
            | "Detect" >> DetectFraud(rules, settings.fraud_threshold, model_dir=model_dir,
                                      shards=shards, days=days, as_tables=True)
            | "WriteTransactions" >> WriteToCassandra(settings, scored_table_rows,
                                                      batched=True)).failed,
            checked.valid
            | "AtEventTime" >> beam.Map(at_event_time)
            | "Benford" >> BenfordReports()
            | "Unwindowed" >> beam.WindowInto(GlobalWindows())
            | "WriteBenford" >> WriteToCassandra(settings, lambda r: [benford_row(r)]),
        ]
        dead_letters = [checked.dead_letters]
        for kind, entity_glob in entity_patterns.items():
            entities = (pipeline
                        | f"Read{kind.title()}" >> beam.io.ReadFromParquet(entity_glob)
                        | f"Validate{kind.title()}" >> ValidateEntities(
                            kind.removesuffix("s"), source=f"parquet:{entity_glob}"))
            failed.append(entities.valid
                          | f"Write{kind.title()}" >> WriteToCassandra(settings, entity_rows))
            dead_letters.append(entities.dead_letters)
        failed.append(tuple(dead_letters)
                      | "DeadLetters" >> beam.Flatten()
                      | "WriteDeadLetters" >> WriteToCassandra(
                          settings, lambda letter: [dead_letter_row(letter, received)]))
        _ = (failed
             | "Failed" >> beam.Flatten()
             | "FailedJson" >> beam.Map(lambda f: f"{f.table}: {f.error}")
             | "LogFailed" >> beam.io.WriteToText(
                 FileSystems.join(for_workers("out"), "failed-writes", "batch"),
                 file_name_suffix=".txt"))
    result = pipeline.result
    return DetectSummary.of(result, time.monotonic() - started)
