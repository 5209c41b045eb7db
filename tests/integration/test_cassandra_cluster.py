"""A 3-node Cassandra cluster keeps QUORUM reads and writes through one node's outage.

Design: the cluster runs in its own state dir on 127.0.0.1-3 with its own ports (native
19042, storage 17000, JMX 17199-17201), so it never touches the 1-node stack on
127.0.0.1:9042 (which may be running at the same time) and is removed afterwards.
"""

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.query import SimpleStatement

from fraud_detection.stack import (
    Ports,
    StackInfo,
    default_state_dir,
    down,
    start_node,
    stop_node,
)

pytestmark = pytest.mark.integration

PORTS = Ports(cassandra_native=19042, cassandra_storage=17000, cassandra_jmx=17199)
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    state = default_state_dir().with_name("stack-cluster-test")
    down(state)  # leftovers of an interrupted run
    shutil.rmtree(state, ignore_errors=True)
    yield state
    down(state)
    shutil.rmtree(state, ignore_errors=True)


def _count_at_all(session: Session, timeout: float = 120) -> int:
    """Rows counted at consistency ALL: it needs every replica, so it answers only once the
    restarted node is back in the ring (the others see it up a few gossip rounds later)."""
    count_all = SimpleStatement("SELECT count(*) FROM ha.kv",
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
