"""The entity topics (new-bank, new-user, new-account): each message is validated and
added like `python -m fraud_detection add`; a rejected one goes to the dead letters
(topic and table) with its reason.

Topics are read in one consumer group. A user can arrive before its bank (topics are
fetched independently), so a message naming an unknown bank or user waits, retried,
for up to `reference_wait` seconds before it is rejected; offsets are committed only
below the oldest message still waiting, so a restart loses nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fraud_detection.config import Settings
from fraud_detection.records import DeadLetter, raw_text, validate_entity
from fraud_detection.store.entities import EntityRejected, UnknownReference, add_entity
from fraud_detection.store.keyspace import Store
from fraud_detection.store.tables import STATEMENTS, dead_letter_row

KIND_ORDER = ("bank", "user", "account")
GROUP_ID = "fraud-detection-entities"


def entity_topics(settings: Settings) -> dict[str, str]:
    return {settings.topic_new_bank: "bank", settings.topic_new_user: "user",
            settings.topic_new_account: "account"}


@dataclass
class ConsumeReport:
    added: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KIND_ORDER, 0))
    rejected: int = 0

    def summary(self) -> str:
        added = ", ".join(f"{n} {kind}s" for kind, n in self.added.items())
        return f"added {added}; rejected {self.rejected} (to the dead letters)"


@dataclass
class _Waiting:
    message: Any
    kind: str
    first_seen: float


def consume_entity_topics(settings: Settings, store: Store, *, idle_seconds: float | None = None,
                          reference_wait: float = 10.0,
                          progress: Callable[[str], None] = lambda line: None) -> ConsumeReport:
    """Consumes until idle for idle_seconds (None: forever)."""
    from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

    topics = entity_topics(settings)
    consumer = KafkaConsumer(*topics, bootstrap_servers=settings.kafka_bootstrap,
                             group_id=GROUP_ID, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    report = ConsumeReport()
    waiting: list[_Waiting] = []
    polled_to: dict[Any, int] = {}  # partition -> next offset
    last_message = time.monotonic()

    def dead_letter(message: Any, errors: list[str]) -> None:
        letter = DeadLetter(f"kafka:{message.topic}", tuple(errors), raw_text(message.value))
        payload = json.dumps(letter.to_dict()).encode()
        producer.send(settings.topic_dead_letters, key=message.key, value=payload).get(30)
        received = dt.datetime.fromtimestamp(message.timestamp / 1000, dt.UTC)
        table, values = dead_letter_row(letter, received)
        store.execute(STATEMENTS[table], values)
        report.rejected += 1

    def handle(item: _Waiting) -> bool:
        """True when the message is settled (added or dead-lettered)."""
        try:
            raw = json.loads(item.message.value)
        except (ValueError, TypeError) as exc:
            dead_letter(item.message, [f"not JSON: {exc}"])
            return True
        entity, errors = validate_entity(item.kind, raw)
        if entity is None:
            dead_letter(item.message, errors)
            return True
        try:
            add_entity(store, entity)
        except EntityRejected as exc:
            if isinstance(exc, UnknownReference) and \
                    time.monotonic() - item.first_seen < reference_wait:
                return False
            dead_letter(item.message, [str(exc)])
            return True
        report.added[item.kind] += 1
        return True

    try:
        while True:
            batches = consumer.poll(timeout_ms=500, max_records=500)
            now = time.monotonic()
            fresh = [_Waiting(m, topics[tp.topic], now)
                     for tp, messages in batches.items() for m in messages]
            for tp, messages in batches.items():
                polled_to[tp] = messages[-1].offset + 1
            if fresh:
                last_message = now
            # Banks before users before accounts, and older waiting ones first.
            ordered = sorted(waiting + fresh, key=lambda w: KIND_ORDER.index(w.kind))
            waiting = [item for item in ordered if not handle(item)]
            commits = {}
            for tp, offset in polled_to.items():
                held = [w.message.offset for w in waiting
                        if TopicPartition(w.message.topic, w.message.partition) == tp]
                commits[tp] = OffsetAndMetadata(min([offset, *held]), "", -1)
            if commits:
                consumer.commit(commits)
            if fresh:
                progress(report.summary())
            if idle_seconds is not None and not waiting and \
                    time.monotonic() - last_message >= idle_seconds:
                return report
    finally:
        producer.close()
        consumer.close()


def publish_entity(settings: Settings, kind: str, entity: dict[str, Any]) -> None:
    """Sends one entity to its topic, keyed by its id (used by tools and tests)."""
    from kafka import KafkaProducer

    topic = {v: k for k, v in entity_topics(settings).items()}[kind]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        key = str(entity.get(f"{kind}_id", "")).encode()
        producer.send(topic, key=key, value=json.dumps(entity, default=str).encode()).get(30)
    finally:
        producer.close()
