"""DetectFraud: the one composite that batch and streaming share.

Transactions -> per-account features in event time -> counterparty risk from delayed
labels -> the model's probability (RunInference, when a model is given) -> rules and
the decision, with reasons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics

from fraud_detection.transforms import columnar
from fraud_detection.transforms.counterparty import DELAY_DAYS, WINDOW_DAYS, AddCounterpartyRisk
from fraud_detection.transforms.features import ComputeAccountFeatures
from fraud_detection.transforms.ordered import at_event_time
from fraud_detection.transforms.rules import Rule, RulesCache, RulesSource, StaticRules
from fraud_detection.transforms.score import decide


class _DecideFn(beam.DoFn):
    def __init__(self, rules: RulesSource, threshold: float, model_version: str) -> None:
        self.rules = rules
        self.threshold = threshold
        self.model_version = model_version
        self.scored = Metrics.counter("detect", "scored")
        self.flagged = Metrics.counter("detect", "flagged")

    def setup(self) -> None:
        self.cache = RulesCache(self.rules)

    def start_bundle(self) -> None:
        self.current = self.cache.current()

    def process(self, element):
        featured, prediction = element
        probability = None if prediction is None else float(prediction.inference)
        scored = decide(featured, self.current, self.threshold, probability,
                        self.model_version)
        self.scored.inc()
        if scored.flagged:
            self.flagged.inc()
        yield scored


class FeatureTransactions(beam.PTransform):
    """Transactions -> FeaturedTransaction: the account's behaviour in event time and the
    counterparty's risk from delayed labels. What the model trains on and scores."""

    def __init__(self, labels=None, delay_days: int = DELAY_DAYS,
                 window_days: int = WINDOW_DAYS) -> None:
        super().__init__()
        self.labels = labels
        self.delay_days = delay_days
        self.window_days = window_days

    def expand(self, transactions):
        return (transactions
                | "AtEventTime" >> beam.Map(at_event_time)
                | "Features" >> ComputeAccountFeatures()
                | "CounterpartyRisk" >> AddCounterpartyRisk(
                    self.labels, self.delay_days, self.window_days))


class DetectFraud(beam.PTransform):
    """Transactions -> ScoredTransaction.

    rules: a list, or a RulesSource re-read while the pipeline runs. model_dir: a folder
    written by `train`; without it the decision rests on rules alone. labels: an
    optional PCollection of LabelEvent (analysts' verdicts, streaming).
    """

    def __init__(self, rules: Sequence[Rule] | RulesSource, threshold: float = 0.5,
                 model_dir: Path | None = None, labels=None, delay_days: int = DELAY_DAYS,
                 window_days: int = WINDOW_DAYS) -> None:
        super().__init__()
        self.rules = rules if isinstance(rules, RulesSource) else StaticRules(rules)
        self.threshold = threshold
        self.model_dir = Path(model_dir) if model_dir else None
        self.labels = labels
        self.delay_days = delay_days
        self.window_days = window_days

    def expand(self, transactions):
        featured = transactions | "Featured" >> FeatureTransactions(
            self.labels, self.delay_days, self.window_days)
        version = ""
        if self.model_dir is None:
            predicted = featured | "NoModel" >> beam.Map(lambda f: (f, None))
        else:
            from apache_beam.ml.inference.base import RunInference

            from fraud_detection.model import load_info, model_handler, model_vector

            version = load_info(self.model_dir).version
            predicted = (featured
                         | "ToVector" >> beam.Map(lambda f: (f, model_vector(f)))
                         | "Model" >> RunInference(model_handler(self.model_dir)))
        return predicted | "Decide" >> beam.ParDo(
            _DecideFn(self.rules, self.threshold, version))


class _SumCounterpartyDays(beam.CombineFn):
    def create_accumulator(self) -> list:
        return []

    def add_input(self, tables: list, table) -> list:
        tables.append(table)
        return tables

    def merge_accumulators(self, accumulators) -> list:
        tables = [t for acc in accumulators for t in acc]
        return [columnar.sum_counterparty_days(tables)] if tables else []

    def extract_output(self, tables: list):
        return columnar.sum_counterparty_days(tables) if tables else \
            columnar.counterparty_days(columnar.table_of([]))


class _ScoreShardFn(beam.DoFn):
    """All transactions of a shard of accounts -> one scored table (or feature table)."""

    def __init__(self, rules: RulesSource, threshold: float, model_dir: Path | None,
                 delay_days: int, window_days: int, features_only: bool,
                 days: tuple[dt.date, dt.date] | None) -> None:
        self.rules = rules
        self.threshold = threshold
        self.model_dir = model_dir
        self.delay_days = delay_days
        self.window_days = window_days
        self.features_only = features_only
        self.days = days
        self.scored = Metrics.counter("detect", "scored")
        self.flagged = Metrics.counter("detect", "flagged")

    def setup(self) -> None:
        from fraud_detection import model

        self.cache = RulesCache(self.rules)
        self.model, self.version = None, ""
        if self.model_dir is not None:
            self.model, info = model.load(self.model_dir)
            self.version = info.version

    def process(self, element, counterparty):
        import pyarrow as pa

        _, tables = element
        if self.features_only:
            yield columnar.feature_table(pa.concat_tables(tables), self.cache.current(),
                                         counterparty, self.delay_days, self.window_days)
            return
        scored = columnar.score_table(
            pa.concat_tables(tables), self.cache.current(), self.threshold, counterparty,
            self.model, self.version, self.delay_days, self.window_days)
        if self.days is not None:
            scored = scored.filter(columnar.on_days(scored, *self.days))
        self.scored.inc(scored.num_rows)
        self.flagged.inc(scored["flagged"].combine_chunks().true_count)
        yield scored


# Each shard pays a fixed numpy cost per distinct history length, so few large shards
# beat many small ones; a few per worker keeps every worker busy.
DEFAULT_SHARDS = 4


class DetectFraudTables(beam.PTransform):
    """DetectFraud for batch over Arrow tables of transactions (TRANSACTION_SCHEMA) ->
    tables of scored transactions (columnar.SCORED_SCHEMA), vectorised per shard of
    accounts. Same scores and reasons as DetectFraud; labels come from the data.
    features_only: tables of columnar.FEATURE_TABLE_SCHEMA instead (train, evaluate).
    days (first, last): only transactions of those event days come out; the others are
    history that seeds their features (a backfill's look-back)."""

    def __init__(self, rules: Sequence[Rule] | RulesSource, threshold: float = 0.5,
                 model_dir: Path | None = None, delay_days: int = DELAY_DAYS,
                 window_days: int = WINDOW_DAYS, shards: int = DEFAULT_SHARDS,
                 features_only: bool = False,
                 days: tuple[dt.date, dt.date] | None = None) -> None:
        super().__init__()
        self.features_only = features_only
        self.days = days
        self.rules = rules if isinstance(rules, RulesSource) else StaticRules(rules)
        self.threshold = threshold
        self.model_dir = Path(model_dir) if model_dir else None
        self.delay_days = delay_days
        self.window_days = window_days
        self.shards = shards

    def expand(self, tables):
        if self.model_dir is not None:
            from fraud_detection.model import load_info

            load_info(self.model_dir)  # a missing or stale model fails before the run
        counterparty = (tables
                        | "CounterpartyDays" >> beam.Map(columnar.counterparty_days)
                        | "SumCounterpartyDays" >> beam.CombineGlobally(_SumCounterpartyDays()))
        return (tables
                | "ByAccountShard" >> beam.FlatMap(columnar.split_by_account, self.shards)
                | "ShardHistories" >> beam.GroupByKey()
                | "Score" >> beam.ParDo(
                    _ScoreShardFn(self.rules, self.threshold, self.model_dir,
                                  self.delay_days, self.window_days, self.features_only,
                                  self.days),
                    beam.pvalue.AsSingleton(counterparty)))
