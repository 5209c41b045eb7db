"""Batch and streaming give the same scores, reasons and late flags for the same
transactions.

Batch: FnApiRunner over a bounded collection. Streaming: Prism over a TestStream that
delivers each day's transactions shuffled, moving the watermark a day at a time, as a
live source would."""

from __future__ import annotations

import os
import random
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.transforms import trigger
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import Transaction, epoch_micros
from fraud_detection.stack.runners import prism_args
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.rules import load_rules

pytestmark = pytest.mark.integration

DAY_MICROS = 86_400 * 10**6
# 10k by default: on Prism the streaming side takes ~1 min per 10k (see the README).
ROWS = int(os.environ.get("PARITY_ROWS", "10000"))


def _dump(outcomes: list, path: str) -> None:
    Path(path).write_text("\n".join(sorted(outcomes)))


def _outcome(scored) -> str:
    return repr((scored.transaction.transaction_id, scored.score, scored.flagged,
                 scored.reasons, scored.late))


def _run(pipeline_options: PipelineOptions, source, out: Path) -> list[str]:
    with beam.Pipeline(options=pipeline_options) as p:
        _ = (p | source | DetectFraud(load_rules(), 0.5) | beam.Map(_outcome)
             # One pane when the watermark reaches the end: legal on an unbounded input.
             | beam.WindowInto(beam.window.GlobalWindows(), trigger=trigger.AfterWatermark(),
                               accumulation_mode=trigger.AccumulationMode.DISCARDING)
             | beam.combiners.ToList()
             | beam.Map(_dump, str(out)))
    return out.read_text().splitlines()


def test_batch_and_streaming_score_the_same_transactions_identically(tmp_path: Path) -> None:
    generate(WorldConfig(days=30, seed=5, rows=ROWS), tmp_path / "world", progress=False)
    txs = [Transaction(**r) for r in read_transactions(tmp_path / "world").to_pylist()]
    assert len(txs) >= ROWS

    batch = _run(PipelineOptions(["--runner=FnApiRunner"]), beam.Create(txs),
                 tmp_path / "batch.txt")

    by_day: dict[int, list[Transaction]] = {}
    for tx in txs:
        by_day.setdefault(epoch_micros(tx.event_time) // DAY_MICROS, []).append(tx)
    stream = test_stream.TestStream()
    shuffle = random.Random(1)
    for day in sorted(by_day):
        todays = by_day[day]
        shuffle.shuffle(todays)  # out of order within the day
        stream = stream.add_elements([
            TimestampedValue(t, Timestamp(micros=epoch_micros(t.event_time))) for t in todays])
        stream = stream.advance_watermark_to(Timestamp(micros=(day + 1) * DAY_MICROS))
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(prism_args())
    options.view_as(StandardOptions).streaming = True
    streaming = _run(options, stream, tmp_path / "stream.txt")

    assert len(batch) == len(txs)
    assert streaming == batch
