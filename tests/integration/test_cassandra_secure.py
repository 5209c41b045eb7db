"""Password authentication and TLS: the sink and the queries work against a node that
requires both, with the password read from a file, and a client without credentials is
refused with a one-line reason.

The node runs in its own state dir (test-secure) on its own ports (the session's offset
plus SECURE_OFFSET), beside the session's stack and a user's default one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from fraud_detection.config import load_settings
from fraud_detection.io.cassandra import WriteToCassandra
from fraud_detection.stack import StackInfo, tls_ca_file
from fraud_detection.store import queries
from fraud_detection.store.keyspace import SchemaError, apply_schema, connect
from fraud_detection.store.tables import scored_transaction_rows
from tests import stack_env
from tests.integration.worlds import World

pytestmark = pytest.mark.integration

PORTS = stack_env.stack_ports(stack_env.SECURE_OFFSET)


@pytest.fixture(scope="module")
def secure_dir() -> Iterator[Path]:
    yield from stack_env.own_stack_dir("secure")


def test_sink_and_queries_over_tls_with_a_password(
        secure_dir: Path, up_or_fail: Callable[..., StackInfo], small_world: World) -> None:
    up_or_fail(services=("cassandra",), ports=PORTS, state_dir=secure_dir,
               cassandra_secure=True)
    base = {"cassandra_port": PORTS.cassandra_native, "cassandra_keyspace": "fraud_secure",
            "cassandra_tls_ca_file": str(tls_ca_file(secure_dir))}
    with pytest.raises(SchemaError,
                       match=rf"cannot reach Cassandra at 127\.0\.0\.1:{PORTS.cassandra_native}"):
        connect(load_settings(base))
    apply_schema(load_settings({**base, "cassandra_username": "cassandra",
                                "cassandra_password": "cassandra"}))
    # As a cluster's workers get it: from a file each reads, not from the graph.
    password_file = secure_dir / "password"
    password_file.write_text("cassandra\n")
    settings = load_settings({**base, "cassandra_username": "cassandra",
                              "cassandra_password_file": str(password_file)}, environ={})
    records = small_world.scored[:200]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        failed = (p | beam.Create(records, reshuffle=False)
                  | WriteToCassandra(settings, scored_transaction_rows))
        assert_that(failed, equal_to([]))
    store = connect(settings)
    try:
        assert [queries.transaction(store, s.transaction.transaction_id) for s in records] == \
            records
    finally:
        store.close()
