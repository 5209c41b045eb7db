"""A 3-node Cassandra cluster keeps QUORUM reads and writes through one node's outage.

Design: the cluster runs in its own state dir (test-cluster) on 127.0.0.1-3 with its own
ports (the session's offset plus CLUSTER_OFFSET: native 20042, storage 18000, JMX
18199-18201 by default), so it never touches the session's 1-node stack or a user's
default one (either may be running at the same time) and is removed afterwards.
"""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.query import SimpleStatement

from fraud_detection.config import load_settings
from fraud_detection.io.cassandra import WriteToCassandra
from fraud_detection.stack import StackInfo, start_node, stop_node
from fraud_detection.store import queries
from fraud_detection.store.keyspace import apply_schema, connect
from fraud_detection.store.tables import scored_transaction_rows
from tests import stack_env
from tests.integration.worlds import World

pytestmark = pytest.mark.integration

PORTS = stack_env.stack_ports(stack_env.CLUSTER_OFFSET)
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


@pytest.fixture(scope="module")
def cluster_dir() -> Iterator[Path]:
    yield from stack_env.own_stack_dir("cluster")


def _count_at_all(session: Session, table: str = "ha.kv", timeout: float = 120) -> int:
    """Rows counted at consistency ALL: it needs every replica, so it answers only once the
    restarted node is back in the ring (the others see it up a few gossip rounds later)."""
    count_all = SimpleStatement(f"SELECT count(*) FROM {table}",
                                consistency_level=ConsistencyLevel.ALL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return session.execute(count_all).one()[0]
        except (Unavailable, ReadTimeout, OperationTimedOut, NoHostAvailable):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def test_quorum_survives_one_node_down_and_the_node_rejoins(
        cluster_dir: Path, up_or_fail: Callable[..., StackInfo]) -> None:
    up_or_fail(services=("cassandra",), cassandra_nodes=3, ports=PORTS, state_dir=cluster_dir)

    cluster = Cluster(HOSTS, port=PORTS.cassandra_native)
    try:
        session = cluster.connect()
        session.execute("CREATE KEYSPACE ha WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        session.execute("CREATE TABLE ha.kv (k int PRIMARY KEY, v text)")
        insert = session.prepare("INSERT INTO ha.kv (k, v) VALUES (?, ?)")
        insert.consistency_level = ConsistencyLevel.QUORUM
        select = session.prepare("SELECT v FROM ha.kv WHERE k = ?")
        select.consistency_level = ConsistencyLevel.QUORUM
        for k in range(10):
            session.execute(insert, (k, "all up"))

        assert stop_node(3, cluster_dir)
        for k in range(10, 20):
            session.execute(insert, (k, "node 3 down"))
        values = [session.execute(select, (k,)).one().v for k in range(20)]
        assert values == ["all up"] * 10 + ["node 3 down"] * 10

        start_node(3, cluster_dir)
        assert _count_at_all(session) == 20
    finally:
        cluster.shutdown()


def test_beam_write_at_quorum_with_a_node_down_loses_nothing(
        cluster_dir: Path, up_or_fail: Callable[..., StackInfo], small_world: World) -> None:
    up_or_fail(services=("cassandra",), cassandra_nodes=3, ports=PORTS, state_dir=cluster_dir)
    settings = load_settings({"cassandra_hosts": HOSTS, "cassandra_port": PORTS.cassandra_native,
                              "cassandra_keyspace": "fraud_ha",
                              "cassandra_replication_factor": 3,
                              "cassandra_consistency": "QUORUM"})
    apply_schema(settings)
    assert stop_node(2, cluster_dir)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        failed = (p | beam.Create(small_world.scored, reshuffle=False)
                  | WriteToCassandra(settings, scored_transaction_rows))
        assert_that(failed, equal_to([]))
    start_node(2, cluster_dir)

    cluster = Cluster(HOSTS, port=PORTS.cassandra_native)
    try:
        session = cluster.connect()
        assert _count_at_all(session, "fraud_ha.transactions") == len(small_world.scored)
    finally:
        cluster.shutdown()
    store = connect(settings)
    try:
        sample = small_world.scored[::50]
        assert [queries.transaction(store, s.transaction.transaction_id) for s in sample] == sample
    finally:
        store.close()
