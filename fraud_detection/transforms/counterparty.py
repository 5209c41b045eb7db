"""Counterparty risk from delayed labels: the share of a merchant's (or any
counterparty's) transactions known to be fraud, over a window that ends a delay
before the transaction, because fraud is confirmed days or weeks after it happens.

Labels come with the data in batch (a transaction's own label, visible only once the
delay has passed) and from the `labels` topic in streaming (LabelEvent). Both feed the
same per-counterparty state, run in event-time order by EventTimeOrderedFn.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import apache_beam as beam

from fraud_detection.records import LEGIT
from fraud_detection.transforms.features import FeaturedTransaction
from fraud_detection.transforms.ordered import EventTimeOrderedFn

DELAY_DAYS = 7
WINDOW_DAYS = 28
MIN_TRANSACTIONS = 10  # below this a share says nothing
NO_RISK_TYPES = frozenset({"cash"})  # ATMs: a shared counterparty, not a merchant


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """An analyst's verdict on a transaction, arriving after it (streaming labels)."""

    transaction_id: str
    counterparty_id: str
    transaction_time: dt.datetime
    label: str
    labelled_at: dt.datetime


def _day(moment: dt.datetime) -> int:
    return moment.toordinal()


@dataclass
class CounterpartyHistory:
    """Transactions and confirmed frauds per day of one counterparty, kept for the
    delay plus the window only."""

    days: dict[int, list[int]] = field(default_factory=dict)  # day -> [count, frauds]
    labelled: set[str] = field(default_factory=set)  # label events already counted
    last_time: dt.datetime | None = None
    delay_days: int = DELAY_DAYS
    window_days: int = WINDOW_DAYS

    def risk(self, at: dt.datetime) -> float:
        newest = _day(at) - self.delay_days  # exclusive: labels before it are known
        count = frauds = 0
        for day, (n, f) in self.days.items():
            if newest - self.window_days <= day < newest:
                count += n
                frauds += f
        return round(frauds / count, 6) if count >= MIN_TRANSACTIONS else 0.0

    def add_transaction(self, moment: dt.datetime, label: str | None) -> None:
        bucket = self.days.setdefault(_day(moment), [0, 0])
        bucket[0] += 1
        if label not in (None, LEGIT):
            bucket[1] += 1
        self._advance(moment)

    def add_label(self, event: LabelEvent) -> None:
        if event.transaction_id in self.labelled:
            return
        self.labelled.add(event.transaction_id)
        if event.label != LEGIT:
            self.days.setdefault(_day(event.transaction_time), [0, 0])[1] += 1
        self._advance(event.labelled_at)

    def _advance(self, moment: dt.datetime) -> None:
        if self.last_time is None or moment > self.last_time:
            self.last_time = moment
        oldest = _day(self.last_time) - self.delay_days - self.window_days
        for day in [d for d in self.days if d < oldest]:
            del self.days[day]
        if len(self.labelled) > 100_000:  # bounded: old verdicts will not repeat
            self.labelled.clear()


class CounterpartyRiskFn(EventTimeOrderedFn):
    def __init__(self, delay_days: int = DELAY_DAYS, window_days: int = WINDOW_DAYS,
                 bounded: bool = False) -> None:
        super().__init__(bounded)
        self.delay_days = delay_days
        self.window_days = window_days

    def event_time(self, element: FeaturedTransaction | LabelEvent) -> dt.datetime:
        if isinstance(element, LabelEvent):
            return element.labelled_at
        return element.transaction.event_time

    def order_key(self, element: FeaturedTransaction | LabelEvent) -> tuple:
        # At equal times a label counts before a transaction sees the history.
        if isinstance(element, LabelEvent):
            return element.labelled_at, 0, element.transaction_id
        return element.transaction.event_time, 1, element.transaction.transaction_id

    def new_state(self) -> CounterpartyHistory:
        return CounterpartyHistory(delay_days=self.delay_days, window_days=self.window_days)

    def last_time(self, state: CounterpartyHistory) -> dt.datetime | None:
        return None  # lateness is the account stage's to report

    def step(self, state: CounterpartyHistory, element, late: bool) -> Iterator:
        if isinstance(element, LabelEvent):
            state.add_label(element)
            return
        tx = element.transaction
        risk = state.risk(tx.event_time)
        state.add_transaction(tx.event_time, tx.label)
        yield dataclasses.replace(
            element, features=dataclasses.replace(element.features, counterparty_risk=risk))


class AddCounterpartyRisk(beam.PTransform):
    """FeaturedTransaction -> the same with features.counterparty_risk set. `labels`:
    an optional PCollection of LabelEvent (timestamped at labelled_at)."""

    def __init__(self, labels=None, delay_days: int = DELAY_DAYS,
                 window_days: int = WINDOW_DAYS) -> None:
        super().__init__()
        self.labels = labels
        self.delay_days = delay_days
        self.window_days = window_days

    def expand(self, featured):
        risky = featured | "WithoutRisk" >> beam.Partition(
            lambda f, _: int(f.transaction.counterparty_type not in NO_RISK_TYPES), 2)
        keyed = risky[1] | "KeyByCounterparty" >> beam.Map(
            lambda f: (f.transaction.counterparty_id, f))
        if self.labels is not None:
            labels = self.labels | "KeyLabels" >> beam.Map(lambda e: (e.counterparty_id, e))
            keyed = (keyed, labels) | "WithLabels" >> beam.Flatten()
        bounded = featured.is_bounded
        if bounded:
            # FnApiRunner loses a stateful stage's timer output when it feeds another
            # stateful stage directly; a Reshuffle between them avoids it in batch.
            keyed = keyed | "BetweenStatefulStages" >> beam.Reshuffle()
        scored = keyed | "InEventTimeOrder" >> beam.ParDo(
            CounterpartyRiskFn(self.delay_days, self.window_days, bounded))
        return (scored, risky[0]) | "All" >> beam.Flatten()
