"""Streamers against the real Kafka and Redis: pause, resume, interrupt and a restart
that carries on from the row after the last one sent."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer

from fraud_detection.config import load_settings
from fraud_detection.io.parquet import read_transactions
from fraud_detection.store.streamer_state import PAUSED, STOPPED, StreamerState
from fraud_detection.streamers.config import streamer_config
from fraud_detection.streamers.runner import Streamer

pytestmark = pytest.mark.integration


def _topic_ids(settings, topic: str) -> dict[str, list[str]]:
    """Per account, the transaction ids in the topic in offset order (the topic has
    several partitions, keyed by account: order holds within an account)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    ids: dict[str, list[str]] = {}
    for m in sorted(consumer, key=lambda m: (m.partition, m.offset)):
        record = json.loads(m.value)
        ids.setdefault(record["account_id"], []).append(record["transaction_id"])
    consumer.close()
    return ids


def _by_account(rows: list[dict]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for row in rows:
        ids.setdefault(row["account_id"], []).append(row["transaction_id"])
    return ids


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _start(config, settings) -> threading.Thread:
    thread = threading.Thread(target=Streamer(config, settings).run, daemon=True)
    thread.start()
    return thread


def test_streamer_pauses_stops_and_resumes_after_the_last_row_sent(stack, small_world) -> None:
    run = uuid.uuid4().hex[:8]
    settings = load_settings({"kafka_bootstrap": stack.kafka_bootstrap,
                              "redis_port": stack.ports.redis})
    topic, name = f"streamed-{run}", f"test-{run}"
    config = streamer_config({"name": name, "source": "parquet", "path": str(small_world.root),
                              "topic": topic, "rate": 1500}, topic)
    table = read_transactions(small_world.root)
    expected = table.sort_by([("event_time", "ascending"),
                              ("transaction_id", "ascending")]).to_pylist()
    state = StreamerState(settings)
    try:
        state.register(name, config.to_dict())
        thread = _start(config, settings)
        _wait_for(lambda: state.get(name).last_row >= 500)

        state.command(name, "pause")
        _wait_for(lambda: state.get(name).status == PAUSED)
        held = state.get(name).last_row
        time.sleep(0.5)
        assert state.get(name).last_row == held  # paused means nothing is sent
        state.command(name, "run")
        _wait_for(lambda: state.get(name).last_row >= held + 500)

        state.command(name, "stop")
        thread.join(30)
        stopped = state.get(name)
        assert stopped.status == STOPPED and not thread.is_alive()
        sent = _topic_ids(settings, topic)
        # Redis names the last row the broker has: exactly what the topic holds.
        assert sent == _by_account(expected[:stopped.last_row + 1])
        assert stopped.sent == sum(map(len, sent.values())) < len(expected)

        state.register(name, config.to_dict())  # a restart: same source, progress kept
        assert state.get(name).next_row == stopped.last_row + 1
        _start(config, settings).join(120)
        assert state.get(name).status == "finished"
        # No gap, no repeat, each account's transactions in order.
        assert _topic_ids(settings, topic) == _by_account(expected)
        assert state.get(name).last_row == len(expected) - 1
    finally:
        state.forget(name)
        state.close()


def test_streamer_config_errors_are_one_line(tmp_path) -> None:
    from fraud_detection.errors import UsageError

    with pytest.raises(UsageError, match="rate must be"):
        streamer_config({"name": "x", "source": "generator", "rate": 0}, "t")
    with pytest.raises(UsageError, match="no such dataset folder"):
        streamer_config({"name": "x", "source": "parquet", "path": str(tmp_path / "nope"),
                         "rate": 5}, "t")
