"""Validation as a transform: good records become Transactions, bad ones dead letters."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from fraud_detection.records import (
    DeadLetter,
    LabelEvent,
    Transaction,
    epoch_micros,
    label_error,
    parse_event_time,
    raw_text,
    validate_entity,
    validate_transaction,
)

VALID = "valid"
DEAD_LETTERS = "dead_letters"


class ValidateTransactionFn(beam.DoFn):
    def __init__(self, source: str, counted: bool = True) -> None:
        self.source = source
        self.counted = counted
        self.read = Metrics.counter("validate", "read")
        self.valid = Metrics.counter("validate", "valid")
        self.dead = Metrics.counter("validate", "dead_lettered")

    def process(self, raw: Any):
        transaction, errors = validate_transaction(raw)
        if self.counted:
            self.read.inc()
            (self.dead if errors else self.valid).inc()
        if errors:
            yield pvalue.TaggedOutput(
                DEAD_LETTERS, DeadLetter(self.source, tuple(errors), raw_text(raw)))
        else:
            yield transaction


class ValidateTransactions(beam.PTransform):
    """Raw dicts in; outputs `valid` (Transaction) and `dead_letters` (DeadLetter).
    counted: add to the pipeline's read / valid / dead_lettered counters (not for a
    backfill's look-back, which is read only to seed detection)."""

    def __init__(self, source: str, counted: bool = True) -> None:
        super().__init__()
        self.source = source
        self.counted = counted

    def expand(self, raw_records):
        return raw_records | beam.ParDo(
            ValidateTransactionFn(self.source, self.counted)).with_outputs(
                DEAD_LETTERS, main=VALID)


class ValidateEntityFn(beam.DoFn):
    """Raw rows of one entity kind -> entities, or dead letters with every reason."""

    def __init__(self, kind: str, source: str) -> None:
        self.kind = kind
        self.source = source
        self.read = Metrics.counter("validate_entities", "entities_read")
        self.dead = Metrics.counter("validate_entities", "entities_dead_lettered")

    def process(self, raw: Any):
        self.read.inc()
        entity, errors = validate_entity(self.kind, raw)
        if errors:
            self.dead.inc()
            yield pvalue.TaggedOutput(
                DEAD_LETTERS, DeadLetter(self.source, tuple(errors), raw_text(raw)))
        else:
            yield entity


class ValidateEntities(beam.PTransform):
    """Raw dicts of one kind (bank, user, account, merchant) in; outputs `valid` (the
    entity records) and `dead_letters` (DeadLetter)."""

    def __init__(self, kind: str, source: str) -> None:
        super().__init__()
        self.kind = kind
        self.source = source

    def expand(self, raw_records):
        return raw_records | beam.ParDo(ValidateEntityFn(self.kind, self.source)).with_outputs(
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
    """(position, timestamp_ms, raw bytes) -> the record `validate` makes of its JSON, or a
    DeadLetter that keeps the bytes, the reasons and the position. counted: add to the
    pipeline's read / valid / dead_lettered counters (the transactions, not labels).
    batched: each element is a list of messages, and its valid transactions come out as
    one table (kernel.TRANSACTION_SCHEMA and positions)."""

    def __init__(self, source: str, validate: Callable[[Any], tuple[Any, list[str]]],
                 counted: bool, batched: bool = False) -> None:
        self.source = source
        self.validate = validate
        self.counted = counted
        self.batched = batched
        self.read = Metrics.counter("validate", "read")
        self.valid = Metrics.counter("validate", "valid")
        self.dead = Metrics.counter("validate", "dead_lettered")

    def process(self, element):
        if not self.batched:
            checked = self._checked(element)
            self._count(1, 0 if isinstance(checked, DeadLetter) else 1)
            if isinstance(checked, DeadLetter):
                yield pvalue.TaggedOutput(DEAD_LETTERS, checked)
            elif isinstance(checked, Transaction):
                yield dataclasses.replace(checked, position=element[0])
            else:
                yield checked
            return
        from fraud_detection.transforms import kernel

        valid, positions = [], []
        for message in element:
            checked = self._checked(message)
            if isinstance(checked, DeadLetter):
                yield pvalue.TaggedOutput(DEAD_LETTERS, checked)
            else:
                valid.append(checked)
                positions.append(message[0])
        self._count(len(element), len(valid))
        if valid:
            yield kernel.table_of(valid, positions)

    def _count(self, read: int, valid: int) -> None:
        if self.counted:
            self.read.inc(read)
            self.valid.inc(valid)
            self.dead.inc(read - valid)

    def _checked(self, message: tuple[str, int, bytes]) -> Any:
        position, timestamp_ms, value = message
        raw, problem = decode_json(value)
        record, errors = (None, [problem]) if problem else self.validate(raw)
        if errors:
            return DeadLetter(self.source, tuple(errors), raw_text(value), position,
                              _from_millis(timestamp_ms))
        return record


class ValidateMessages(beam.PTransform):
    """Raw messages (position, timestamp_ms, bytes) in; outputs `valid` (Transaction, or
    what `validate` makes) and `dead_letters` (DeadLetter). batched: elements are lists
    of messages and `valid` holds a table of transactions per list."""

    def __init__(self, source: str, validate: Callable[[Any], tuple[Any, list[str]]]
                 = validate_transaction, counted: bool = True, batched: bool = False) -> None:
        super().__init__()
        if batched and validate is not validate_transaction:
            raise ValueError("batched validation makes tables of transactions only")
        self.source = source
        self.validate = validate
        self.counted = counted
        self.batched = batched

    def expand(self, messages):
        return messages | beam.ParDo(ValidateMessageFn(
            self.source, self.validate, self.counted, self.batched)).with_outputs(
                DEAD_LETTERS, main=VALID)


def validate_label(raw: Any) -> tuple[LabelEvent | None, list[str]]:
    """An analyst's label message -> LabelEvent, or every reason it is not one."""
    if not isinstance(raw, dict):
        return None, [f"label: expected an object, got {type(raw).__name__}"]
    errors = []
    for name in ("transaction_id", "counterparty_id"):
        if not isinstance(raw.get(name), str) or not raw.get(name):
            errors.append(f"{name}: text required")
    if (error := label_error(raw.get("label"))) is not None:
        errors.append(error)
    times = {}
    for name in ("transaction_time", "labelled_at"):
        try:
            times[name] = parse_event_time(raw.get(name))
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        return None, errors
    return LabelEvent(raw["transaction_id"], raw["counterparty_id"],
                      times["transaction_time"], raw["label"], times["labelled_at"]), []


def at_event_time(element: Any) -> TimestampedValue:
    """A record stamped with its own event time (records with an `event_time`)."""
    return TimestampedValue(element, Timestamp(micros=epoch_micros(element.event_time)))


def at_labelled_time(event: LabelEvent) -> TimestampedValue:
    """A label stamped with when the analyst gave it."""
    return TimestampedValue(event, Timestamp(micros=epoch_micros(event.labelled_at)))
