"""Validation as a transform: good records become Transactions, bad ones dead letters."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from fraud_detection.records import DeadLetter, raw_text, validate_transaction

VALID = "valid"
DEAD_LETTERS = "dead_letters"


class ValidateTransactionFn(beam.DoFn):
    def __init__(self, source: str) -> None:
        self.source = source
        self.read = Metrics.counter("validate", "read")
        self.valid = Metrics.counter("validate", "valid")
        self.dead = Metrics.counter("validate", "dead_lettered")

    def process(self, raw: Any):
        self.read.inc()
        transaction, errors = validate_transaction(raw)
        if errors:
            self.dead.inc()
            yield pvalue.TaggedOutput(
                DEAD_LETTERS, DeadLetter(self.source, tuple(errors), raw_text(raw)))
        else:
            self.valid.inc()
            yield transaction


class ValidateTransactions(beam.PTransform):
    """Raw dicts in; outputs `valid` (Transaction) and `dead_letters` (DeadLetter)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def expand(self, raw_records):
        return raw_records | beam.ParDo(ValidateTransactionFn(self.source)).with_outputs(
            DEAD_LETTERS, main=VALID)
