"""DetectFraud: the one composite that batch and streaming share."""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from fraud_detection.records import epoch_micros
from fraud_detection.transforms.features import ComputeAccountFeatures
from fraud_detection.transforms.rules import Rule
from fraud_detection.transforms.score import decide


class _DecideFn(beam.DoFn):
    def __init__(self, rules: Sequence[Rule], threshold: float) -> None:
        self.rules = list(rules)
        self.threshold = threshold
        self.scored = Metrics.counter("detect", "scored")
        self.flagged = Metrics.counter("detect", "flagged")

    def process(self, featured):
        scored = decide(featured, self.rules, self.threshold)
        self.scored.inc()
        if scored.flagged:
            self.flagged.inc()
        yield scored


class DetectFraud(beam.PTransform):
    """Transactions -> ScoredTransaction: event-time features per account, rules, decision."""

    def __init__(self, rules: Sequence[Rule], threshold: float = 0.5) -> None:
        super().__init__()
        self.rules = rules
        self.threshold = threshold

    def expand(self, transactions):
        return (transactions
                | "AtEventTime" >> beam.Map(
                    lambda t: TimestampedValue(t, Timestamp(micros=epoch_micros(t.event_time))))
                | "Features" >> ComputeAccountFeatures()
                | "Decide" >> beam.ParDo(_DecideFn(self.rules, self.threshold)))
