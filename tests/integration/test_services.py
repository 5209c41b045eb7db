import itertools
import time
import uuid

import pytest
import redis
from cassandra.cluster import Cluster
from kafka import KafkaConsumer, KafkaProducer

from fraud_detection.stack import StackInfo, status, stop, up

pytestmark = pytest.mark.integration


def _pid(stack: StackInfo, name: str) -> int | None:
    return next(s.pid for s in status(stack.state_dir) if s.name == name)


def test_kafka_messages_survive_a_broker_restart(stack: StackInfo) -> None:
    topic = f"stack-test-{uuid.uuid4().hex[:8]}"
    sent = [f"message {i}".encode() for i in range(3)]
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    try:
        for value in sent:
            producer.send(topic, value).get(timeout=30)
    finally:
        producer.close()

    before = _pid(stack, "kafka")
    assert stop("kafka", stack.state_dir)
    up(services=("kafka",), ports=stack.ports, state_dir=stack.state_dir)
    assert _pid(stack, "kafka") not in (None, before)

    consumer = KafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=30_000)
    try:
        received = [message.value for message in itertools.islice(consumer, len(sent))]
    finally:
        consumer.close()
    assert received == sent


def test_cassandra_returns_the_row_it_stored(stack: StackInfo) -> None:
    cluster = Cluster(stack.cassandra_hosts, port=stack.cassandra_port)
    try:
        session = cluster.connect()
        version = session.execute("SELECT release_version FROM system.local").one()
        assert version.release_version == "5.0.8"
        session.execute("CREATE KEYSPACE IF NOT EXISTS stack_test WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.execute("CREATE TABLE IF NOT EXISTS stack_test.kv (k text PRIMARY KEY, v text)")
        key = uuid.uuid4().hex
        session.execute("INSERT INTO stack_test.kv (k, v) VALUES (%s, %s)", (key, "stored"))
        row = session.execute("SELECT v FROM stack_test.kv WHERE k = %s", (key,)).one()
        assert row is not None and row.v == "stored"
    finally:
        cluster.shutdown()


def test_redis_set_then_get(stack: StackInfo) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        key = f"stack-test-{uuid.uuid4().hex}"
        client.set(key, "value", ex=60)
        assert client.get(key) == b"value"
        assert client.info("server")["process_id"] == _pid(stack, "redis")  # ours answered
    finally:
        client.close()


def test_up_again_changes_nothing(stack: StackInfo) -> None:
    before = {s.name: s.pid for s in status(stack.state_dir)}
    began = time.monotonic()
    up(ports=stack.ports, state_dir=stack.state_dir)
    assert time.monotonic() - began < 15
    assert {s.name: s.pid for s in status(stack.state_dir)} == before
    assert None not in before.values()
