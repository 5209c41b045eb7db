"""Helpers for the live streaming tests: the pipeline as a real process, a world's
expected outcomes, and waiting for Cassandra to hold them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fraud_detection.config import Settings
from fraud_detection.io.parquet import read_transactions
from fraud_detection.store.keyspace import Store, waiting
from fraud_detection.transforms import kernel
from fraud_detection.transforms.rules import load_rules

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = ("kafka_bootstrap", "cassandra_port", "cassandra_keyspace", "redis_port",
                 "topic_transactions", "topic_alerts", "topic_dead_letters", "topic_labels")


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name in SETTING_NAMES:
        env[f"FRAUD_{name.upper()}"] = str(getattr(settings, name))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_stream(settings: Settings, log: Path,
                 beam_args: Sequence[str] = ()) -> subprocess.Popen:
    """`python -m fraud_detection stream [-- beam_args]` in its own process group (with
    its Prism)."""
    argv = [sys.executable, "-m", "fraud_detection", "stream",
            *(["--", *beam_args] if beam_args else [])]
    return subprocess.Popen(argv, cwd=ROOT,
                            env=settings_env(settings), stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_stream(process: subprocess.Popen) -> None:
    """SIGKILL to the whole group: no clean shutdown, as in a crash."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def expected_outcomes(root: Path, threshold: float) -> dict[str, tuple]:
    """What the batch path scores each transaction of the world as."""
    table = read_transactions(root)
    scored = kernel.detect(table, kernel.Decider(load_rules(), threshold))
    return {r["transaction_id"]: (r["score"], r["flagged"], r["reasons"], r["late"])
            for r in scored.select(["transaction_id", "score", "flagged", "reasons",
                                    "late"]).to_pylist()}


def _not_answering_yet() -> tuple[type[Exception], ...]:
    """What a node still settling after a restart answers a range read with: besides
    timeouts, a ReadFailure when its own read monitor aborts a slow read."""
    from cassandra import OperationTimedOut, ReadFailure, ReadTimeout, Unavailable
    from cassandra.cluster import NoHostAvailable

    return NoHostAvailable, OperationTimedOut, ReadFailure, ReadTimeout, Unavailable


def stored_outcomes(store: Store) -> dict[str, tuple]:
    """Every stored outcome, read in small pages, and read again from the start while
    the node is not answering yet."""
    def read() -> dict[str, tuple]:
        rows = store.execute("SELECT transaction_id, score, flagged, reasons, late "
                             "FROM transactions", fetch_size=500)
        return {r.transaction_id: (r.score, r.flagged, list(r.reasons or []), r.late)
                for r in rows}

    return waiting(read, _not_answering_yet(), attempts=10)


def count_rows(store: Store, table: str = "transactions") -> int:
    """The table's row count; -1 while Cassandra cannot answer (a node restarting)."""
    try:
        return store.execute(f"SELECT count(*) FROM {table}").one()[0]
    except _not_answering_yet():
        return -1


def settled_count(store: Store, quiet_seconds: int = 5) -> int:
    """The row count once it has not changed for `quiet_seconds` in a row."""
    last, same = count_rows(store), 0
    while same < quiet_seconds:
        time.sleep(1)
        now = count_rows(store)
        same = same + 1 if now == last and now >= 0 else 0
        last = now
    return last


def wait_for_rows(store: Store, wanted: int, timeout: float, process=None,
                  log: Path | None = None) -> int:
    """Waits until the transactions table holds `wanted` rows; fails with the pipeline's
    log tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        have = count_rows(store)
        if have >= wanted:
            return have
        died = process is not None and process.poll() is not None
        if died or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{have} of {wanted} rows "
                                 f"({'pipeline exited' if died else 'timed out'})\n{tail}")
        time.sleep(1)
