"""Export features: Parquet transactions -> one row per transaction with its label, its
model vector and the rules' score, for `train` and `evaluate`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from fraud_detection.beam_pipelines.options import (
    DetectOptions,
    InputOptions,
    counter_value,
    with_local_runner,
)
from fraud_detection.beam_pipelines.validate import input_pattern
from fraud_detection.errors import UsageError
from fraud_detection.model import MODEL_FEATURES, model_vector
from fraud_detection.transforms.detect import FeatureTransactions
from fraud_detection.transforms.parse import ValidateTransactions
from fraud_detection.transforms.rules import evaluate as evaluate_rules
from fraud_detection.transforms.rules import load_rules
from fraud_detection.transforms.score import combine, rule_values

FEATURE_TABLE_SCHEMA = pa.schema([
    ("transaction_id", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")),
    ("account_id", pa.string()),
    ("label", pa.string()),
    ("amount_cents", pa.int64()),
    ("rules_score", pa.float64()),
    *((name, pa.float64()) for name in MODEL_FEATURES),
])


class FeatureOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--features_out", help="path prefix of the feature Parquet files")


def feature_row(featured, rules) -> dict:
    tx = featured.transaction
    hits = evaluate_rules(rules, rule_values(featured))
    row = {"transaction_id": tx.transaction_id, "event_time": tx.event_time,
           "account_id": tx.account_id, "label": tx.label, "amount_cents": tx.amount_cents,
           "rules_score": combine([h.weight for h in hits])}
    row.update(zip(MODEL_FEATURES, model_vector(featured).tolist(), strict=True))
    return row


@dataclass(frozen=True)
class FeatureSummary:
    rows: int
    dead_lettered: int
    prefix: str
    seconds: float


def run(argv: list[str] | None = None) -> FeatureSummary:
    options = with_local_runner(PipelineOptions(argv))
    opts = options.view_as(FeatureOptions)
    pattern = input_pattern(options.view_as(InputOptions).input)
    if not opts.features_out:
        raise UsageError("--features_out is required")
    rules = load_rules(Path(options.view_as(DetectOptions).rules))
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        checked = (pipeline
                   | "Read" >> beam.io.ReadFromParquet(pattern)
                   | "Validate" >> ValidateTransactions(source=f"parquet:{pattern}"))
        _ = (checked.valid
             | "Featured" >> FeatureTransactions()
             | "ToRow" >> beam.Map(feature_row, rules)
             | "Write" >> beam.io.WriteToParquet(opts.features_out, FEATURE_TABLE_SCHEMA,
                                                 file_name_suffix=".parquet"))
    result = pipeline.result
    return FeatureSummary(counter_value(result, "valid"), counter_value(result, "dead_lettered"),
                          opts.features_out, time.monotonic() - started)


def read_feature_table(prefix: str) -> pa.Table:
    import glob

    import pyarrow.parquet as pq

    files = sorted(glob.glob(f"{prefix}*.parquet"))
    if not files:
        raise UsageError(f"no feature files at {prefix}*.parquet")
    table = pa.concat_tables(pq.read_table(f, schema=FEATURE_TABLE_SCHEMA) for f in files)
    return table.sort_by([("event_time", "ascending"), ("transaction_id", "ascending")])
