"""Export features: Parquet transactions -> one row per transaction with its label, its
model vector and the rules' score, for `train` and `evaluate`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from fraud_detection.beam_pipelines.options import (
    DetectOptions,
    InputOptions,
    counter_value,
    for_workers,
    with_local_runner,
)
from fraud_detection.beam_pipelines.validate import input_pattern
from fraud_detection.errors import UsageError
from fraud_detection.model import FeatureSettings
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.kernel import FEATURE_TABLE_SCHEMA
from fraud_detection.transforms.parse import ValidateTransactions
from fraud_detection.transforms.rules import load_rules


class FeatureOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        from fraud_detection.transforms.kernel import DELAY_DAYS, WINDOW_DAYS

        parser.add_argument("--features_out", help="path prefix of the feature Parquet files")
        parser.add_argument("--label_delay_days", type=int, default=DELAY_DAYS,
                            help="a counterparty's labels count this many days after "
                                 "its transactions")
        parser.add_argument("--counterparty_window_days", type=int, default=WINDOW_DAYS,
                            help="days of labelled history behind counterparty_risk")


@dataclass(frozen=True)
class FeatureView:
    """What the features pipeline's options say, defaults filled in."""

    rules: str
    label_delay_days: int
    counterparty_window_days: int


def feature_options(values: Mapping[str, Any]) -> FeatureView:
    """The features pipeline's options from typed values, its defaults filled in."""
    options = PipelineOptions([], **values)
    features = options.view_as(FeatureOptions)
    return FeatureView(options.view_as(DetectOptions).rules_source(),
                       features.label_delay_days, features.counterparty_window_days)


@dataclass(frozen=True)
class FeatureSummary:
    rows: int
    dead_lettered: int
    prefix: str
    seconds: float

    def __str__(self) -> str:
        invalid = f" ({self.dead_lettered} invalid rows left out)" if self.dead_lettered else ""
        return f"features of {self.rows} transactions in {self.seconds:.1f}s{invalid}"


def run(argv: list[str] | None = None,
        values: Mapping[str, Any] | None = None) -> FeatureSummary:
    """values: options as typed values (PipelineOptions keywords), over argv's."""
    options = with_local_runner(PipelineOptions(argv, **(values or {})))
    opts = options.view_as(FeatureOptions)
    pattern = input_pattern(options.view_as(InputOptions).input)
    if not opts.features_out:
        raise UsageError("--features_out is required")
    detect = options.view_as(DetectOptions)
    rules = load_rules(Path(detect.rules_source()))
    if opts.label_delay_days < 0:
        raise UsageError(f"--label-delay-days must not be negative, got "
                         f"{opts.label_delay_days}")
    if opts.counterparty_window_days < 1:
        raise UsageError(f"--counterparty-window-days must be at least 1, got "
                         f"{opts.counterparty_window_days}")
    shards = detect.checked_shards()
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        checked = (pipeline
                   | "Read" >> beam.io.ReadFromParquet(pattern)
                   | "Validate" >> ValidateTransactions(source=f"parquet:{pattern}"))
        # Detection's own kernel, features only: what is trained is what is served.
        _ = (checked.valid
             | "Features" >> DetectFraud(rules, shards=shards, features_only=True,
                                         delay_days=opts.label_delay_days,
                                         window_days=opts.counterparty_window_days)
             | "Write" >> beam.io.WriteToParquetBatched(
                 for_workers(opts.features_out),
                 with_settings(FEATURE_TABLE_SCHEMA, FeatureSettings.of(
                     rules, opts.label_delay_days, opts.counterparty_window_days)),
                 file_name_suffix=".parquet"))
    result = pipeline.result
    return FeatureSummary(counter_value(result, "valid"), counter_value(result, "dead_lettered"),
                          opts.features_out, time.monotonic() - started)


_SETTINGS_KEY = b"fraud_detection.feature_settings"


def with_settings(schema: pa.Schema, settings: FeatureSettings) -> pa.Schema:
    """The schema with the settings the table is computed with in its metadata."""
    return schema.with_metadata({_SETTINGS_KEY: json.dumps(asdict(settings))})


def read_feature_table(prefix: str) -> tuple[pa.Table, FeatureSettings | None]:
    """The table `features` wrote at prefix, and its settings (None if it predates
    them)."""
    import glob

    import pyarrow.parquet as pq

    files = sorted(glob.glob(f"{prefix}*.parquet"))
    if not files:
        raise UsageError(f"no feature files at {prefix}*.parquet")
    found = {(pq.read_schema(f).metadata or {}).get(_SETTINGS_KEY) for f in files}
    if len(found) > 1:
        raise UsageError(f"the feature files at {prefix}*.parquet were computed with "
                         "different settings; write them again with `features --out`")
    raw = found.pop()
    settings = FeatureSettings(**json.loads(raw)) if raw else None
    table = pa.concat_tables(pq.read_table(f, schema=FEATURE_TABLE_SCHEMA) for f in files)
    return (table.sort_by([("event_time", "ascending"), ("transaction_id", "ascending")]),
            settings)


def feature_table(argv: list[str], values: Mapping[str, Any], prefix: str | None = None,
                  progress: Callable[[FeatureSummary], None] = lambda summary: None,
                  ) -> tuple[pa.Table, FeatureSettings | None]:
    """The feature table at prefix if given (what `features` wrote), else computed now
    from the options' input, into a folder removed after it is read."""
    import tempfile

    from fraud_detection.memory import release_freed_memory

    if prefix:
        return read_feature_table(prefix)
    with tempfile.TemporaryDirectory(prefix="fraud-features-") as tmp:
        out = str(Path(tmp) / "features")
        progress(run(argv, {**values, "features_out": out}))
        release_freed_memory()  # what detection kept for its next batch: there is none
        return read_feature_table(out)
