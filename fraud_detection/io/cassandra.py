"""WriteToCassandra: fan records out to their query tables with prepared, idempotent upserts.

Shaped like Beam's WriteToMongoDB: records (with stable ids) become row writes, a
Reshuffle keeps a retried write stage from recomputing them, and a writer DoFn holds
one session per worker process, a bounded window of async writes (consecutive
records' rows as one unlogged batch: one request, not one per row), retries with
backoff, and a dead-letter output for rows that still fail. Every write has settled
when a bundle finishes, so a runner commits nothing that is not in Cassandra.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared
from apache_beam.utils.windowed_value import WindowedValue

from fraud_detection.config import Settings
from fraud_detection.store.keyspace import (
    TUPLE_ROWS,
    backoff,
    connect_when_up,
    transient_errors,
    waiting,
)
from fraud_detection.store.tables import STATEMENTS, RowWrite, TableRows


@dataclass(frozen=True)
class FailedWrite:
    table: str
    values: tuple
    error: str
    attempts: int


class _StoreHolder:
    # utils.shared keeps objects by weak reference, so the store needs a wrapper class.
    def __init__(self, store: Any) -> None:
        self.store = store


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]


# Consecutive records share a request, since each request costs the driver and Cassandra
# more than its rows do. Records given as values (bound by the driver) go ROWS_PER_REQUEST
# rows at a time. Serialized rows have known sizes: a request takes them up to
# REQUEST_BYTES, under the stack's batch_size_warn_threshold (24 KiB) and far under
# Cassandra's default fail threshold (50 KiB), and up to REQUEST_ROWS rows, the
# partitions it may span (the stack's unlogged_batch_across_partitions_warn_threshold).
# On 20k scored transactions in 100-row tables, 20 rows a request cost the sink 240 µs of
# CPU a transaction, 64 rows and 16 KiB ~210.
ROWS_PER_REQUEST = 20
REQUEST_BYTES = 16 * 1024
REQUEST_ROWS = 64
# What a row adds to a batch request besides its values' bytes: its kind, its query id's
# length and its value count, and each value's length.
_ROW_BYTES, _VALUE_BYTES = 5, 4


# CQL types whose values are fixed-width big-endian numbers: the numpy type they take.
_FIXED_WIDTH = {"LongType": ">i8", "CounterColumnType": ">i8", "Int32Type": ">i4",
                "DoubleType": ">f8", "BooleanType": "?", "DateType": ">i8",
                "SimpleDateType": ">u4"}
_TEXT = frozenset({"UTF8Type", "VarcharType", "AsciiType"})
_UNIT_PER_MS = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}


def serialized_column(cql_type: Any, column: pa.Array, protocol_version: int,
                      ) -> list[bytes | None]:
    """A column's values as the driver would serialize each for cql_type (None for
    null), computed for the whole column at once where the type allows."""
    return _serialized(cql_type, column, protocol_version)[0]


def _serialized(cql_type: Any, column: pa.Array, protocol_version: int,
                ) -> tuple[list[bytes | None], np.ndarray]:
    """serialized_column, and each value's length in bytes (0 for null)."""
    name = cql_type.__name__
    nulls = column.null_count
    if name in _TEXT and (pa.types.is_string(column.type) or pa.types.is_large_string(
            column.type)):
        binary = column.cast(pa.binary())
        return binary.to_pylist(), pc.binary_length(binary).fill_null(0).to_numpy()
    unit = getattr(column.type, "unit", None)
    width = _FIXED_WIDTH.get(name)
    numeric = (name == "DateType" and pa.types.is_timestamp(column.type)
               and _UNIT_PER_MS[unit] is not None) or \
        (name == "SimpleDateType" and pa.types.is_date32(column.type)) or \
        (name not in ("DateType", "SimpleDateType") and width is not None
         and (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
              or pa.types.is_boolean(column.type)))
    if not numeric:  # the driver's own serializer, value by value
        out = [None if v is None else cql_type.serialize(v, protocol_version)
               for v in column.to_pylist()]
        return out, np.fromiter((0 if v is None else len(v) for v in out), np.int64,
                                len(out))
    if name == "DateType":
        values = np.floor_divide(column.cast(pa.int64()).fill_null(0).to_numpy(),
                                 _UNIT_PER_MS[unit])
    elif name == "SimpleDateType":  # days since the epoch, centred on 2**31
        values = column.cast(pa.int32()).fill_null(0).to_numpy().astype(np.int64) + 2**31
    else:
        values = column.fill_null(False if pa.types.is_boolean(column.type) else 0
                                  ).to_numpy(zero_copy_only=False)
    packed = np.ascontiguousarray(values.astype(width))
    out = pa.Array.from_buffers(pa.binary(packed.itemsize), len(packed),
                                [None, pa.py_buffer(packed.tobytes())]).to_pylist()
    if nulls:
        for i in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
            out[i] = None
    return out, np.full(len(out), packed.itemsize, np.int64)


def _bound(prepared: Any, values: tuple) -> Any:
    """A prepared statement bound to values that are already the protocol's bytes."""
    from cassandra.query import BoundStatement

    bound = BoundStatement(prepared)
    bound.values = values
    return bound


def one_request(prepared: Mapping[str, Any], rows: Sequence[RowWrite]) -> Any:
    """Rows given as values (the driver binds them) as one statement: an unlogged batch
    when there are several (one request instead of one per row; a node applies it all
    or nothing)."""
    from cassandra.query import BatchStatement, BatchType

    if len(rows) == 1:
        table, values = rows[0]
        return prepared[table].bind(values)
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for table, values in rows:
        batch.add(prepared[table].bind(values))
    return batch


def _batch(prepared: Mapping[str, Any], first: RowWrite, added: list[tuple]) -> Any:
    """An unlogged batch of serialized rows in the driver's own form of an added bound
    row (True, query id, values): what BatchStatement.add stores, without a
    BoundStatement a row. It routes by its first row, as add does."""
    from cassandra.query import BatchStatement, BatchType

    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    batch._statements_and_parameters = added
    batch._update_state(_bound(prepared[first[0]], first[1]))
    return batch


@dataclass(frozen=True)
class EncodedRows:
    """A batch of records' rows, each value the protocol's bytes, per statement in record
    order: a request takes the rows of a range of records."""

    positions: list[str]  # per record: where it was read, "" if unknown
    # per statement: its table, the records that write a row to it (ascending), and
    # those rows as the driver adds bound rows to a batch (True, query id, values)
    statements: list[tuple[str, np.ndarray, list[tuple]]]
    sizes: np.ndarray  # per record: the bytes its rows add to a request
    counts: np.ndarray  # per record: its rows

    def _slices(self, start: int, stop: int) -> Iterator[tuple[str, list[tuple]]]:
        for table, records, added in self.statements:
            low, high = np.searchsorted(records, (start, stop)).tolist()
            if high > low:
                yield table, added[low:high]

    def rows(self, start: int, stop: int) -> list[RowWrite]:
        """The rows of records start..stop-1, as (table, values)."""
        return [(table, row[2]) for table, added in self._slices(start, stop)
                for row in added]

    def request(self, prepared: Mapping[str, Any], start: int, stop: int) -> Any:
        """The rows of records start..stop-1 as one statement (see one_request)."""
        slices = list(self._slices(start, stop))
        added = slices[0][1] if len(slices) == 1 else [
            row for _, part in slices for row in part]
        first = (slices[0][0], added[0][2])
        if len(added) == 1:
            return _bound(prepared[first[0]], first[1])
        return _batch(prepared, first, added)

    def spans(self, max_bytes: int = REQUEST_BYTES, max_rows: int = REQUEST_ROWS,
              ) -> list[tuple[int, int]]:
        """Consecutive records as requests' ranges (start, stop), each within max_bytes
        and max_rows, or one record alone; records without rows are in no request."""
        spans = []
        with_rows = np.flatnonzero(self.counts)
        sizes = np.cumsum(self.sizes[with_rows])
        counts = np.cumsum(self.counts[with_rows])
        first, total = 0, len(with_rows)
        while first < total:
            base_size = sizes[first - 1] if first else 0
            base_count = counts[first - 1] if first else 0
            last = min(int(np.searchsorted(sizes, base_size + max_bytes, "right")),
                       int(np.searchsorted(counts, base_count + max_rows, "right")))
            last = max(last, first + 1)
            spans.append((int(with_rows[first]), int(with_rows[last - 1]) + 1))
            first = last
        return spans


def encoded_rows(prepared: Mapping[str, Any], rows: TableRows) -> EncodedRows:
    """A batch's column-wise rows with their values as the protocol's bytes: each column
    serialized once, for the type its prepared statement binds, whichever statements
    bind it."""
    everyone = len(rows.positions)
    sizes = np.zeros(everyone, np.int64)
    counts = np.zeros(everyone, np.int64)
    done: dict[tuple[int, str], tuple[list[bytes | None], np.ndarray]] = {}
    statements = []
    for table, records, columns in rows.statements:
        statement = prepared[table]
        serialized, row_sizes = [], np.full(everyone, _ROW_BYTES + len(statement.query_id)
                                            + _VALUE_BYTES * len(columns), np.int64)
        for spec, column in zip(statement.column_metadata, columns, strict=True):
            key = (id(column), spec.type.__name__)
            if key not in done:
                done[key] = _serialized(spec.type, column, statement.protocol_version)
            values, lengths = done[key]
            serialized.append(values)
            row_sizes += lengths
        picked = records.tolist()
        if len(picked) < everyone:
            serialized = [[column[i] for i in picked] for column in serialized]
        sizes[records] += row_sizes[records]  # a statement has a record's row once
        counts[records] += 1
        statements.append((table, records, list(zip(
            itertools.repeat(True), itertools.repeat(statement.query_id),
            zip(*serialized, strict=True)))))
    return EncodedRows(rows.positions, statements, sizes, counts)


def packed(records_rows: Iterable[Sequence[RowWrite]],
           max_rows: int = ROWS_PER_REQUEST) -> Iterable[list[RowWrite]]:
    """Consecutive records' rows, packed into requests of at most max_rows rows (a
    record with more goes alone): what the sink sends of records given as values, for
    references that send the same."""
    request: list[RowWrite] = []
    for rows in records_rows:
        if request and len(request) + len(rows) > max_rows:
            yield request
            request = []
        request.extend(rows)
    if request:
        yield request


@dataclass(frozen=True)
class _Listed:
    """A request's records given as rows: (record index in the bundle, its rows)."""

    parts: list[tuple[int, list[RowWrite]]]

    def statement(self, prepared: Mapping[str, Any]) -> Any:
        return one_request(prepared, [row for _, rows in self.parts for row in rows])

    def rows(self) -> int:
        return sum(len(rows) for _, rows in self.parts)

    def alone(self) -> list[_Listed]:
        return [_Listed([part]) for part in self.parts]

    def records(self) -> list[tuple[int, list[RowWrite]]]:
        return self.parts


@dataclass(frozen=True)
class _Span:
    """A request's records given encoded: records start..stop-1 of `encoded`, whose
    record 0 is record `base` of the bundle."""

    encoded: EncodedRows
    start: int
    stop: int
    base: int

    def statement(self, prepared: Mapping[str, Any]) -> Any:
        return self.encoded.request(prepared, self.start, self.stop)

    def rows(self) -> int:
        return int(self.encoded.counts[self.start:self.stop].sum())

    def alone(self) -> list[_Span]:
        return [_Span(self.encoded, i, i + 1, self.base)
                for i in range(self.start, self.stop) if self.encoded.counts[i]]

    def records(self) -> list[tuple[int, list[RowWrite]]]:
        return [(self.base + i, self.encoded.rows(i, i + 1))
                for i in range(self.start, self.stop) if self.encoded.counts[i]]


def cassandra_display(settings: Settings) -> dict[str, Any]:
    """Where a connector connects, for the runner's UI: never a secret."""
    return {"cassandra": ", ".join(f"{host}:{settings.cassandra_port}"
                                   for host in settings.cassandra_hosts),
            "keyspace": settings.cassandra_keyspace,
            "consistency": settings.cassandra_consistency,
            "tls": bool(settings.cassandra_tls_ca_file)}


class _WriteRecordsFn(beam.DoFn):
    """Writes records' rows asynchronously, consecutive records packed into one request.
    Driver callbacks (on its I/O thread) only count and queue; retries, metrics and dead
    letters happen on the bundle's thread, where Beam's metrics live. A request that
    cannot be written is resent one record per request, so a record fails whole and
    alone."""

    def __init__(self, settings: Settings, statements: Mapping[str, str],
                 to_rows: Callable[[Any], Iterable[RowWrite]], max_in_flight: int,
                 max_attempts: int, backoff_seconds: float,
                 position_of: Callable[[Any], str] | None = None,
                 batched: bool = False) -> None:
        self.settings = settings
        self.statements = dict(statements)
        self.to_rows = to_rows
        self.position_of = position_of
        self.batched = batched
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.shared_store = shared.Shared()
        self.written = Metrics.counter("cassandra", "rows_written")
        self.retries = Metrics.counter("cassandra", "retries")
        self.failures = Metrics.counter("cassandra", "rows_failed")

    def setup(self) -> None:
        settings = self.settings
        # One session per worker process, shared by every DoFn instance in it.
        tag = hashlib.sha256(repr(settings).encode()).hexdigest()
        store = self.shared_store.acquire(lambda: _StoreHolder(connect_when_up(settings)),
                                          tag=tag).store
        self.session = store.session
        self.prepared = {key: store.prepare(cql) for key, cql in self.statements.items()}
        self.retryable = transient_errors()

    def start_bundle(self) -> None:
        self.settled = threading.Condition()
        self.in_flight = 0
        self.succeeded = 0
        self.errored: collections.deque = collections.deque()  # (request, attempt, exc)
        self.failed: list[FailedWrite] = []
        self.positions: list[str] = []  # per record of the bundle, where it was read
        self.failed_records: set[int] = set()
        self.filling: list[tuple[int, list[RowWrite]]] = []  # the next request's records
        self.filling_rows = 0

    def process(self, element):
        if self.batched:
            encoded = encoded_rows(self.prepared, self.to_rows(element))
            base = len(self.positions)
            self.positions.extend(encoded.positions)
            for start, stop in encoded.spans():
                self._send(_Span(encoded, start, stop, base), 1)
        else:
            index = len(self.positions)
            self.positions.append(self.position_of(element) if self.position_of else "")
            rows = list(self.to_rows(element))
            if rows:
                if self.filling and self.filling_rows + len(rows) > ROWS_PER_REQUEST:
                    self._send_filling()
                self.filling.append((index, rows))
                self.filling_rows += len(rows)
        if self.errored:
            self._retry_errored()
        return ()

    def finish_bundle(self):
        self._send_filling()
        while True:
            with self.settled:
                self.settled.wait_for(lambda: self.in_flight == 0)
            if not self.errored:
                break
            self._retry_errored()
        self.written.inc(self.succeeded)
        self.succeeded = 0
        for failure in self.failed:
            yield GlobalWindows.windowed_value(failure)
        # Every row of these records is in Cassandra: what progress may count.
        stored = tuple(position for i, position in enumerate(self.positions)
                       if position and i not in self.failed_records)
        if stored:
            yield beam.pvalue.TaggedOutput(STORED, GlobalWindows.windowed_value(stored))

    def _send_filling(self) -> None:
        if self.filling:
            self._send(_Listed(self.filling), 1)
            self.filling, self.filling_rows = [], 0

    def _send(self, request: _Listed | _Span, attempt: int) -> None:
        with self.settled:
            self.settled.wait_for(lambda: self.in_flight < self.max_in_flight)
            self.in_flight += 1
        try:
            future = self.session.execute_async(request.statement(self.prepared))
        except Exception as exc:  # no such statement, values the columns cannot take, ...
            self._on_error(exc, request, attempt)
            return
        future.add_callbacks(self._on_written, self._on_error,
                             callback_args=(request.rows(),), errback_args=(request, attempt))

    def _on_written(self, _result, rows: int) -> None:
        with self.settled:
            self.in_flight -= 1
            self.succeeded += rows
            self.settled.notify_all()

    def _on_error(self, exc: BaseException, request: _Listed | _Span, attempt: int) -> None:
        self.errored.append((request, attempt, exc))
        with self.settled:
            self.in_flight -= 1
            self.settled.notify_all()

    def _retry_errored(self) -> None:
        waited = 0.0
        # Only the writes that failed before this round: a resend that fails at once (no
        # host up) waits for the next round's backoff instead of spinning through its
        # attempts here.
        for _ in range(len(self.errored)):
            request, attempt, exc = self.errored.popleft()
            retryable = isinstance(exc, self.retryable)
            alone = request.alone()
            if not retryable and len(alone) > 1:
                # One bad record must not fail its neighbours: each alone, same attempt.
                for part in alone:
                    self._send(part, attempt)
                continue
            if not retryable or attempt >= self.max_attempts:
                for record, rows in request.records():
                    self.failures.inc(len(rows))
                    self.failed.extend(FailedWrite(table, tuple(values), _describe(exc),
                                                   attempt) for table, values in rows)
                    self.failed_records.add(record)
                continue
            # One backoff per round of retries, not per row: a node outage fails many.
            pause = backoff(attempt, self.backoff_seconds)
            if pause > waited:
                time.sleep(pause - waited)
                waited = pause
            self.retries.inc()
            self._send(request, attempt + 1)


STORED = "stored"


class WriteToCassandra(beam.PTransform):
    """Writes each record's rows; the output is every row that failed after its retries.

    `to_rows` turns a record into row writes (table, values) for the upserts in
    store.tables.STATEMENTS (or `statements`); the writer prepares them once per worker.
    With `position_of` (record -> where it was read, "" if unknown) the result has two
    outputs: `failed` (FailedWrite) and STORED (tuples of the positions of records whose
    rows are all in Cassandra, one per bundle). With `batched` each element is a batch
    of records (e.g. a scored Arrow table) and `to_rows` gives its TableRows, positions
    included, so the result has both outputs: batches cross the Reshuffle, not records,
    and each column is serialized once, not each value. reshuffle=False writes in the
    stage that made the records: for records a retried bundle would make again the same
    (a stateful firing, whose state commits with its output), it saves a stage hop.
    """

    def __init__(self, settings: Settings, to_rows: Callable[[Any], Iterable[RowWrite]],
                 statements: Mapping[str, str] = STATEMENTS, max_in_flight: int | None = None,
                 max_attempts: int = 8, backoff_seconds: float = 0.25,
                 position_of: Callable[[Any], str] | None = None,
                 batched: bool = False, reshuffle: bool = True) -> None:
        super().__init__()
        self.settings = settings
        self.reshuffle = reshuffle
        self.to_rows = to_rows
        self.statements = statements
        self.max_in_flight = max_in_flight or settings.cassandra_max_in_flight
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.position_of = position_of
        self.batched = batched

    def display_data(self) -> dict[str, Any]:
        return {**cassandra_display(self.settings), "tables": ", ".join(sorted(
            self.statements)), "max_in_flight": self.max_in_flight,
            "max_attempts": self.max_attempts}

    def expand(self, records):
        # The Reshuffle checkpoints records (fewer and smaller than their rows), so a
        # retried write stage rewrites the same input instead of recomputing it.
        write = beam.ParDo(_WriteRecordsFn(
            self.settings, self.statements, self.to_rows, self.max_in_flight,
            self.max_attempts, self.backoff_seconds, self.position_of, self.batched))
        if self.position_of is not None or self.batched:
            write = write.with_outputs(STORED, main="failed")
        if not self.reshuffle:
            return records | "Write" >> write
        return records | "Reshuffle" >> beam.Reshuffle() | "Write" >> write


class _KnownAccountsFn(beam.DoFn):
    """Passes transactions of accounts in the accounts table; the others become dead
    letters. Known ids are cached per worker; an unknown one is asked again each time,
    since an account added meanwhile must be accepted. A bundle's lookups run
    concurrently and its uncached transactions wait for them at its end: one round trip
    per lookup in turn held the reader back (a replay, or a bank's millions of accounts,
    meets new ones all the time). Elements are Transactions or tables of them
    (kernel.table_of); a table comes out without its unknown accounts' rows."""

    # Uncached transactions held before their lookups are awaited within the bundle.
    MAX_WAITING = 2_000

    def __init__(self, settings: Settings, source: str) -> None:
        self.settings = settings
        self.source = source

    def setup(self) -> None:
        self.store = connect_when_up(self.settings)
        self.query = self.store.prepare("SELECT account_id FROM accounts WHERE account_id = ?")
        self.known: set[str] = set()
        self.rejected = Metrics.counter("validate", "dead_lettered")
        self.retryable = transient_errors()

    def start_bundle(self) -> None:
        self.lookups: dict[str, Any] = {}  # account -> the driver's future of its row
        self.waiting: list[WindowedValue] = []
        self.waiting_rows = 0

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        if isinstance(element, pa.Table):
            accounts = element["account_id"].unique().to_pylist()
            rows = element.num_rows
        else:
            accounts, rows = [element.account_id], 1
        new = [a for a in accounts if a not in self.known]
        if not new:
            yield element
            return
        for account in new:
            if account not in self.lookups:
                self.lookups[account] = self.store.session.execute_async(
                    self.query, (account,), execution_profile=TUPLE_ROWS)
        self.waiting.append(WindowedValue(element, timestamp, (window,)))
        self.waiting_rows += rows
        if self.waiting_rows >= self.MAX_WAITING:
            yield from self._settle()

    def finish_bundle(self):
        yield from self._settle()

    def _settle(self):
        for account, future in self.lookups.items():
            try:
                found = future.result().one()
            except self.retryable:
                found = self._lookup(account)
            if found is not None:
                self.known.add(account)
        self.lookups = {}
        waiting, self.waiting, self.waiting_rows = self.waiting, [], 0
        for held in waiting:
            if not isinstance(held.value, pa.Table):
                if held.value.account_id in self.known:
                    yield held
                else:
                    yield self._unknown(held, held.value)
                continue
            table = held.value
            accounts = table["account_id"].combine_chunks()
            known = pc.is_in(accounts, value_set=pa.array(
                [a for a in pc.unique(accounts).to_pylist() if a in self.known],
                type=pa.string()))
            if not known.false_count:  # every lookup found its account: no copy
                yield held
                continue
            if known.true_count:
                yield held.with_value(table.filter(known))
            from fraud_detection.transforms.kernel import transactions_of

            for transaction in transactions_of(table.filter(pc.invert(known))):
                yield self._unknown(held, transaction)

    def _unknown(self, held: WindowedValue, transaction):
        from fraud_detection.records import DeadLetter, raw_text

        self.rejected.inc()
        return beam.pvalue.TaggedOutput("unknown", held.with_value(DeadLetter(
            self.source, (f"account_id: unknown account {transaction.account_id!r}",),
            raw_text(transaction.to_dict()), transaction.position,
            received_at=transaction.event_time)))

    def _lookup(self, account: str):
        return waiting(lambda: self.store.session.execute(
            self.query, (account,), execution_profile=TUPLE_ROWS).one(), self.retryable)

    def teardown(self) -> None:
        self.store.close()


class KnownAccounts(beam.PTransform):
    """Transactions, or tables of them -> outputs `known` (the same, less the unknown
    accounts' rows) and `unknown` (DeadLetter)."""

    def __init__(self, settings: Settings, source: str) -> None:
        super().__init__()
        self.settings = settings
        self.source = source

    def display_data(self) -> dict[str, Any]:
        return {**cassandra_display(self.settings), "table": "accounts",
                "source": self.source}

    def expand(self, transactions):
        return transactions | beam.ParDo(
            _KnownAccountsFn(self.settings, self.source)).with_outputs("unknown", main="known")
