"""Kafka for the pipelines and the streamers (kafka-python).

Messages are JSON objects keyed by account id, so one account's events stay in one
partition and in order; the message timestamp is the event time.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam import Create, DoFn, ParDo, PTransform
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

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


# --- Reading: a splittable DoFn over topic partitions --------------------------------

UNBOUNDED = sys.maxsize
EARLIEST, COMMITTED = "earliest", "committed"


@dataclass(frozen=True)
class KafkaMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int

    @property
    def position(self) -> str:
        return f"kafka:{self.topic}/{self.partition}/{self.offset}"


class _OffsetTracker(OffsetRestrictionTracker):
    def is_bounded(self) -> bool:
        return self.current_restriction().stop != UNBOUNDED

    def try_split(self, fraction_of_remainder):
        # Halving [n, maxsize) would hand offsets that do not exist yet to a second
        # reader of the same partition; an unbounded read only checkpoints.
        if not self.is_bounded() and fraction_of_remainder > 0:
            return None
        return super().try_split(fraction_of_remainder)


def _consumer(bootstrap: str, group_id: str | None):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         max_poll_records=1_000)


class _PartitionRestrictions(RestrictionProvider):
    """Offsets [start, end) of a partition: start at the earliest retained offset or the
    group's committed one; end at the partition's end now (bounded) or never."""

    def __init__(self, bootstrap: str, group_id: str, start_from: str, bounded: bool) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.start_from = start_from
        self.bounded = bounded

    def initial_restriction(self, element: tuple[str, int]) -> OffsetRange:
        from kafka import TopicPartition

        tp = TopicPartition(*element)
        consumer = _consumer(self.bootstrap, self.group_id)
        try:
            start = consumer.beginning_offsets([tp])[tp]
            if self.start_from == COMMITTED:
                committed = consumer.committed(tp)
                start = max(start, committed if committed is not None else start)
            end = consumer.end_offsets([tp])[tp] if self.bounded else UNBOUNDED
        finally:
            consumer.close()
        return OffsetRange(start, max(start, end))

    def create_tracker(self, restriction: OffsetRange) -> _OffsetTracker:
        return _OffsetTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        return 1 if restriction.stop == UNBOUNDED else restriction.size()

    def truncate(self, element, restriction):
        return None  # on drain, stop reading


# The finalizer first: Beam passes it by position, the tracker and estimator by name.
_PROCESS_PARAMS = dict(
    tracker=DoFn.RestrictionParam(),
    watermark=DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    finalizer=DoFn.BundleFinalizerParam)


class _ReadPartitionFn(DoFn, RestrictionProvider):
    """Reads one partition's claimed offsets. The watermark follows the message timestamps
    (event times); a partition idle for idle_seconds moves its watermark up to the newest
    message of the whole topic, so an idle partition does not hold back the others (an
    older message after that is late: still scored, and marked late). Offsets are
    committed to the group when the runner finalizes the bundle that read them."""

    def __init__(self, restrictions: _PartitionRestrictions, idle_seconds: float,
                 poll_seconds: float) -> None:
        self.restrictions = restrictions
        self.idle_seconds = idle_seconds
        self.poll_seconds = poll_seconds

    # The restrictions, as this DoFn's own RestrictionProvider.
    def initial_restriction(self, element):
        return self.restrictions.initial_restriction(element)

    def create_tracker(self, restriction):
        return self.restrictions.create_tracker(restriction)

    def restriction_size(self, element, restriction):
        return self.restrictions.restriction_size(element, restriction)

    def truncate(self, element, restriction):
        return self.restrictions.truncate(element, restriction)

    def setup(self) -> None:
        self.consumer = _consumer(self.restrictions.bootstrap, self.restrictions.group_id)
        self.last_message_at: dict[tuple[str, int], float] = {}

    def teardown(self) -> None:
        self.consumer.close()

    def _commit(self, topic: str, partition: int, offset: int, started: int) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        if offset <= started:
            return

        consumer = _consumer(self.restrictions.bootstrap, self.restrictions.group_id)
        try:
            consumer.commit({TopicPartition(topic, partition):
                             OffsetAndMetadata(offset, "", -1)})
        finally:
            consumer.close()

    def _newest_elsewhere(self, topic: str, partition: int, position: int
                          ) -> Timestamp | None:
        """The newest message timestamp in the topic's other partitions, or None when
        this partition has messages past `position` (then it is not idle)."""
        from kafka import TopicPartition

        partitions = [TopicPartition(topic, p)
                      for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        ends = self.consumer.end_offsets(partitions)
        if ends.get(TopicPartition(topic, partition), 0) > position:
            return None
        newest = None
        for tp in partitions:
            if tp.partition == partition or ends[tp] == 0:
                continue
            self.consumer.assign([tp])
            self.consumer.seek(tp, ends[tp] - 1)
            for record in self.consumer.poll(timeout_ms=1_000).get(tp, []):
                moment = Timestamp(micros=record.timestamp * 1_000)
                newest = moment if newest is None else max(newest, moment)
        return newest

    def process(self, element: tuple[str, int], finalizer=_PROCESS_PARAMS["finalizer"],
                tracker=_PROCESS_PARAMS["tracker"], watermark=_PROCESS_PARAMS["watermark"]):
        yield from self._read(element, tracker, watermark, finalizer)

    def _read(self, element, tracker, watermark, finalizer):
        from kafka import TopicPartition

        topic, partition = element
        tp = TopicPartition(topic, partition)
        restriction = tracker.current_restriction()
        position = restriction.start
        if position >= restriction.stop:
            return
        # Registered in every bundle, even one that reads nothing: Prism asks every
        # bundle of this stage to finalize, and the SDK fails one with no callback.
        read_to = [position]
        finalizer.register(lambda: self._commit(topic, partition, read_to[0], position))
        self.consumer.assign([tp])
        self.consumer.seek(tp, position)
        started = time.monotonic()
        while time.monotonic() - started < self.poll_seconds:
            records = self.consumer.poll(timeout_ms=200).get(tp, [])
            for record in records:
                if not tracker.try_claim(record.offset):
                    return
                moment = Timestamp(micros=record.timestamp * 1_000)
                current = watermark.current_watermark()
                if current is None or moment > current:
                    watermark.set_watermark(moment)
                position = record.offset + 1
                yield TimestampedValue(KafkaMessage(topic, partition, record.offset,
                                                    record.key, record.value,
                                                    record.timestamp), moment)
            if records:
                self.last_message_at[element] = time.monotonic()
                read_to[0] = position
            if position >= restriction.stop:
                tracker.try_claim(restriction.stop)  # the end: done
                return
            if not records:
                break
        idle_since = self.last_message_at.setdefault(element, time.monotonic())
        if restriction.stop == UNBOUNDED and time.monotonic() - idle_since >= self.idle_seconds:
            newest = self._newest_elsewhere(topic, partition, position)
            current = watermark.current_watermark()
            if newest is not None and (current is None or newest > current):
                watermark.set_watermark(newest)
        tracker.defer_remainder(Duration(seconds=0.2))


class _ReadPartitionUnboundedFn(_ReadPartitionFn):
    @DoFn.unbounded_per_element()
    def process(self, element: tuple[str, int], finalizer=_PROCESS_PARAMS["finalizer"],
                tracker=_PROCESS_PARAMS["tracker"], watermark=_PROCESS_PARAMS["watermark"]):
        yield from self._read(element, tracker, watermark, finalizer)


class ReadFromKafka(PTransform):
    """Topics -> KafkaMessage, each at its message timestamp (our producers stamp the event
    time). bounded: read to the end offsets as of the start, then finish (catch-up runs
    and tests); otherwise run until the pipeline is stopped."""

    def __init__(self, bootstrap: str, topics: Sequence[str], group_id: str, *,
                 bounded: bool = False, start_from: str = EARLIEST,
                 idle_seconds: float = 2.0, poll_seconds: float = 1.0) -> None:
        super().__init__()
        if start_from not in (EARLIEST, COMMITTED):
            raise ValueError(f"start_from must be {EARLIEST} or {COMMITTED}: {start_from!r}")
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.group_id = group_id
        self.bounded = bounded
        self.start_from = start_from
        self.idle_seconds = idle_seconds
        self.poll_seconds = poll_seconds

    def expand(self, pbegin):
        partitions = topic_partitions(self.bootstrap, self.topics)
        restrictions = _PartitionRestrictions(self.bootstrap, self.group_id, self.start_from,
                                              self.bounded)
        fn_class = _ReadPartitionFn if self.bounded else _ReadPartitionUnboundedFn
        return (pbegin
                | "Partitions" >> Create(partitions)
                | "Read" >> ParDo(fn_class(restrictions, self.idle_seconds,
                                           self.poll_seconds)))


def topic_partitions(bootstrap: str, topics: Sequence[str],
                     wait_seconds: float = 30.0) -> list[tuple[str, int]]:
    """Every (topic, partition); a topic that does not exist yet is created by the
    broker's auto-creation when first asked for, so wait for it a while."""
    consumer = _consumer(bootstrap, None)
    try:
        found: list[tuple[str, int]] = []
        for topic in topics:
            deadline = time.monotonic() + wait_seconds
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:
                consumer.topics()  # refreshes metadata; auto-creates where allowed
                time.sleep(0.2)
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise ValueError(f"Kafka topic {topic!r} does not exist at {bootstrap}")
            found.extend((topic, p) for p in sorted(partitions))
        return found
    finally:
        consumer.close()
