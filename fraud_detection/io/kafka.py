"""Kafka for the pipelines and the streamers (kafka-python).

Messages are JSON objects keyed by account id, so one account's events stay in one
partition and in order; the message timestamp is the event time.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from fraud_detection.config import Settings


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_record(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, default=_json_value, separators=(",", ":")).encode()


def event_millis(record: Mapping[str, Any]) -> int | None:
    """The record's event time as Kafka's timestamp, when it has a usable one."""
    value = record.get("event_time")
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return int(value.timestamp() * 1000)
    return None


class KafkaSender:
    """A producer that waits for the broker (acks=all) and retries on its own; `flush`
    returns once every message sent before it is acknowledged or raises."""

    def __init__(self, settings: Settings, **config: Any) -> None:
        from kafka import KafkaProducer

        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
            retries=10, max_in_flight_requests_per_connection=1, **config)
        self.pending: list[Any] = []

    def send(self, topic: str, key: str | None, value: bytes,
             timestamp_ms: int | None = None) -> None:
        self.pending.append(self.producer.send(
            topic, key=key.encode() if key is not None else None, value=value,
            timestamp_ms=timestamp_ms))

    def send_record(self, topic: str, record: Mapping[str, Any],
                    key_field: str = "account_id") -> None:
        key = record.get(key_field)
        self.send(topic, None if key is None else str(key), encode_record(record),
                  event_millis(record))

    def flush(self, timeout: float = 30.0) -> None:
        self.producer.flush(timeout)
        pending, self.pending = self.pending, []
        for future in pending:
            future.get(timeout)  # raises the broker's error for a message that failed

    def close(self) -> None:
        self.producer.close()
