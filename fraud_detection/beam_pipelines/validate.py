"""Validate a Parquet dataset: every row either passes or lands in the dead letters."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from fraud_detection.beam_pipelines.options import (
    InputOptions,
    counter_value,
    for_workers,
    with_local_runner,
)
from fraud_detection.errors import UsageError
from fraud_detection.io.parquet import TRANSACTIONS_DIR, check_readable
from fraud_detection.transforms.parse import ValidateTransactions


class ValidateOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--dead_letters", default="out/dead-letters/validate",
            help="path prefix of the dead-letter JSON-lines files")


@dataclass(frozen=True)
class ValidateSummary:
    read: int
    valid: int
    dead_lettered: int
    dead_letters_prefix: str
    seconds: float

    def __str__(self) -> str:
        return (f"read {self.read}, valid {self.valid}, dead-lettered {self.dead_lettered} "
                f"(reasons in {self.dead_letters_prefix}*), {self.seconds:.1f}s")


def input_pattern(value: str | None) -> str:
    """The file glob for --input, failing with one line when it matches nothing or a
    matched file is damaged."""
    if not value:
        raise UsageError("--input is required: a Parquet glob or a dataset folder")
    pattern = for_workers(value)
    if not any(ch in value for ch in "*?[") and not value.endswith(".parquet"):
        pattern = FileSystems.join(pattern, TRANSACTIONS_DIR, "date=*", "*.parquet")
    matched = FileSystems.match([pattern])[0].metadata_list
    if not matched:
        raise UsageError(f"no Parquet files match {pattern}")
    check_readable(sorted(m.path for m in matched))  # a damaged file: one line, nothing read
    return pattern


def run(argv: list[str] | None = None,
        values: Mapping[str, Any] | None = None) -> ValidateSummary:
    """values: options as typed values (PipelineOptions keywords), over argv's."""
    options = with_local_runner(PipelineOptions(argv, **(values or {})))
    opts = options.view_as(ValidateOptions)
    pattern = input_pattern(options.view_as(InputOptions).input)
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        checked = (pipeline
                   | "Read" >> beam.io.ReadFromParquet(pattern)
                   | "Validate" >> ValidateTransactions(source=f"parquet:{pattern}"))
        _ = (checked.dead_letters
             | "ToJson" >> beam.Map(lambda d: json.dumps(d.to_dict(), sort_keys=True))
             | "WriteDeadLetters" >> beam.io.WriteToText(
                 for_workers(opts.dead_letters), file_name_suffix=".jsonl"))
    result = pipeline.result
    return ValidateSummary(
        read=counter_value(result, "read"), valid=counter_value(result, "valid"),
        dead_lettered=counter_value(result, "dead_lettered"),
        dead_letters_prefix=opts.dead_letters, seconds=time.monotonic() - started)
