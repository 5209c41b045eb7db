"""Backfill re-scores day partitions: twice over the same days leaves every table as it
was; a day with a corrupt Parquet file is reported (and so is a day whose look-back holds
it) and the other days still land; a day backfilled alone scores as the full run."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fraud_detection.store import queries
from fraud_detection.store.keyspace import connect
from fraud_detection.store.tables import TRANSACTION_TABLES
from tests.integration.worlds import World

pytestmark = pytest.mark.integration

TABLES = [*TRANSACTION_TABLES, "account_balances"]


def backfill(settings, root: Path, first: str, last: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fraud_detection", "backfill", "--input", str(root),
         "--from", first, "--to", last, "--cassandra-port", str(settings.cassandra_port),
         "--cassandra-keyspace", settings.cassandra_keyspace, "--", "--runner=FnApiRunner"],
        capture_output=True, text=True, timeout=600)


def test_backfill_twice_changes_nothing_and_a_corrupt_day_is_reported(
        small_world: World, keyspace_for, tmp_path: Path) -> None:
    settings = keyspace_for("test_backfill")
    root = tmp_path / "world"
    shutil.copytree(small_world.root, root)
    days = sorted({s.transaction.event_time.date() for s in small_world.scored})[:3]
    first, last = days[0].isoformat(), days[-1].isoformat()

    done = backfill(settings, root, first, last)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 of 3 days done" in done.stdout
    store = connect(settings)
    try:
        stored = {row[0] for row in queries.table_contents(store, "transactions")}
        assert stored == {s.transaction.transaction_id for s in small_world.scored
                          if s.transaction.event_time.date() in days}
        before = {t: queries.table_contents(store, t) for t in TABLES}
        again = backfill(settings, root, first, last)
        assert again.returncode == 0, again.stdout + again.stderr
        assert {t: queries.table_contents(store, t) for t in TABLES} == before

        broken_day = days[1]
        (root / "transactions" / f"date={broken_day}" / "part-99999.parquet").write_bytes(
            b"not parquet at all")
        third = backfill(settings, root, first, last)
        assert third.returncode == 1
        lines = third.stdout.splitlines()
        assert any(line.startswith(f"{broken_day} FAILED") for line in lines), third.stdout
        assert any(line.startswith(f"{days[0]} ok") for line in lines)
        # The next day's history holds the damaged file: it fails too, naming it, rather
        # than scoring on part of its look-back.
        assert any(line.startswith(f"{days[2]} FAILED") and "look-back" in line
                   and "part-99999.parquet" in line for line in lines), third.stdout
        assert f"failed: {broken_day}, {days[2]}" in lines[-1]
        assert "Traceback" not in third.stdout + third.stderr
    finally:
        store.close()


def test_backfill_refuses_a_bad_date_in_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "fraud_detection", "backfill",
                             "--date", "someday"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not a date" in result.stderr


def test_days_backfilled_alone_score_as_the_full_batch_run(keyspace_for) -> None:
    from fraud_detection.beam_pipelines import backfill as backfill_pipeline
    from fraud_detection.beam_pipelines import batch

    sample = Path(__file__).parents[2] / "data" / "sample"
    every = sorted(p.name.removeprefix("date=") for p in (sample / "transactions").iterdir())
    # The first day (no history), early days (the windows filling) and the last days
    # (full look-back): every day of the sample passed too, in 6 minutes.
    days = [*every[:2], every[len(every) // 2], *every[-2:]]
    full = keyspace_for("test_backfill_full")
    batch.run(["--input", str(sample), "--runner=FnApiRunner"], full)
    alone = keyspace_for("test_backfill_alone")
    results = [backfill_pipeline.run(sample, day, day, alone, ["--runner=FnApiRunner"])[0]
               for day in map(dt.date.fromisoformat, days)]
    assert [r.day.isoformat() for r in results if r.ok] == days, [r.detail for r in results]

    def scores(settings) -> dict:
        store = connect(settings)
        try:
            return {r.transaction_id: (r.score, r.flagged, tuple(r.reasons or ()), r.late)
                    for r in store.execute("SELECT transaction_id, score, flagged, reasons, "
                                           "late FROM transactions", fetch_size=5000)}
        finally:
            store.close()

    store = connect(full)
    try:
        on_days = {r.transaction_id for r in store.execute(
            "SELECT transaction_id, event_time FROM transactions", fetch_size=5000)
            if r.event_time.date().isoformat() in days}
    finally:
        store.close()
    expected = {k: v for k, v in scores(full).items() if k in on_days}
    assert len(expected) > 2_000 and any(flagged for _, flagged, _, _ in expected.values())
    assert scores(alone) == expected
