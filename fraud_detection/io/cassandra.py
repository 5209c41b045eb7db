"""WriteToCassandra: fan records out to their query tables with prepared, idempotent upserts.

Shaped like Beam's WriteToMongoDB: records (with stable ids) become row writes, a
Reshuffle keeps a retried write stage from recomputing them, and a writer DoFn holds
one session per worker process, a bounded window of async writes (a record's rows as
one unlogged batch: one request, not one per table), retries with backoff, and a
dead-letter output for rows that still fail. Every write has settled
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
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared

from fraud_detection.config import Settings
from fraud_detection.store.tables import STATEMENTS, RowWrite


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


def _retryable() -> tuple[type[BaseException], ...]:
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    return (OperationTimedOut, WriteTimeout, ReadTimeout, Unavailable, NoHostAvailable,
            ConnectionError)


# A worker waits for a restarting node, in setup and in lookups, as writes do: Prism
# ends the job when a DoFn raises. 40 tries back off for about 15 minutes.
WAIT_ATTEMPTS = 40


def _backoff(attempt: int, base_seconds: float = 0.25) -> float:
    return min(base_seconds * 2 ** (attempt - 1), 30.0)


def _waiting(call: Callable[[], Any], retryable: tuple[type[BaseException], ...],
             attempts: int = WAIT_ATTEMPTS) -> Any:
    """call(), tried again after a backoff while it raises one of `retryable`."""
    for attempt in range(1, attempts):
        try:
            return call()
        except retryable:
            time.sleep(_backoff(attempt))
    return call()


def connect_when_up(settings: Settings) -> Any:
    from fraud_detection.store.keyspace import CassandraUnreachable, connect

    return _waiting(lambda: connect(settings), (CassandraUnreachable,))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]


def one_request(prepared: Mapping[str, Any], rows: Sequence[RowWrite]) -> Any:
    """A record's rows as one statement: an unlogged batch when there are several (one
    request instead of one per table; a node applies it all or nothing)."""
    from cassandra.query import BatchStatement, BatchType

    if len(rows) == 1:
        table, values = rows[0]
        return prepared[table].bind(values)
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for table, values in rows:
        batch.add(prepared[table], values)
    return batch


class _WriteRecordsFn(beam.DoFn):
    """Writes each record's rows asynchronously, as one request. Driver callbacks (on its
    I/O thread) only count and queue; retries, metrics and dead letters happen on the
    bundle's thread, where Beam's metrics live."""

    def __init__(self, settings: Settings, statements: Mapping[str, str],
                 to_rows: Callable[[Any], Iterable[RowWrite]], max_in_flight: int,
                 max_attempts: int, backoff_seconds: float,
                 position_of: Callable[[Any], str] | None = None,
                 records_of: Callable[[Any], Iterable[Any]] | None = None) -> None:
        self.settings = settings
        self.statements = dict(statements)
        self.to_rows = to_rows
        self.position_of = position_of
        self.records_of = records_of
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
        self.retryable = _retryable()

    def start_bundle(self) -> None:
        self.settled = threading.Condition()
        self.in_flight = 0
        self.succeeded = 0
        # (rows, attempt, exc, record index)
        self.errored: collections.deque = collections.deque()
        self.failed: list[FailedWrite] = []
        self.positions: list[str] = []  # per record of the bundle, where it was read
        self.failed_records: set[int] = set()

    def process(self, element):
        for record in self.records_of(element) if self.records_of else (element,):
            index = len(self.positions)
            self.positions.append(self.position_of(record) if self.position_of else "")
            rows = list(self.to_rows(record))
            if rows:
                self._send(rows, 1, index)
            if self.errored:
                self._retry_errored()
        return ()

    def finish_bundle(self):
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

    def _send(self, rows: list[RowWrite], attempt: int, record: int) -> None:
        with self.settled:
            self.settled.wait_for(lambda: self.in_flight < self.max_in_flight)
            self.in_flight += 1
        try:
            future = self.session.execute_async(one_request(self.prepared, rows))
        except Exception as exc:  # no such statement, values the columns cannot take, ...
            self._on_error(exc, rows, attempt, record)
            return
        future.add_callbacks(self._on_written, self._on_error,
                             callback_args=(len(rows),),
                             errback_args=(rows, attempt, record))

    def _on_written(self, _result, rows: int) -> None:
        with self.settled:
            self.in_flight -= 1
            self.succeeded += rows
            self.settled.notify_all()

    def _on_error(self, exc: BaseException, rows: list[RowWrite], attempt: int,
                  record: int) -> None:
        self.errored.append((rows, attempt, exc, record))
        with self.settled:
            self.in_flight -= 1
            self.settled.notify_all()

    def _retry_errored(self) -> None:
        waited = 0.0
        # Only the writes that failed before this round: a resend that fails at once (no
        # host up) waits for the next round's backoff instead of spinning through its
        # attempts here.
        for _ in range(len(self.errored)):
            rows, attempt, exc, record = self.errored.popleft()
            if not isinstance(exc, self.retryable) or attempt >= self.max_attempts:
                self.failures.inc(len(rows))
                self.failed.extend(FailedWrite(table, tuple(values), _describe(exc), attempt)
                                   for table, values in rows)
                self.failed_records.add(record)
                continue
            # One backoff per round of retries, not per row: a node outage fails many.
            pause = _backoff(attempt, self.backoff_seconds)
            if pause > waited:
                time.sleep(pause - waited)
                waited = pause
            self.retries.inc()
            self._send(rows, attempt + 1, record)


STORED = "stored"


class WriteToCassandra(beam.PTransform):
    """Writes each record's rows; the output is every row that failed after its retries.

    `to_rows` turns a record into row writes (table, values) for the upserts in
    store.tables.STATEMENTS (or `statements`); the writer prepares them once per worker.
    With `position_of` (record -> where it was read, "" if unknown) the result has two
    outputs: `failed` (FailedWrite) and STORED (tuples of the positions of records whose
    rows are all in Cassandra, one per bundle). With `records_of` each element is a
    batch of records (e.g. a scored Arrow table): batches cross the Reshuffle, not records.
    """

    def __init__(self, settings: Settings, to_rows: Callable[[Any], Iterable[RowWrite]],
                 statements: Mapping[str, str] = STATEMENTS, max_in_flight: int | None = None,
                 max_attempts: int = 8, backoff_seconds: float = 0.25,
                 position_of: Callable[[Any], str] | None = None,
                 records_of: Callable[[Any], Iterable[Any]] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.to_rows = to_rows
        self.statements = statements
        self.max_in_flight = max_in_flight or settings.cassandra_max_in_flight
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.position_of = position_of
        self.records_of = records_of

    def expand(self, records):
        # The Reshuffle checkpoints records (fewer and smaller than their rows), so a
        # retried write stage rewrites the same input instead of recomputing it.
        write = beam.ParDo(_WriteRecordsFn(
            self.settings, self.statements, self.to_rows, self.max_in_flight,
            self.max_attempts, self.backoff_seconds, self.position_of, self.records_of))
        if self.position_of is not None:
            write = write.with_outputs(STORED, main="failed")
        return records | "Reshuffle" >> beam.Reshuffle() | "Write" >> write


class _KnownAccountsFn(beam.DoFn):
    """Passes transactions of accounts in the accounts table; the others become dead
    letters. Known ids are cached per worker; an unknown one is asked again each time,
    since an account added meanwhile must be accepted."""

    def __init__(self, settings: Settings, source: str) -> None:
        self.settings = settings
        self.source = source

    def setup(self) -> None:
        self.store = connect_when_up(self.settings)
        self.query = self.store.prepare("SELECT account_id FROM accounts WHERE account_id = ?")
        self.known: set[str] = set()
        self.rejected = Metrics.counter("validate", "dead_lettered")

    def process(self, transaction):
        from fraud_detection.records import DeadLetter, raw_text

        account = transaction.account_id
        if account not in self.known:
            if self._lookup(account) is None:
                self.rejected.inc()
                yield beam.pvalue.TaggedOutput("unknown", DeadLetter(
                    self.source, (f"account_id: unknown account {account!r}",),
                    raw_text(transaction.to_dict()), transaction.position,
                    received_at=transaction.event_time))
                return
            self.known.add(account)
        yield transaction

    def _lookup(self, account: str):
        return _waiting(lambda: self.store.session.execute(self.query, (account,)).one(),
                        _retryable())

    def teardown(self) -> None:
        self.store.close()


class KnownAccounts(beam.PTransform):
    """Transactions -> outputs `known` (Transaction) and `unknown` (DeadLetter)."""

    def __init__(self, settings: Settings, source: str) -> None:
        super().__init__()
        self.settings = settings
        self.source = source

    def expand(self, transactions):
        return transactions | beam.ParDo(
            _KnownAccountsFn(self.settings, self.source)).with_outputs("unknown", main="known")
