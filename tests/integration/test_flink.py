"""`batch` on FlinkRunner ([local], LOOPBACK, the job server jar from Beam's jar cache)
writes what `batch` on FnApiRunner writes, table by table. Skipped, naming the jar,
where no job server jar is staged: Maven Central does not serve it to every machine
(`python -m fraud_detection stack runners` fetches it, or `--flink-job-server-jar PATH`
stages one you supply)."""

from __future__ import annotations

import pytest

from fraud_detection.beam_pipelines import batch
from fraud_detection.stack import runners
from tests.integration.worlds import World, stored_tables

pytestmark = pytest.mark.integration


def test_batch_on_flink_writes_what_fnapi_writes(small_world: World, keyspace_for) -> None:
    if runners.staged_flink_job_server_jar() is None:
        pytest.skip(f"no Flink job server jar at {runners.flink_jar_path()}; stage one with "
                    "`python -m fraud_detection stack runners --flink-job-server-jar PATH`")
    here, there = keyspace_for("test_flink_fnapi"), keyspace_for("test_flink")
    argv = ["--input", str(small_world.root)]
    batch.run([*argv, "--runner=FnApiRunner"], here)
    summary = batch.run([*argv, *runners.flink_args()], there)
    assert summary.read == summary.scored == len(small_world.scored)
    expected = stored_tables(here)
    assert expected["transactions"]
    assert stored_tables(there) == expected
