"""The streaming pipeline as a live process on Prism, fed by a streamer: killed mid-stream
and started again, and Cassandra restarted under it, every transaction is still stored
exactly once with the scores the batch path gives, and balances are those of replaying
the transactions in order."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from fraud_detection import stack as local_stack
from fraud_detection.beam_pipelines import stream
from fraud_detection.io.kafka import ensure_topics
from fraud_detection.store import queries
from fraud_detection.store.keyspace import connect
from fraud_detection.store.rules import save_rules
from fraud_detection.store.streamer_state import PAUSED, StreamerState
from fraud_detection.streamers.config import streamer_config
from fraud_detection.streamers.runner import Streamer
from fraud_detection.transforms.rules import load_rules
from tests.integration.streaming import (
    expected_outcomes,
    kill_stream,
    settled_count,
    start_stream,
    stored_outcomes,
    wait_for_rows,
)
from tests.integration.worlds import write_entities

pytestmark = pytest.mark.integration

TIMEOUT = 900  # generous: a loaded 2-core machine starts a pipeline in tens of seconds


def test_killed_pipeline_and_restarted_cassandra_lose_and_repeat_nothing(
        stack, small_world, keyspace_for, tmp_path) -> None:
    run = uuid.uuid4().hex[:8]
    settings = keyspace_for(
        "test_stream_live", kafka_bootstrap=stack.kafka_bootstrap,
        redis_port=stack.ports.redis, topic_transactions=f"tx-{run}",
        topic_alerts=f"alerts-{run}", topic_dead_letters=f"dead-{run}",
        topic_labels=f"labels-{run}")
    store = connect(settings)
    save_rules(store, load_rules())
    write_entities(settings, small_world)
    ensure_topics(settings, {settings.topic_transactions: stream.TRANSACTION_PARTITIONS})
    expected = expected_outcomes(small_world.root, settings.fraud_threshold)
    log = tmp_path / "stream.log"

    name = f"live-{run}"
    config = streamer_config({"name": name, "source": "parquet", "path": str(small_world.root),
                              "topic": settings.topic_transactions, "rate": 200}, "")
    state = StreamerState(settings)
    state.register(name, config.to_dict())
    streamer = threading.Thread(target=Streamer(config, settings, state).run, daemon=True)
    pipeline = start_stream(settings, log)
    total = len(expected)
    try:
        # The streamer is paused at set rows, so each fault strikes with rows still to
        # come, however long the pipeline takes to start on a loaded machine.
        streamer.start()
        send_until(state, name, total * 2 // 3)
        wait_for_rows(store, total // 4, TIMEOUT, pipeline, log)
        kill_stream(pipeline)  # a crash: no drain, nothing flushed
        # Writes the killed process had sent still land on the server: wait them out, so
        # that the rows waited for next are the restarted pipeline's own. A node stopped
        # while it still starts would only test that it refuses to start without Cassandra.
        before_restart = settled_count(store)

        pipeline = start_stream(settings, log)
        send_until(state, name, total * 5 // 6)
        wait_for_rows(store, before_restart + 20, TIMEOUT, pipeline, log)
        assert local_stack.stop_node(1)
        state.command(name, "run")  # the last rows arrive while the node is down
        time.sleep(5)  # writes fail meanwhile and are retried
        local_stack.start_node(1)

        wait_for_rows(store, total, TIMEOUT, pipeline, log)
        streamer.join(60)
        time.sleep(5)  # anything extra would have landed by now
        assert stored_outcomes(store) == expected  # each once, scored as in batch
        for account_id, cents in _replayed_balances(small_world).items():
            assert queries.balance(store, account_id).balance_cents == cents, account_id
    finally:
        kill_stream(pipeline)
        state.forget(name)
        store.close()


def send_until(state: StreamerState, name: str, rows: int) -> None:
    """Lets the streamer run until it has sent `rows` (a report's chunk more at most),
    then pauses it."""
    state.command(name, "run")
    deadline = time.monotonic() + TIMEOUT
    while state.get(name).sent < rows:
        assert time.monotonic() < deadline, f"the streamer did not reach row {rows}"
        time.sleep(0.05)
    state.command(name, "pause")
    while state.get(name).status != PAUSED:
        assert time.monotonic() < deadline, "the streamer did not pause"
        time.sleep(0.05)


def _replayed_balances(world) -> dict[str, int]:
    last: dict[str, int] = {}
    for scored in sorted(world.scored, key=lambda s: s.transaction.event_time):
        tx = scored.transaction
        if tx.balance_after_cents is not None:
            last[tx.account_id] = tx.balance_after_cents
    return last
