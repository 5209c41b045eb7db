"""Validation as a transform: good records become Transactions, bad ones dead letters."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from fraud_detection.records import (
    FRAUD_LABELS,
    LEGIT,
    DeadLetter,
    epoch_micros,
    parse_event_time,
    raw_text,
    validate_transaction,
)
from fraud_detection.transforms.counterparty import LabelEvent

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


def _from_millis(timestamp_ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=timestamp_ms)


def decode_json(value: bytes) -> tuple[Any, str | None]:
    """(the decoded JSON value, None), or (None, the reason it is not JSON)."""
    try:
        return json.loads(value), None
    except UnicodeDecodeError as exc:
        return None, f"message: not UTF-8 text ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return None, f"message: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


class ValidateMessageFn(beam.DoFn):
    """(position, timestamp_ms, raw bytes) -> Transaction, or a DeadLetter that keeps the
    bytes, the reasons and the position."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.read = Metrics.counter("validate", "read")
        self.valid = Metrics.counter("validate", "valid")
        self.dead = Metrics.counter("validate", "dead_lettered")

    def process(self, message: tuple[str, int, bytes]):
        position, timestamp_ms, value = message
        self.read.inc()
        raw, problem = decode_json(value)
        transaction, errors = (None, [problem]) if problem else validate_transaction(raw)
        if errors:
            self.dead.inc()
            yield pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                self.source, tuple(errors), raw_text(value), position,
                _from_millis(timestamp_ms)))
        else:
            self.valid.inc()
            yield transaction


class ValidateMessages(beam.PTransform):
    """Raw messages (position, timestamp_ms, bytes) in; outputs `valid` (Transaction)
    and `dead_letters` (DeadLetter)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def expand(self, messages):
        return messages | beam.ParDo(ValidateMessageFn(self.source)).with_outputs(
            DEAD_LETTERS, main=VALID)


def validate_label(raw: Any) -> tuple[LabelEvent | None, list[str]]:
    """An analyst's label message -> LabelEvent, or every reason it is not one."""
    if not isinstance(raw, dict):
        return None, [f"label: expected an object, got {type(raw).__name__}"]
    errors = []
    for name in ("transaction_id", "counterparty_id"):
        if not isinstance(raw.get(name), str) or not raw.get(name):
            errors.append(f"{name}: text required")
    label = raw.get("label")
    if label != LEGIT and label not in FRAUD_LABELS:
        errors.append(f"label: {label!r} is not a known label")
    times = {}
    for name in ("transaction_time", "labelled_at"):
        try:
            times[name] = parse_event_time(raw.get(name))
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        return None, errors
    return LabelEvent(raw["transaction_id"], raw["counterparty_id"],
                      times["transaction_time"], label, times["labelled_at"]), []


class ValidateLabelFn(beam.DoFn):
    """(position, timestamp_ms, bytes) -> LabelEvent stamped at labelled_at, or a
    DeadLetter."""

    def __init__(self, source: str) -> None:
        self.source = source

    def process(self, message: tuple[str, int, bytes]):
        position, timestamp_ms, value = message
        raw, problem = decode_json(value)
        event, errors = (None, [problem]) if problem else validate_label(raw)
        if errors:
            yield pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                self.source, tuple(errors), raw_text(value), position,
                _from_millis(timestamp_ms)))
        else:
            yield TimestampedValue(event, Timestamp(micros=epoch_micros(event.labelled_at)))
