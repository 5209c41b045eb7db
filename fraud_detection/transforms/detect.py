"""DetectFraud: the one composite; batch and streaming run the same kernel through it.

Transactions -> (account shard) kernel.account_step -> (counterparty shard)
kernel.counterparty_step, with analysts' labels -> scored transactions.

Bounded input: each shard's whole history goes through a step at once, from empty
state. Unbounded input: each shard buffers what arrives, keeps one event-time timer at
the end of its latest buffered cell, and when it fires sends everything the watermark
has passed through the step as one batch, carrying the shard's state between firings.
With one shard, one stage runs both steps: over the whole history, or in each firing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    OrderedListStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from fraud_detection.transforms import kernel
from fraud_detection.transforms.rules import Rule, RulesCache, RulesSource, StaticRules

# Each firing pays a fixed cost (the runner's bundle, state, the kernel's numpy calls), so
# few large shards beat many small ones, and one shard runs both steps in one stage: on 2
# cores in one process, bench/stream_throughput.py at 1,000 tx/s of event time streamed
# 3,774 tx/s with 1 shard against 2 shards' 2,930. A cluster wants a few per worker
# (--shards).
DEFAULT_SHARDS = 1
# Streaming: a shard's timer waits for the end of the latest buffered cell of this
# many milliseconds of event time, so one firing takes many transactions.
DEFAULT_CELL_MS = 100
_LABELS, _ROWS = b"L", b"R"
_MAX_BUFFERED_ROWS = 20_000
# Bounded input waits for nothing: gather much more per table.
_MAX_BOUNDED_ROWS = 200_000


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(blob: bytes | memoryview) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


class ArrowTableCoder(beam.coders.Coder):
    """Arrow tables as IPC streams: only a slice's own rows (pickle sends whole buffers),
    decoded without a copy. (lz4 or zstd compression measured slower on 1M rows.)"""

    def encode(self, value: pa.Table) -> bytes:
        return to_ipc(value)

    def decode(self, encoded: bytes) -> pa.Table:
        return from_ipc(encoded)

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)
_ShardTable = beam.typehints.Tuple[int, pa.Table]


def _is_labels(table: pa.Table) -> bool:
    return "labelled_at" in table.column_names


def _time_column(table: pa.Table) -> str:
    return "labelled_at" if _is_labels(table) else "event_time"


@beam.typehints.with_output_types(_ShardTable)
class _ShardTablesFn(beam.DoFn):
    """Transactions (or tables of them, or LabelEvents) -> (shard, table) by a key
    column, stamped with its earliest time. What a bundle brings is gathered up to
    max_rows first: each table costs a fixed amount to encode and to step through."""

    def __init__(self, key: str, shards: int, max_rows: int = _MAX_BUFFERED_ROWS) -> None:
        self.key = key
        self.shards = shards
        self.max_rows = max_rows

    def start_bundle(self) -> None:
        self.records: dict[str, list] = {}
        # (kind, shard) -> parts, and rows per kind
        self.parts: dict[tuple[str, int], list[pa.Table]] = {}
        self.rows: dict[str, int] = {}

    def process(self, element: Any) -> Iterator:
        if isinstance(element, pa.Table):
            kind = "labels" if _is_labels(element) else "rows"
            yield from self._add(kind, element, stamped=False)
            return
        kind = "labels" if hasattr(element, "labelled_at") else "rows"
        records = self.records.setdefault(kind, [])
        records.append(element)
        if len(records) >= _MAX_BUFFERED_ROWS:
            yield from self._add(kind, self._table(kind), stamped=False)

    def finish_bundle(self) -> Iterator:
        for kind in list(self.records):
            yield from self._add(kind, self._table(kind), stamped=True)
        for kind in list(self.rows):
            yield from self._emit(kind, stamped=True)

    def _table(self, kind: str) -> pa.Table:
        elements = self.records.pop(kind, [])
        return kernel.labels_table(elements) if kind == "labels" else kernel.table_of(elements)

    def _add(self, kind: str, table: pa.Table, stamped: bool) -> Iterator:
        if table.num_rows:
            if self.key == "account_id":
                table = kernel.with_positions(table)
            for shard, part in kernel.split_by(table, self.key, self.shards):
                self.parts.setdefault((kind, shard), []).append(part)
            self.rows[kind] = self.rows.get(kind, 0) + table.num_rows
        if self.rows.get(kind, 0) >= self.max_rows:
            yield from self._emit(kind, stamped)

    def _emit(self, kind: str, stamped: bool) -> Iterator:
        self.rows.pop(kind, None)
        for shard in range(self.shards):
            parts = self.parts.pop((kind, shard), None)
            if not parts:
                continue
            part = pa.concat_tables(parts)
            earliest = int(kernel.micros(part, _time_column(part)).min())
            # finish_bundle has no element to take a timestamp from: give it one.
            yield (WindowedValue((shard, part), Timestamp(micros=earliest), [GlobalWindow()])
                   if stamped else TimestampedValue((shard, part), Timestamp(micros=earliest)))


class _Step:
    """One kernel step with what it needs: rules and model for the counterparty step."""

    def __init__(self, accounts: bool, rules: RulesSource | None, threshold: float,
                 model_dir: Path | None, delay_days: int, window_days: int,
                 features_only: bool) -> None:
        self.accounts = accounts
        self.rules = rules
        self.threshold = threshold
        self.model_dir = model_dir
        self.delay_days = delay_days
        self.window_days = window_days
        self.features_only = features_only

    def setup(self) -> None:
        from fraud_detection import model
        from fraud_detection.memory import freeze_startup_objects, keep_freed_memory

        keep_freed_memory()
        freeze_startup_objects()

        self.cache = RulesCache(self.rules) if self.rules is not None else None
        self.model, self.version = None, ""
        if self.model_dir is not None and not self.accounts:
            self.model, info = model.load(self.model_dir)
            self.version = info.version

    def run(self, rows: pa.Table, labels: pa.Table | None, states: dict[str, bytes] | None,
            keep_state: bool) -> tuple[pa.Table, dict[str, bytes]]:
        if self.accounts:
            return kernel.account_step(rows, states, keep_state)
        decider = kernel.Decider(self.cache.current() if self.cache else [], self.threshold,
                                 self.model, self.version)
        return kernel.counterparty_step(rows, states, decider, labels, self.delay_days,
                                        self.window_days, keep_state, self.features_only)

    def ids(self, rows: pa.Table, labels: pa.Table | None) -> list[str]:
        if self.accounts:
            return rows["account_id"].unique().to_pylist()
        ids = set(rows["counterparty_id"].unique().to_pylist())
        if labels is not None:
            ids |= set(labels["counterparty_id"].unique().to_pylist())
        return list(ids)


def _concat(tables: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


@beam.typehints.with_output_types(pa.Table)
class _WholeShardFn(beam.DoFn):
    """Bounded input: a shard's whole history through the steps in turn, from empty
    state. Input: (shard, {"rows": tables, "labels": tables}), labels optional."""

    def __init__(self, steps: Sequence[_Step]) -> None:
        self.steps = list(steps)
        self.scored = Metrics.counter("detect", "scored")
        self.flagged = Metrics.counter("detect", "flagged")

    def setup(self) -> None:
        for step in self.steps:
            step.setup()

    def process(self, element) -> Iterator[pa.Table]:
        _, grouped = element
        first = self.steps[0]
        out = _concat(list(grouped["rows"]),
                      kernel.TRANSACTION_SCHEMA if first.accounts else kernel.FEATURED_SCHEMA)
        labels = _concat(list(grouped.get("labels", ())), kernel.LABEL_SCHEMA)
        if out.num_rows == 0:
            return
        for step in self.steps:
            if step.accounts and kernel.ARRIVAL in out.column_names:
                out = self._by_arrival(step, out)
            else:
                out, _ = step.run(out, None if step.accounts else labels, None,
                                  keep_state=False)
        _count(self, out, self.steps[-1])
        # In slices: the runner encodes each output whole, and encoding holds a table
        # about three times over (on 1M rows the peak RSS of `features` was 4.0 GB).
        for start in range(0, out.num_rows, _MAX_BOUNDED_ROWS):
            yield out.slice(start, _MAX_BOUNDED_ROWS)

    @staticmethod
    def _by_arrival(step: _Step, rows: pa.Table) -> pa.Table:
        """Each arrival a batch, in arrival order, carrying the state: what a stream whose
        watermark moved at each arrival would have done."""
        arrival = rows[kernel.ARRIVAL].combine_chunks().to_numpy()
        states: dict[str, bytes] = {}
        outs = []
        for value in np.unique(arrival).tolist():
            out, changed = step.run(rows.filter(pa.array(arrival == value)), None,
                                    states, keep_state=True)
            states.update(changed)
            outs.append(out)
        return pa.concat_tables(outs)


def _count(fn, out: pa.Table, step: _Step) -> None:
    if not step.accounts and not step.features_only:
        fn.scored.inc(out.num_rows)
        fn.flagged.inc(out["flagged"].combine_chunks().true_count)


@beam.typehints.with_output_types(pa.Table)
class _StreamingShardFn(beam.DoFn):
    """Unbounded input: a shard's tables buffered by event time, one timer per shard at
    the end of the latest cell buffered when it was set, and the shard's state carried
    between firings. A firing takes everything before its time, sorted.

    State is a log: each firing appends the new states of the ids it touched, and the
    log is rewritten whole once it holds twice what the shard's state does, so a firing
    writes in proportion to its batch. The DoFn keeps the shard's states in memory and
    re-reads the log only when another worker has written since (the generation)."""

    BUFFER = OrderedListStateSpec("buffer", BytesCoder())
    LOG = BagStateSpec("log", BytesCoder())
    META = ReadModifyWriteStateSpec("meta", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, steps: Sequence[_Step], cell_ms: int) -> None:
        self.steps = list(steps)
        self.cell_micros = max(int(cell_ms), 1) * 1000
        self.scored = Metrics.counter("detect", "scored")
        self.flagged = Metrics.counter("detect", "flagged")
        self.firings = Metrics.counter("detect", "firings")

    def setup(self) -> None:
        for step in self.steps:
            step.setup()
        self.states: dict[Any, tuple[int, dict[str, bytes]]] = {}

    def _cell_end(self, micros: int) -> Timestamp:
        return Timestamp(micros=(micros // self.cell_micros + 1) * self.cell_micros)

    def process(self, element, buffer=beam.DoFn.StateParam(BUFFER),
                meta=beam.DoFn.StateParam(META), flush=beam.DoFn.TimerParam(FLUSH)):
        _, table = element
        kind = _LABELS if _is_labels(table) else _ROWS
        times = kernel.micros(table, _time_column(table))
        buffer.add((Timestamp(micros=int(times.min())), kind + to_ipc(table)))
        generation, log_bytes, full_bytes, due, latest = meta.read() or (0, 0, 0, None, 0)
        latest = max(latest, int(times.max()))
        if due is None:
            # The end of the latest cell buffered: one firing then takes all of it, however
            # sparse its event times (a replay of old history has one event per cell).
            due = self._cell_end(latest)
            flush.set(due)
        meta.write((generation, log_bytes, full_bytes, due, latest))

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 buffer=beam.DoFn.StateParam(BUFFER), log=beam.DoFn.StateParam(LOG),
                 meta=beam.DoFn.StateParam(META), flush=beam.DoFn.TimerParam(FLUSH)):
        limit = fired_at.micros
        rows, labels, later = [], [], []
        for _, blob in buffer.read_range(MIN_TIMESTAMP, fired_at):
            table = from_ipc(memoryview(blob)[1:])
            due = pa.array(kernel.micros(table, _time_column(table)) < limit)
            (labels if blob[:1] == _LABELS else rows).append(table.filter(due))
            rest = table.filter(pc.invert(due))
            if rest.num_rows:
                later.append((blob[:1], rest))
        buffer.clear_range(MIN_TIMESTAMP, fired_at)
        for kind, rest in later:  # what the watermark has not passed yet waits
            earliest = int(kernel.micros(rest, _time_column(rest)).min())
            buffer.add((Timestamp(micros=earliest), kind + to_ipc(rest)))
        waiting = bool(later) or next(iter(buffer.read_range(fired_at, MAX_TIMESTAMP)),
                                      None) is not None
        generation, log_bytes, full_bytes, _, latest = meta.read() or (0, 0, 0, None, 0)
        due = self._cell_end(latest) if waiting else None
        if due is not None:
            flush.set(due)
        rows = [t for t in rows if t.num_rows]
        labels = [t for t in labels if t.num_rows]
        if not rows and not labels:
            meta.write((generation, log_bytes, full_bytes, due, latest))
            return
        self.firings.inc()
        out = pa.concat_tables(rows) if rows else None
        label_table = pa.concat_tables(labels) if labels else None
        states = self._states(key, generation, log)
        changed: dict[str, bytes] = {}
        for index, step in enumerate(self.steps):
            if out is None:
                if step.accounts:  # labels alone move no account
                    continue
                out = kernel.FEATURED_SCHEMA.empty_table()
            # One log holds every step's states, each id under its step's number.
            mine = {i: states[k] for i in step.ids(out, label_table)
                    if (k := f"{index}:{i}") in states}
            out, step_changed = step.run(out, label_table, mine, keep_state=True)
            changed.update((f"{index}:{i}", state) for i, state in step_changed.items())
        states.update(changed)
        delta = to_ipc(pa.table({"id": list(changed), "state": list(changed.values())},
                                schema=_STATE_SCHEMA))
        log_bytes += len(delta)
        if log_bytes > 2 * full_bytes + (1 << 20):
            whole = to_ipc(pa.table({"id": list(states), "state": list(states.values())},
                                    schema=_STATE_SCHEMA))
            log.clear()
            log.add(whole)
            log_bytes = full_bytes = len(whole)
        else:
            log.add(delta)
        generation += 1
        self.states[key] = (generation, states)
        meta.write((generation, log_bytes, full_bytes, due, latest))
        _count(self, out, self.steps[-1])
        if out.num_rows:
            yield TimestampedValue(out, Timestamp(micros=int(kernel.micros(out).min())))

    def _states(self, key, generation: int, log) -> dict[str, bytes]:
        cached = self.states.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        states: dict[str, bytes] = {}
        for blob in log.read():
            table = from_ipc(blob)
            states.update(zip(table["id"].to_pylist(), table["state"].to_pylist(),
                              strict=True))
        return states


_STATE_SCHEMA = pa.schema([("id", pa.string()), ("state", pa.binary())])


class DetectFraud(beam.PTransform):
    """Transactions (records or Arrow tables of them) -> ScoredTransaction records, or
    with as_tables scored tables (kernel.SCORED_SCHEMA), or with features_only the
    training table (kernel.FEATURE_TABLE_SCHEMA).

    rules: a list, or a RulesSource re-read while the pipeline runs. model_dir: a folder
    written by `train`; without it the decision rests on rules alone. delay_days and
    window_days (the counterparty windows): the model's, else the kernel's defaults. labels: an
    optional PCollection of LabelEvent (analysts' verdicts). days (first, last): only
    transactions of those event days come out; the others are history (a look-back).
    """

    def __init__(self, rules: Sequence[Rule] | RulesSource, threshold: float = 0.5,
                 model_dir: Path | None = None, labels=None,
                 delay_days: int | None = None, window_days: int | None = None,
                 shards: int = DEFAULT_SHARDS, cell_ms: int = DEFAULT_CELL_MS,
                 as_tables: bool = False, features_only: bool = False,
                 days: tuple[dt.date, dt.date] | None = None) -> None:
        super().__init__()
        self.rules = rules if isinstance(rules, RulesSource) else StaticRules(rules)
        self.threshold = threshold
        self.model_dir = Path(model_dir).absolute() if model_dir else None  # for any cwd
        self.labels = labels
        self.delay_days = delay_days
        self.window_days = window_days
        self.shards = shards
        self.cell_ms = cell_ms
        self.as_tables = as_tables or features_only
        self.features_only = features_only
        self.days = days

    def _check_model(self) -> None:
        """A missing or stale model fails before the run. Unset delay and window come from
        the model's training; set ones must match them."""
        import logging

        from fraud_detection.model import FeatureSettings, load_info

        info = load_info(self.model_dir)
        trained = info.settings
        if trained is None:
            return
        if self.delay_days is None:
            self.delay_days = trained.label_delay_days
        if self.window_days is None:
            self.window_days = trained.counterparty_window_days
        rules = self.rules.rules if isinstance(self.rules, StaticRules) else None
        used = FeatureSettings.of(rules, self.delay_days, self.window_days)
        if warning := info.check_settings(used, "this pipeline"):
            logging.getLogger(__name__).warning("%s", warning)

    def _step(self, accounts: bool) -> _Step:
        return _Step(accounts, None if accounts else self.rules, self.threshold,
                     self.model_dir, self.delay_days, self.window_days, self.features_only)

    def expand(self, transactions):
        if self.model_dir is not None:
            self._check_model()
        if self.delay_days is None:
            self.delay_days = kernel.DELAY_DAYS
        if self.window_days is None:
            self.window_days = kernel.WINDOW_DAYS
        bounded = transactions.is_bounded
        limit = _MAX_BOUNDED_ROWS if bounded else _MAX_BUFFERED_ROWS
        by_account = transactions | "ByAccountShard" >> beam.ParDo(
            _ShardTablesFn("account_id", self.shards, limit))
        labels = (self.labels if self.labels is not None else
                  transactions.pipeline | "NoLabels" >> beam.Create([]))
        labels = labels | "LabelsByCounterpartyShard" >> beam.ParDo(
            _ShardTablesFn("counterparty_id", self.shards))
        accounts, counterparties = self._step(True), self._step(False)
        if self.shards == 1:
            # One shard holds every account and counterparty: both steps in one stage
            # save a shuffle (in streaming a watermark hop; in batch the featured
            # history encoded and regrouped: on 1M rows 1 GB of peak RSS).
            if bounded:
                scored = ({"rows": by_account, "labels": labels}
                          | "Histories" >> beam.CoGroupByKey()
                          | "Detect" >> beam.ParDo(_WholeShardFn([accounts, counterparties])))
            else:
                scored = ((by_account, labels) | "WithLabels" >> beam.Flatten()
                          | "Detect" >> beam.ParDo(
                              _StreamingShardFn([accounts, counterparties], self.cell_ms)))
        else:
            if bounded:
                featured = ({"rows": by_account} | "AccountHistories" >> beam.CoGroupByKey()
                            | "Accounts" >> beam.ParDo(_WholeShardFn([accounts])))
            else:
                featured = by_account | "Accounts" >> beam.ParDo(
                    _StreamingShardFn([accounts], self.cell_ms))
            by_counterparty = featured | "ByCounterpartyShard" >> beam.ParDo(
                _ShardTablesFn("counterparty_id", self.shards, limit))
            if bounded:
                scored = ({"rows": by_counterparty, "labels": labels}
                          | "CounterpartyHistories" >> beam.CoGroupByKey()
                          | "Counterparties" >> beam.ParDo(_WholeShardFn([counterparties])))
            else:
                scored = ((by_counterparty, labels) | "WithLabels" >> beam.Flatten()
                          | "Counterparties" >> beam.ParDo(
                              _StreamingShardFn([counterparties], self.cell_ms)))
        if self.days is not None:
            scored = scored | "OnDays" >> beam.Map(_on_days, *self.days)
        if self.as_tables:
            return scored
        return scored | "Records" >> beam.FlatMap(kernel.scored_records)


_EPOCH = dt.date(1970, 1, 1)


def _on_days(table: pa.Table, first: dt.date, last: dt.date) -> pa.Table:
    return table.filter(kernel.on_days(table, (first - _EPOCH).days, (last - _EPOCH).days))

