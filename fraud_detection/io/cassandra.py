"""WriteToCassandra: fan records out to their query tables with prepared, idempotent upserts.

Shaped like Beam's WriteToMongoDB: records (with stable ids) become row writes, a
Reshuffle keeps a retried write stage from recomputing them, and a writer DoFn holds
one session per worker process, a bounded window of async writes, retries with
backoff, and a dead-letter output for rows that still fail. Every write has settled
when a bundle finishes, so a runner commits nothing that is not in Cassandra.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
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


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]


class _WriteRowsFn(beam.DoFn):
    def __init__(self, settings: Settings, statements: Mapping[str, str], max_in_flight: int,
                 max_attempts: int, backoff_seconds: float) -> None:
        self.settings = settings
        self.statements = dict(statements)
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.shared_store = shared.Shared()
        self.written = Metrics.counter("cassandra", "rows_written")
        self.retries = Metrics.counter("cassandra", "retries")
        self.failures = Metrics.counter("cassandra", "rows_failed")

    def setup(self) -> None:
        from fraud_detection.store.keyspace import connect

        settings = self.settings
        # One session per worker process, shared by every DoFn instance in it.
        tag = hashlib.sha256(repr(settings).encode()).hexdigest()
        store = self.shared_store.acquire(lambda: _StoreHolder(connect(settings)), tag=tag).store
        self.session = store.session
        self.prepared = {key: store.prepare(cql) for key, cql in self.statements.items()}
        self.retryable = _retryable()

    def start_bundle(self) -> None:
        self.in_flight: collections.deque = collections.deque()
        self.failed: list[FailedWrite] = []

    def process(self, row: RowWrite):
        table, values = row
        future = self._send(table, values, attempt=1)
        if future is not None:
            self.in_flight.append((table, values, future))
        while len(self.in_flight) >= self.max_in_flight:
            self._settle_oldest()
        return ()

    def finish_bundle(self):
        while self.in_flight:
            self._settle_oldest()
        for failure in self.failed:
            yield GlobalWindows.windowed_value(failure)

    def _send(self, table: str, values: tuple, attempt: int):
        try:
            return self.session.execute_async(self.prepared[table], values)
        except KeyError:
            self._fail(table, values, KeyError(f"no statement for table {table!r}"), attempt)
        except self.retryable as exc:  # no connection at all: settled like a failed write
            return exc
        except Exception as exc:  # values the driver cannot serialise for the column types
            self._fail(table, values, exc, attempt)
        return None

    def _settle_oldest(self) -> None:
        table, values, future = self.in_flight.popleft()
        attempt = 1
        while True:
            try:
                if isinstance(future, BaseException):
                    raise future
                future.result()
                self.written.inc()
                return
            except self.retryable as exc:
                error: BaseException = exc
            except Exception as exc:  # the server rejected it; a retry would too
                self._fail(table, values, exc, attempt)
                return
            if attempt >= self.max_attempts:
                self._fail(table, values, error, attempt)
                return
            self.retries.inc()
            time.sleep(min(self.backoff_seconds * 2 ** (attempt - 1), 30.0))
            attempt += 1
            future = self._send(table, values, attempt)
            if future is None:
                return

    def _fail(self, table: str, values: tuple, error: BaseException, attempts: int) -> None:
        self.failures.inc()
        self.failed.append(FailedWrite(table, tuple(values), _describe(error), attempts))


class WriteToCassandra(beam.PTransform):
    """Writes each record's rows; the output is every row that failed after its retries.

    `to_rows` turns a record into row writes (table, values) for the upserts in
    store.tables.STATEMENTS (or `statements`); the writer prepares them once per worker.
    """

    def __init__(self, settings: Settings, to_rows: Callable[[Any], Iterable[RowWrite]],
                 statements: Mapping[str, str] = STATEMENTS, max_in_flight: int | None = None,
                 max_attempts: int = 8, backoff_seconds: float = 0.25) -> None:
        super().__init__()
        self.settings = settings
        self.to_rows = to_rows
        self.statements = statements
        self.max_in_flight = max_in_flight or settings.cassandra_max_in_flight
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds

    def expand(self, records):
        return (records
                | "ToRows" >> beam.FlatMap(self.to_rows)
                | "Reshuffle" >> beam.Reshuffle()
                | "Write" >> beam.ParDo(_WriteRowsFn(
                    self.settings, self.statements, self.max_in_flight, self.max_attempts,
                    self.backoff_seconds)))
