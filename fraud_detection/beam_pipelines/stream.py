"""Stream: Kafka transactions (and analysts' labels) -> validation -> known accounts ->
DetectFraud -> Cassandra (every query table and balances) and the alerts topic; bad
messages to the dead-letters topic and table with their bytes and reasons.

Exactly once in the tables comes from stable ids and idempotent upserts: a restart
re-reads the topic from its earliest retained offset (--start_from=earliest), which also
rebuilds every account's history, so the rows it rewrites are the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from fraud_detection.beam_pipelines.options import (
    STORED_RULES,
    DetectOptions,
    DetectSummary,
    on_runner_service,
    with_local_runner,
)
from fraud_detection.config import Settings
from fraud_detection.errors import UsageError
from fraud_detection.io.cassandra import STORED, KnownAccounts, WriteToCassandra
from fraud_detection.io.kafka import (
    COMMITTED,
    EARLIEST,
    TRANSACTION_PARTITIONS,
    CommitStored,
    ReadFromKafka,
    WriteToKafka,
    ensure_topics,
)
from fraud_detection.progress import ProgressReporter
from fraud_detection.records import (
    SCORE_FIELDS,
    TRANSACTION_FIELDS,
    DeadLetter,
    ScoredTransaction,
)
from fraud_detection.store.tables import dead_letter_row, scored_table_rows
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DEFAULT_CELL_MS, DetectFraud
from fraud_detection.transforms.parse import (
    DEAD_LETTERS,
    VALID,
    ValidateMessages,
    at_labelled_time,
    validate_label,
)
from fraud_detection.transforms.rules import load_rules

GROUP_ID = "fraud-detection-stream"
# Rows that still fail after this many tries (about 15 minutes of backoff) are reported;
# a Cassandra restart is well inside it.
STREAM_WRITE_ATTEMPTS = 40
# A read bundle's length: its messages and its watermark reach detection only when it
# ends, and a shard fires only once both topics' watermarks have passed its cell.
POLL_SECONDS = 0.2


class StreamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--rules_refresh_seconds", type=float, default=30.0)
        parser.add_argument("--start_from", default=EARLIEST, choices=(EARLIEST, COMMITTED),
                            help="where reading starts: the earliest retained offsets "
                                 "(rebuilds account histories; default) or the group's "
                                 "committed ones")
        parser.add_argument("--bounded", action="store_true",
                            help="read to the topics' current ends, then finish")
        parser.add_argument("--detach", action="store_true",
                            help="with --runner_service: submit and return; the job runs "
                                 "on in the service (`stack status` lists it, `stack down` "
                                 "ends it)")
        parser.add_argument("--cell_ms", type=int, default=DEFAULT_CELL_MS,
                            help="event-time cell a shard waits for before it runs the "
                                 "kernel: shorter means lower latency, more firings")


def alert_message(scored: ScoredTransaction) -> tuple[str, dict[str, Any]]:
    """The whole scored transaction but its source label (the data's ground truth, not
    something an alert may carry), keyed by account."""
    tx = scored.transaction
    message = {name: getattr(tx, name) for name in TRANSACTION_FIELDS if name != "label"}
    message.update({name: getattr(scored, name) for name in SCORE_FIELDS})
    message["reasons"] = list(scored.reasons)
    return tx.account_id, message


def dead_letter_message(letter: DeadLetter) -> tuple[str | None, dict[str, Any]]:
    return None, {**letter.to_dict(), "position": letter.position}


def _rules(opts: StreamOptions, detect: DetectOptions, settings: Settings):
    source = detect.rules_source(streaming=True)
    if source == STORED_RULES:
        from fraud_detection.store.keyspace import connect
        from fraud_detection.store.rules import StoredRules, stored_rules

        store = connect(settings)
        try:
            if not stored_rules(store):
                raise UsageError("the rules table is empty; load rules first with "
                                 "`python -m fraud_detection rules load FILE`")
        finally:
            store.close()
        return StoredRules(settings, opts.rules_refresh_seconds)
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"--rules: no such file: {path}")
    return load_rules(path)


def run(argv: list[str], settings: Settings,
        values: Mapping[str, Any] | None = None) -> DetectSummary | None:
    """Runs until the pipeline ends (or, with --detach, returns None once submitted).
    values: options as typed values (PipelineOptions keywords), over argv's."""
    options = PipelineOptions(argv, **(values or {}))
    opts = options.view_as(StreamOptions)
    # Before the local runner is resolved: that may build Prism first (minutes).
    if opts.detach and not on_runner_service(options):
        raise UsageError("--detach needs --runner_service: a local runner ends with this "
                         "process")
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = "PrismRunner"  # the local streaming one
    options = with_local_runner(options)
    detect = options.view_as(DetectOptions)
    options.view_as(StandardOptions).streaming = not opts.bounded
    rules = _rules(opts, detect, settings)
    shards = detect.checked_shards()
    if opts.cell_ms < 1:
        raise UsageError(f"--cell_ms must be at least 1, got {opts.cell_ms}")
    model_dir = detect.checked_model_dir()
    ensure_topics(settings, {settings.topic_transactions: TRANSACTION_PARTITIONS,
                             settings.topic_labels: 1, settings.topic_alerts: 1,
                             settings.topic_dead_letters: 1})
    source = f"kafka:{settings.topic_transactions}"
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    messages = (pipeline
                | "ReadTransactions" >> ReadFromKafka(
                    settings.kafka_bootstrap, [settings.topic_transactions], GROUP_ID,
                    bounded=opts.bounded, start_from=opts.start_from, commit_read=False,
                    poll_seconds=POLL_SECONDS, batched=True)
                | "Raw" >> beam.Map(lambda ms: [(m.position, m.timestamp_ms, m.value)
                                                for m in ms]))
    # A poll's messages travel as one list, and its valid transactions as one table.
    checked = messages | "Validate" >> ValidateMessages(source, batched=True)
    accounts = checked[VALID] | "KnownAccounts" >> KnownAccounts(settings, source)
    labels = (pipeline
              | "ReadLabels" >> ReadFromKafka(
                  settings.kafka_bootstrap, [settings.topic_labels], GROUP_ID,
                  bounded=opts.bounded, start_from=opts.start_from, idle_follows_clock=True,
                  # Read to its end, the topic is quiet at once: a label just read would
                  # otherwise hold every firing at its own time for idle_seconds.
                  idle_seconds=0.0, poll_seconds=POLL_SECONDS)
              | "RawLabels" >> beam.Map(lambda m: (m.position, m.timestamp_ms, m.value))
              | "ValidateLabels" >> ValidateMessages(
                  f"kafka:{settings.topic_labels}", validate_label, counted=False))
    scored = accounts["known"] | "Detect" >> DetectFraud(
        rules, settings.fraud_threshold, model_dir=model_dir, shards=shards,
        cell_ms=opts.cell_ms, as_tables=True,
        labels=labels[VALID] | "AtLabelledTime" >> beam.Map(at_labelled_time))
    dead = ((checked[DEAD_LETTERS], accounts["unknown"], labels[DEAD_LETTERS])
            | "DeadLetters" >> beam.Flatten())
    written = [
        # Written in the firing's own stage: its state commits with its output, so a
        # retried firing makes the same tables again, and a Reshuffle's hop was 100-250
        # ms of p99 at 200-1,000 tx/s.
        scored | "WriteTransactions" >> WriteToCassandra(
            settings, scored_table_rows, max_attempts=STREAM_WRITE_ATTEMPTS, batched=True,
            reshuffle=False),
        dead | "WriteDeadLetters" >> WriteToCassandra(
            # Each letter carries its message's time, so a re-read writes the same row.
            settings, lambda letter: [dead_letter_row(letter)],
            max_attempts=STREAM_WRITE_ATTEMPTS,
            # Only the transactions topic's letters: its progress is what is counted.
            position_of=lambda letter: letter.position if letter.source == source else ""),
    ]
    failed = [w.failed for w in written]
    # The group's offsets advance only past messages whose rows are stored: true lag.
    _ = ([w[STORED] for w in written]
         | "Stored" >> beam.Flatten()
         | "CommitStored" >> CommitStored(settings.kafka_bootstrap, GROUP_ID))
    _ = (scored
         | "Flagged" >> beam.FlatMap(kernel.flagged_records)
         | "Alerts" >> WriteToKafka(settings, settings.topic_alerts, alert_message))
    _ = dead | "DeadLetterTopic" >> WriteToKafka(settings, settings.topic_dead_letters,
                                                 dead_letter_message)
    _ = (failed
         | "Failed" >> beam.Flatten()
         | "LogFailed" >> beam.Map(lambda f: print(f"write failed: {f.table}: {f.error}",
                                                   flush=True)))
    result = pipeline.run()
    if opts.detach:
        return None
    reporter = ProgressReporter(settings, GROUP_ID)
    reporter.start()
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        result.cancel()
        raise
    finally:
        reporter.stop()
    return DetectSummary.of(result, time.monotonic() - started)
