"""The runner service: Prism's job service and Beam worker pools, each its own process,
as a cluster runs pipelines. `batch` submitted to it (PortableRunner over the Job API,
an EXTERNAL environment) writes exactly what `batch` on FnApiRunner writes, table by
table; its SDK worker is a separate process, started by the pool in the pool's own
folder; and `stack down` stops every one of them.

The service runs in its own state dir (test-runner) on its own ports (the session's
offset plus RUNNER_OFFSET); Cassandra is the session's stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fraud_detection.beam_pipelines import batch
from fraud_detection.stack import StackInfo, down, log_path, status
from tests import stack_env
from tests.integration.worlds import World, stored_tables

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

    pool_log = log_path("worker-2", service_dir).read_text()
    assert "Starting worker with command" in pool_log  # a process of its own
    assert "Starting worker" not in log_path("worker-1", service_dir).read_text()

    assert sorted(down(service_dir)) == ["prism", "worker-1", "worker-2"]
    assert not any(s.running for s in status(service_dir))
