"""No silent loss and true progress: replayed history older than any default retention
stays in its topic until stored, and the group's offsets count only stored messages."""

from __future__ import annotations

import io
import time
import uuid
from contextlib import redirect_stdout

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from fraud_detection import cli
from fraud_detection.beam_pipelines import stream
from fraud_detection.config import load_settings
from fraud_detection.io.kafka import (
    CommitStored,
    KafkaSender,
    consumer_lag,
    ensure_topics,
    topic_retention,
)
from fraud_detection.progress import read_progress
from fraud_detection.stack.runners import prism_args
from fraud_detection.store.keyspace import connect
from tests.integration.worlds import replay_world, stream_settings, write_entities

pytestmark = pytest.mark.integration


def test_old_history_is_kept_until_stored_and_lag_counts_what_is_not_stored(
        stack, small_world, keyspace_for) -> None:
    run = uuid.uuid4().hex[:8]
    settings = stream_settings(keyspace_for, stack, "test_progress", run)
    store = connect(settings)
    write_entities(settings, small_world)
    sent = len(small_world.scored)
    oldest = min(s.transaction.event_time for s in small_world.scored)
    assert time.time() - oldest.timestamp() > 365 * 86400  # older than a year

    # The streamer creates the topic itself, with unlimited retention by time.
    replay_world(settings, small_world, f"old-{run}")
    assert topic_retention(settings, settings.topic_transactions)["retention.ms"] == str(
        settings.kafka_retention_ms)

    # The test broker enforces retention every 5 s; ten days of event time rolled the
    # log into several segments, which the broker's 7-day default would have deleted.
    time.sleep(12)
    before = read_progress(settings, stream.GROUP_ID)
    assert [p.start for p in before.partitions] == [0] * len(before.partitions)
    assert (before.sent, before.stored, before.lag, before.lost) == (sent, 0, sent, 0)

    # While the pipeline is not running, the CLI shows the whole backlog as lag.
    shown = io.StringIO()
    flags = ["--kafka-bootstrap", settings.kafka_bootstrap, "--redis-port",
             str(settings.redis_port), "--topic-transactions", settings.topic_transactions]
    with redirect_stdout(shown):
        assert cli.main(["streamers", "status", *flags]) == 0
    assert f"lag {sent:,}" in shown.getvalue(), shown.getvalue()

    stream.run(["--bounded", *prism_args()], settings)

    after = read_progress(settings, stream.GROUP_ID)
    assert (after.stored, after.lag, after.lost) == (sent, 0, 0)
    assert all(p.committed == p.end for p in after.partitions)
    stored = {r.transaction_id for r in store.execute(
        "SELECT transaction_id FROM transactions", fetch_size=5000)}
    assert stored == {s.transaction.transaction_id for s in small_world.scored}
    store.close()


def _ten_message_topic(stack, name: str):
    """Settings (Kafka and Redis only: no keyspace) for a fresh one-partition topic holding
    ten messages, and a fresh consumer group."""
    run = uuid.uuid4().hex[:8]
    settings = load_settings({"kafka_bootstrap": stack.kafka_bootstrap,
                              "redis_port": stack.ports.redis,
                              "topic_transactions": f"{name}-{run}"})
    ensure_topics(settings, {settings.topic_transactions: 1})
    sender = KafkaSender(settings)
    for i in range(10):
        sender.send(settings.topic_transactions, "a", b"{}", 1_700_000_000_000 + i)
    sender.flush()
    sender.close()
    return settings, f"group-{run}"


def test_committed_offset_stops_at_a_message_not_yet_stored(stack) -> None:
    settings, group = _ten_message_topic(stack, "commit")
    topic = settings.topic_transactions

    def commit(*batches: tuple[int, ...]) -> int | None:
        with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
            _ = (p
                 | beam.Create([tuple(f"kafka:{topic}/0/{o}" for o in b) for b in batches])
                 | CommitStored(settings.kafka_bootstrap, group))
        [partition] = consumer_lag(settings, group, topic)
        return partition.committed

    assert commit((0, 1), (3, 4, 5)) == 2  # offset 2 is not stored: nothing past it counts
    assert commit((2,), (6,)) == 3  # a new run starts from the committed offset
    assert commit((3, 4, 5, 7, 8, 9, 6)) == 10


def test_messages_deleted_before_they_were_stored_are_reported(stack, capsys) -> None:
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    from fraud_detection.progress import ProgressReporter

    settings, group = _ten_message_topic(stack, "lost")
    topic = settings.topic_transactions
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = (p | beam.Create([tuple(f"kafka:{topic}/0/{o}" for o in range(3))])
             | CommitStored(settings.kafka_bootstrap, group))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.delete_records({TopicPartition(topic, 0): 6})  # as retention would
    admin.close()

    reporter = ProgressReporter(settings, group, every=0.2)
    reporter.start()
    time.sleep(2)
    reporter.stop()
    reporter.join(10)
    out, err = capsys.readouterr()
    assert "stream: progress: 3 of 10 messages stored, lag 4," in out
    warnings = [line for line in err.splitlines() if "deleted" in line]
    assert warnings == [f"stream: warning: topic {topic}: the broker deleted 3 messages before "
                        "they were stored (log start past the committed offset); check the "
                        "topic's retention"]
    progress = read_progress(settings, group)
    assert (progress.stored, progress.lost, progress.lag) == (3, 3, 4)
