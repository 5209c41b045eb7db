"""Backfill: the batch pipeline once per day partition, so a day can be re-scored after a
rule or model change. Each day's detection state is built from the LOOKBACK_DAYS
partitions before it (the kernel run over them, then over the day, as one history), and
only the day's transactions are written. A day that fails is reported and
the others still run."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fraud_detection.beam_pipelines import batch
from fraud_detection.config import Settings
from fraud_detection.io.parquet import TRANSACTIONS_DIR, UnreadableFileError, check_readable
from fraud_detection.store.keyspace import connect
from fraud_detection.store.tables import clear_flags_of_day
from fraud_detection.transforms.kernel import (
    BENFORD_WINDOW_DAYS,
    DELAY_DAYS,
    MAX_HOURS,
    WINDOW_DAYS,
)

# How far back a day's features reach: the 30-day windows, counterparty risk (28 days
# ending 7 before) and Benford's verdict on the previous 30-day window, which starts up
# to 60 days back. Robust z-scores and new counterparties remember by count, not time,
# so older history can still matter there; it does not on the data the tests use.
LOOKBACK_DAYS = max(MAX_HOURS // 24, DELAY_DAYS + WINDOW_DAYS, 2 * BENFORD_WINDOW_DAYS)


@dataclass(frozen=True)
class DayResult:
    day: dt.date
    ok: bool
    detail: str  # the summary, or the one-line reason it failed
    seconds: float


def day_files(root: Path, day: dt.date) -> list[Path]:
    return sorted((root / TRANSACTIONS_DIR / f"date={day.isoformat()}").glob("*.parquet"))


def lookback_files(root: Path, day: dt.date, days: int = LOOKBACK_DAYS) -> list[Path]:
    """The day partitions before `day` that detection's history reaches back to."""
    return [f for back in range(days, 0, -1)
            for f in day_files(root, day - dt.timedelta(days=back))]


def _people_of(files: list[Path]) -> tuple[set[str], set[str]]:
    banks, users = set(), set()
    for f in files:
        try:
            table = pq.read_table(f, columns=["bank_id", "user_id"])
        except (OSError, pa.ArrowException) as exc:
            raise UnreadableFileError(f"cannot read {f}: {exc}".splitlines()[0]) from None
        banks.update(table["bank_id"].to_pylist())
        users.update(table["user_id"].to_pylist())
    return banks, users


def run_day(root: Path, day: dt.date, settings: Settings, beam_args: list[str],
            values: Mapping[str, Any] | None = None) -> DayResult:
    started = time.monotonic()
    files = day_files(root, day)
    if not files:
        return DayResult(day, False, f"no Parquet files for {day} under {root}", 0.0)
    try:
        # Every file of the day readable first: a damaged one fails the day before its
        # flags are cleared or any row is written.
        check_readable([str(f) for f in files])
        banks, users = _people_of(files)
        # A re-score may clear flags: drop the day's flagged-only rows first (one range
        # delete per partition, at a time before any of the new writes).
        store = connect(settings)
        try:
            clear_flags_of_day(store, day, banks, users)
        finally:
            store.close()
        pattern = str(root / TRANSACTIONS_DIR / f"date={day.isoformat()}" / "*.parquet")
        history = lookback_files(root, day)
        try:
            check_readable([str(f) for f in history])
        except UnreadableFileError as exc:
            # Without that day's history the day would not score as the full run does.
            raise UnreadableFileError(f"look-back: {exc}") from None
        summary = batch.run(beam_args, settings, {**(values or {}), "input": pattern},
                            lookback=[str(f) for f in history], days=(day, day),
                            entities=False)
    except Exception as exc:  # one day's failure must not stop the others
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return DayResult(day, False, f"{type(exc).__name__}: {reason}"[:300],
                         time.monotonic() - started)
    ok = summary.rows_failed == 0 and summary.dead_lettered == 0
    return DayResult(day, ok, str(summary), time.monotonic() - started)


def run(root: Path, first: dt.date, last: dt.date, settings: Settings, beam_args: list[str],
        values: Mapping[str, Any] | None = None,
        progress: Callable[[DayResult], None] = lambda result: None) -> list[DayResult]:
    """values: the batch pipeline's options as typed values, for every day."""
    results = []
    day = first
    while day <= last:
        result = run_day(root, day, settings, beam_args, values)
        progress(result)
        results.append(result)
        day += dt.timedelta(days=1)
    return results
