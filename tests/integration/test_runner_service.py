"""The runner service: Prism's job service and Beam worker pools, each its own process,
as a cluster runs pipelines. `batch` submitted to it (PortableRunner over the Job API,
an EXTERNAL environment) writes exactly what `batch` on FnApiRunner writes, table by
table; its SDK worker is a separate process, started by the pool in the pool's own
folder. `stream` there scores a bounded topic as batch does, and detached it runs on
after the submitting command ends; `stack down` cancels its job and stops every
process.

The service runs in its own state dir (test-runner) on its own ports (the session's
offset plus RUNNER_OFFSET); Cassandra is the session's stack."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fraud_detection.beam_pipelines import batch, stream
from fraud_detection.io.kafka import KafkaSender, encode_record, ensure_topics
from fraud_detection.stack import StackInfo, down, jobs, log_path, status, stop_jobs
from fraud_detection.store.keyspace import connect, drop_keyspace
from tests import stack_env
from tests.integration.streaming import expected_outcomes, settings_env
from tests.integration.worlds import (
    World,
    replay_world,
    stored_tables,
    stream_settings,
    write_entities,
)

pytestmark = pytest.mark.integration

PORTS = stack_env.stack_ports(stack_env.RUNNER_OFFSET)


@pytest.fixture(scope="module")
def service_dir() -> Iterator[Path]:
    yield from stack_env.own_stack_dir("runner")


def test_batch_on_the_runner_service_writes_what_fnapi_writes(
        service_dir: Path, up_or_fail: Callable[..., StackInfo], small_world: World,
        keyspace_for) -> None:
    up_or_fail(services=(), ports=PORTS, state_dir=service_dir, workers=2)
    assert {s.name for s in status(service_dir) if s.running} == {
        "prism", "worker-1", "worker-2"}
    here, there = keyspace_for("test_runner_fnapi"), keyspace_for("test_runner_service")
    argv = ["--input", str(small_world.root)]
    batch.run([*argv, "--runner=FnApiRunner"], here)
    summary = batch.run([*argv, f"--runner_service={service_dir}", "--worker_pool=2"], there)
    assert summary.read == summary.scored == len(small_world.scored)
    assert summary.rows_failed == 0
    expected = stored_tables(here)
    assert expected["transactions"]
    assert stored_tables(there) == expected
    for settings in (here, there):  # every keyspace slows each later connection's start
        drop_keyspace(settings)

    pool_log = log_path("worker-2", service_dir).read_text()
    assert "Starting worker with command" in pool_log  # a process of its own
    assert "Starting worker" not in log_path("worker-1", service_dir).read_text()


def _tx_message(tx, suffix: str) -> bytes:
    record = {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
              for k, v in tx.to_dict().items()}
    return encode_record({**record, "transaction_id": f"{tx.transaction_id}-{suffix}"})


def test_stream_on_the_runner_service_bounded_and_detached(
        service_dir: Path, up_or_fail: Callable[..., StackInfo], stack: StackInfo,
        small_world: World, keyspace_for) -> None:
    up_or_fail(services=(), ports=PORTS, state_dir=service_dir, workers=2)
    run = uuid.uuid4().hex[:8]
    settings = stream_settings(keyspace_for, stack, "test_runner_stream", run)
    write_entities(settings, small_world)
    ensure_topics(settings, {settings.topic_transactions: stream.TRANSACTION_PARTITIONS})
    replay_world(settings, small_world, f"runner-{run}")

    # Bounded: what the batch path scores, from the pool's worker.
    summary = stream.run(["--bounded", f"--runner_service={service_dir}"], settings)
    assert summary is not None and summary.read == len(small_world.scored)
    store = connect(settings)
    try:
        rows = {r.transaction_id: (r.score, r.flagged, list(r.reasons or []), r.late)
                for r in store.execute("SELECT transaction_id, score, flagged, reasons, "
                                       "late FROM transactions", fetch_size=5000)}
        assert rows == expected_outcomes(small_world.root, settings.fraud_threshold)

        # Detached: the submitting command ends, the job runs on and stores new messages.
        submitted = subprocess.run(
            [sys.executable, "-m", "fraud_detection", "stream", "--",
             f"--runner_service={service_dir}", "--worker_pool=2", "--detach"],
            env=settings_env(settings), capture_output=True, text=True, timeout=300)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "submitted" in submitted.stdout
        running = [j for j in jobs(service_dir) if j.state == "RUNNING"]
        assert len(running) == 1, jobs(service_dir)
        later = [s.transaction for s in small_world.scored[-20:]]
        sender = KafkaSender(settings)
        for tx in later:
            sender.send(settings.topic_transactions, tx.account_id, _tx_message(tx, "later"),
                        int(tx.event_time.timestamp() * 1000))
        sender.flush()
        sender.close()
        wanted = {f"{tx.transaction_id}-later" for tx in later}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            stored = {r.transaction_id for r in store.execute(
                "SELECT transaction_id FROM transactions", fetch_size=5000)}
            if wanted <= stored:
                break
            time.sleep(2)
        assert wanted <= stored
    finally:
        store.close()

    # `stack down` cancels the job, waits for it to end, then stops every process.
    ended = stop_jobs(service_dir)
    assert [j.state for j in ended] == ["CANCELLED"]
    assert sorted(down(service_dir)) == ["prism", "worker-1", "worker-2"]
    assert not any(s.running for s in status(service_dir))
    drop_keyspace(settings)
