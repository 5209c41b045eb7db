"""Parity: DetectFraud streaming on Prism (a TestStream that delivers each day's arrivals
shuffled, some of them a day late, with analysts' verdicts on the day they were given,
and moves the watermark a day at a time) and DetectFraud in batch (the same rows, each
tagged with the day it arrived, and the same verdicts) give the same score, flag,
reasons and late mark for every transaction, and lose none: with one shard (both steps
in one stage) and with two (a stage per step).

PARITY_ROWS sets the world's size (default 50,000).
"""

import collections
import datetime as dt
import os
import pickle
import random
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.transforms import trigger
from apache_beam.utils.timestamp import Timestamp

from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import LabelEvent, Transaction
from fraud_detection.stack.runners import prism_args
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.parse import at_event_time, at_labelled_time
from fraud_detection.transforms.rules import load_rules, parse_rules

pytestmark = pytest.mark.integration

ROWS = int(os.environ.get("PARITY_ROWS", "50000"))
LATE_SHARE = 0.03  # of each day's transactions, delivered with the next day's
CELL_MS = 3_600_000  # an hour of event time per cell: many firings a day, per shard
LABELLED_SHARE = 0.02  # of transactions, confirmed as fraud by an analyst 1-5 days later
# No default rule reads counterparty risk: this one makes the verdicts move scores.
RISK_RULE = {"id": "risky_counterparty", "description": "counterparty with confirmed frauds",
             "when": {"field": "counterparty_risk", "op": ">", "value": 0.01}, "weight": 0.2}


def _outcome(scored) -> tuple:
    return (scored.transaction.transaction_id, scored.score, scored.flagged,
            scored.reasons, scored.late)


def _dump(outcomes: list, path: str) -> None:
    Path(path).write_bytes(pickle.dumps(outcomes))


def _collect(scored, out: Path):
    return (scored
            | beam.Map(_outcome)
            # One pane when the watermark reaches the end: legal on an unbounded input.
            | beam.WindowInto(beam.window.GlobalWindows(), trigger=trigger.AfterWatermark(),
                              accumulation_mode=trigger.AccumulationMode.DISCARDING)
            | beam.combiners.ToList()
            | beam.Map(_dump, str(out)))


def _arrival_days(table: pa.Table) -> np.ndarray:
    """The day each row arrives: its event day, or for a few the day after (late)."""
    day = kernel.micros(table) // kernel.DAY_MICROS
    late = np.random.default_rng(3).random(table.num_rows) < LATE_SHARE
    return day + late


def _verdicts(transactions: list[Transaction]) -> list[LabelEvent]:
    """Analysts' confirmed frauds, given within the label delay (so a verdict is in
    the counterparty's state before any row whose window could count it)."""
    rng = random.Random(7)
    return [LabelEvent(t.transaction_id, t.counterparty_id, t.event_time, "account_takeover",
                       t.event_time + dt.timedelta(days=rng.uniform(1, 5)))
            for t in transactions if rng.random() < LABELLED_SHARE]


def _day(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000) // kernel.DAY_MICROS


def _by_arrival(transactions: list[Transaction], arrival: np.ndarray,
                verdicts: list[LabelEvent]) -> test_stream.TestStream:
    days: dict[int, list] = collections.defaultdict(list)
    for tx, day in zip(transactions, arrival.tolist(), strict=True):
        days[day].append(at_event_time(tx))
    for event in verdicts:
        days[_day(event.labelled_at)].append(at_labelled_time(event))
    stream = test_stream.TestStream()
    shuffle = random.Random(1)
    for day in sorted(days):
        arriving = list(days[day])
        shuffle.shuffle(arriving)  # out of order within the day
        stream = stream.add_elements(arriving)
        stream = stream.advance_watermark_to(Timestamp(micros=(day + 1) * kernel.DAY_MICROS))
    return stream.advance_watermark_to_infinity()


def _is_label(element) -> int:
    return int(isinstance(element, LabelEvent))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The world, its arrivals and verdicts, and the batch outcomes."""
    root = tmp_path_factory.mktemp("parity")
    generate(WorldConfig(days=30, seed=5, rows=ROWS), root / "world", progress=False)
    table = read_transactions(root / "world")
    arrival = _arrival_days(table)
    transactions = [Transaction(**r) for r in table.to_pylist()]
    verdicts = _verdicts(transactions)
    rules = load_rules() + parse_rules({"rules": [RISK_RULE]})

    tagged = table.append_column(kernel.ARRIVAL, pa.array(arrival))
    parts = [tagged.slice(i, 5000) for i in range(0, tagged.num_rows, 5000)]
    with beam.Pipeline("FnApiRunner") as p:
        _collect(p | "Rows" >> beam.Create(parts)
                 | DetectFraud(rules, 0.5, labels=p | "Verdicts" >> beam.Create(verdicts)),
                 root / "batch")
    batch = pickle.loads((root / "batch").read_bytes())
    # The verdicts matter: over whole histories they move many scores.
    decider = kernel.Decider(rules, 0.5)
    moved = pc.sum(pc.not_equal(
        kernel.detect(table, decider)["score"],
        kernel.detect(table, decider, kernel.labels_table(verdicts))["score"])).as_py()
    assert moved > 100
    return {"transactions": transactions, "arrival": arrival, "verdicts": verdicts,
            "rules": rules, "batch": batch}


@pytest.mark.parametrize("shards", [1, 2])
def test_streaming_and_batch_give_identical_scores_reasons_and_late_marks(
        world: dict, shards: int, tmp_path: Path) -> None:
    transactions, batch = world["transactions"], world["batch"]
    options = PipelineOptions(prism_args())
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        arriving = (p | _by_arrival(transactions, world["arrival"], world["verdicts"])
                    | beam.Partition(lambda e, _: _is_label(e), 2))
        _collect(arriving[0] | DetectFraud(world["rules"], 0.5, labels=arriving[1],
                                           shards=shards, cell_ms=CELL_MS),
                 tmp_path / "stream")
    streaming = pickle.loads((tmp_path / "stream").read_bytes())

    assert len(batch) == len(transactions)
    by_id = collections.defaultdict(set)
    for outcome in streaming:
        by_id[outcome[0]].add(outcome)
    missing = {t.transaction_id for t in transactions} - set(by_id)
    assert not missing, f"{len(missing)} transactions lost in streaming"
    # Prism may deliver an output twice (at-least-once, harmless through the idempotent
    # sink); each transaction must still have exactly one outcome, the batch one.
    assert all(len(outcomes) == 1 for outcomes in by_id.values())
    assert sorted(o for outcomes in by_id.values() for o in outcomes) == sorted(batch)
    assert any(o[2] for o in batch)
    late = [o for o in batch if o[4]]
    assert late and all(kernel.LATE_REASON in o[3] for o in late)
