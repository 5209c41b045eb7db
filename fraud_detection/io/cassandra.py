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
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
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


# Rows one request carries at most: consecutive records share a request, since each
# request costs the driver more than its rows do (20k transactions: 4.1 s of client CPU
# one record a request, 2.4 s eight). 20 rows stay under Cassandra's default
# batch_size_fail_threshold (50 KiB) even when every record is flagged (~830 B a row).
ROWS_PER_REQUEST = 20


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
    name = cql_type.__name__
    nulls = column.null_count
    if name in _TEXT and (pa.types.is_string(column.type) or pa.types.is_large_string(
            column.type)):
        return column.cast(pa.binary()).to_pylist()
    unit = getattr(column.type, "unit", None)
    width = _FIXED_WIDTH.get(name)
    numeric = (name == "DateType" and pa.types.is_timestamp(column.type)
               and _UNIT_PER_MS[unit] is not None) or \
        (name == "SimpleDateType" and pa.types.is_date32(column.type)) or \
        (name not in ("DateType", "SimpleDateType") and width is not None
         and (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
              or pa.types.is_boolean(column.type)))
    if not numeric:  # the driver's own serializer, value by value
        return [None if v is None else cql_type.serialize(v, protocol_version)
                for v in column.to_pylist()]
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
    return out


def _statement(prepared: Any, values: tuple, serialized: bool) -> Any:
    from cassandra.query import BoundStatement

    if serialized:  # already the protocol's bytes: bound as they are
        bound = BoundStatement(prepared)
        bound.values = values
        return bound
    return prepared.bind(values)


def one_request(prepared: Mapping[str, Any], rows: Sequence[RowWrite],
                serialized: bool = False) -> Any:
    """Rows as one statement: an unlogged batch when there are several (one request
    instead of one per row; a node applies it all or nothing). serialized: the rows'
    values are serialized_rows' bytes, not values for the driver to bind."""
    from cassandra.query import BatchStatement, BatchType

    if len(rows) == 1:
        table, values = rows[0]
        return _statement(prepared[table], values, serialized)
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for table, values in rows:
        batch.add(_statement(prepared[table], values, serialized))
    return batch


def serialized_rows(prepared: Mapping[str, Any], rows: TableRows,
                    ) -> list[tuple[str, list[RowWrite]]]:
    """A batch's column-wise rows -> (position, its rows) per record, each row's values
    the protocol's bytes: each column serialized once, for the type its prepared
    statement binds, whichever statements bind it."""
    per_record: list[list[RowWrite]] = [[] for _ in rows.positions]
    done: dict[tuple[int, str], list[bytes | None]] = {}
    everyone = len(rows.positions)
    for table, records, columns in rows.statements:
        statement = prepared[table]
        serialized = []
        for spec, column in zip(statement.column_metadata, columns, strict=True):
            key = (id(column), spec.type.__name__)
            if key not in done:
                done[key] = serialized_column(spec.type, column, statement.protocol_version)
            serialized.append(done[key])
        picked = records.tolist()
        if len(picked) < everyone:
            serialized = [[column[i] for i in picked] for column in serialized]
        for record, values in zip(picked, zip(*serialized, strict=True), strict=True):
            per_record[record].append((table, values))
    return list(zip(rows.positions, per_record, strict=True))


def packed(records_rows: Iterable[Sequence[RowWrite]],
           max_rows: int = ROWS_PER_REQUEST) -> Iterable[list[RowWrite]]:
    """Consecutive records' rows, packed into requests of at most max_rows rows (a
    record with more goes alone): what the sink sends, for references that send the
    same."""
    request: list[RowWrite] = []
    for rows in records_rows:
        if request and len(request) + len(rows) > max_rows:
            yield request
            request = []
        request.extend(rows)
    if request:
        yield request


# A request's records: (record index in the bundle, its rows), consecutive ones.
_Parts = list[tuple[int, list[RowWrite]]]


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
        self.errored: collections.deque = collections.deque()  # (parts, attempt, exc)
        self.failed: list[FailedWrite] = []
        self.positions: list[str] = []  # per record of the bundle, where it was read
        self.failed_records: set[int] = set()
        self.filling: _Parts = []  # the next request's records
        self.filling_rows = 0

    def process(self, element):
        if self.batched:
            records = serialized_rows(self.prepared, self.to_rows(element))
        else:
            records = [(self.position_of(element) if self.position_of else "",
                        list(self.to_rows(element)))]
        for position, rows in records:
            index = len(self.positions)
            self.positions.append(position)
            if not rows:
                continue
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
            self._send(self.filling, 1)
            self.filling, self.filling_rows = [], 0

    def _send(self, parts: _Parts, attempt: int) -> None:
        with self.settled:
            self.settled.wait_for(lambda: self.in_flight < self.max_in_flight)
            self.in_flight += 1
        rows = [row for _, record_rows in parts for row in record_rows]
        try:
            future = self.session.execute_async(one_request(self.prepared, rows,
                                                            self.batched))
        except Exception as exc:  # no such statement, values the columns cannot take, ...
            self._on_error(exc, parts, attempt)
            return
        future.add_callbacks(self._on_written, self._on_error, callback_args=(len(rows),),
                             errback_args=(parts, attempt))

    def _on_written(self, _result, rows: int) -> None:
        with self.settled:
            self.in_flight -= 1
            self.succeeded += rows
            self.settled.notify_all()

    def _on_error(self, exc: BaseException, parts: _Parts, attempt: int) -> None:
        self.errored.append((parts, attempt, exc))
        with self.settled:
            self.in_flight -= 1
            self.settled.notify_all()

    def _retry_errored(self) -> None:
        waited = 0.0
        # Only the writes that failed before this round: a resend that fails at once (no
        # host up) waits for the next round's backoff instead of spinning through its
        # attempts here.
        for _ in range(len(self.errored)):
            parts, attempt, exc = self.errored.popleft()
            retryable = isinstance(exc, self.retryable)
            if not retryable and len(parts) > 1:
                # One bad record must not fail its neighbours: each alone, same attempt.
                for part in parts:
                    self._send([part], attempt)
                continue
            if not retryable or attempt >= self.max_attempts:
                for record, rows in parts:
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
            self._send(parts, attempt + 1)


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
    and each column is serialized once, not each value.
    """

    def __init__(self, settings: Settings, to_rows: Callable[[Any], Iterable[RowWrite]],
                 statements: Mapping[str, str] = STATEMENTS, max_in_flight: int | None = None,
                 max_attempts: int = 8, backoff_seconds: float = 0.25,
                 position_of: Callable[[Any], str] | None = None,
                 batched: bool = False) -> None:
        super().__init__()
        self.settings = settings
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
        return records | "Reshuffle" >> beam.Reshuffle() | "Write" >> write


class _KnownAccountsFn(beam.DoFn):
    """Passes transactions of accounts in the accounts table; the others become dead
    letters. Known ids are cached per worker; an unknown one is asked again each time,
    since an account added meanwhile must be accepted. A bundle's lookups run
    concurrently and its uncached transactions wait for them at its end: one round trip
    per lookup in turn held the reader back (a replay, or a bank's millions of accounts,
    meets new ones all the time)."""

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

    def process(self, transaction, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        account = transaction.account_id
        if account in self.known:
            yield transaction
            return
        if account not in self.lookups:
            self.lookups[account] = self.store.session.execute_async(
                self.query, (account,), execution_profile=TUPLE_ROWS)
        self.waiting.append(WindowedValue(transaction, timestamp, (window,)))
        if len(self.waiting) >= self.MAX_WAITING:
            yield from self._settle()

    def finish_bundle(self):
        yield from self._settle()

    def _settle(self):
        from fraud_detection.records import DeadLetter, raw_text

        for account, future in self.lookups.items():
            try:
                found = future.result().one()
            except self.retryable:
                found = self._lookup(account)
            if found is not None:
                self.known.add(account)
        self.lookups = {}
        waiting, self.waiting = self.waiting, []
        for held in waiting:
            transaction = held.value
            if transaction.account_id in self.known:
                yield held
                continue
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput("unknown", held.with_value(DeadLetter(
                self.source, (f"account_id: unknown account {transaction.account_id!r}",),
                raw_text(transaction.to_dict()), transaction.position,
                received_at=transaction.event_time)))

    def _lookup(self, account: str):
        return waiting(lambda: self.store.session.execute(
            self.query, (account,), execution_profile=TUPLE_ROWS).one(), self.retryable)

    def teardown(self) -> None:
        self.store.close()


class KnownAccounts(beam.PTransform):
    """Transactions -> outputs `known` (Transaction) and `unknown` (DeadLetter)."""

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
