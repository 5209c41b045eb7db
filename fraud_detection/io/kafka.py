"""Kafka for the pipelines and the streamers (kafka-python).

Messages are JSON objects keyed by account id, so one account's events stay in one
partition and in order; the message timestamp is the event time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam import Create, DoFn, FlatMap, ParDo, PTransform
from apache_beam.coders import PickleCoder
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
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


# --- Reading: a splittable DoFn over a topic's partitions -----------------------------
#
# One restriction holds every partition of a topic, so one watermark covers them all:
# Prism takes a stage's watermark from the residuals of its latest bundle, so with one
# restriction per partition a partition that had read ahead let the watermark pass
# messages still unread in another, and those were dropped as late.

# Partitions of the transactions topic: it is keyed by account, so this bounds how many
# readers one topic can feed.
TRANSACTION_PARTITIONS = 4

UNBOUNDED = sys.maxsize
EARLIEST, COMMITTED = "earliest", "committed"


QUIET_ADVANCE_MS = 1_000


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


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    stop: int  # UNBOUNDED: read until the pipeline stops
    newest_ms: int = -1  # newest message timestamp read before start


@dataclass(frozen=True)
class TopicRestriction:
    ranges: tuple[PartitionRange, ...]

    def is_bounded(self) -> bool:
        return all(r.stop != UNBOUNDED for r in self.ranges)

    def remaining(self) -> int:
        return sum(r.stop - r.start for r in self.ranges if r.stop != UNBOUNDED)


END = -1  # try_claim((partition, END, 0)): the partition has nothing more before its stop


class TopicTracker(RestrictionTracker):
    """Claims (partition, offset, timestamp_ms). It only checkpoints: the remainder of
    every partition goes to the residual; it never halves a partition's offsets."""

    def __init__(self, restriction: TopicRestriction) -> None:
        self.restriction = restriction
        self.next = {r.partition: r.start for r in restriction.ranges}
        self.newest = {r.partition: r.newest_ms for r in restriction.ranges}
        self.stop = {r.partition: r.stop for r in restriction.ranges}
        self.checkpointed = False

    def current_restriction(self) -> TopicRestriction:
        return self.restriction

    def try_claim(self, position: tuple[int, int, int]) -> bool:
        partition, offset, timestamp_ms = position
        if self.checkpointed:
            return False
        if offset == END or offset >= self.stop[partition]:
            self.next[partition] = max(self.next[partition], self.stop[partition])
            return False
        if offset < self.next[partition]:
            raise ValueError(f"partition {partition}: offset {offset} claimed after "
                             f"{self.next[partition] - 1}")
        self.next[partition] = offset + 1
        self.newest[partition] = max(self.newest[partition], timestamp_ms)
        return True

    def try_split(self, fraction_of_remainder: float):
        if fraction_of_remainder > 0 or self.checkpointed:
            return None
        primary = TopicRestriction(tuple(
            PartitionRange(r.partition, r.start, self.next[r.partition], r.newest_ms)
            for r in self.restriction.ranges))
        residual = TopicRestriction(tuple(
            PartitionRange(r.partition, self.next[r.partition], r.stop,
                           self.newest[r.partition])
            for r in self.restriction.ranges))
        self.restriction, self.checkpointed = primary, True
        self.stop = {r.partition: r.stop for r in primary.ranges}
        if residual.is_bounded() and residual.remaining() == 0:
            return primary, None
        return primary, residual

    def check_done(self) -> None:
        for r in self.restriction.ranges:
            if self.next[r.partition] < r.stop:
                raise ValueError(f"partition {r.partition}: offsets {self.next[r.partition]} "
                                 f"to {r.stop} were not read")

    def current_progress(self) -> RestrictionProgress:
        done = sum(self.next[r.partition] - r.start for r in self.restriction.ranges)
        left = sum(r.stop - self.next[r.partition] for r in self.restriction.ranges
                   if r.stop != UNBOUNDED)
        return RestrictionProgress(completed=done, remaining=left or 1)

    def is_bounded(self) -> bool:
        return self.restriction.is_bounded()


def _consumer(bootstrap: str, group_id: str | None):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         max_poll_records=2_000, fetch_max_wait_ms=50,
                         fetch_min_bytes=1 << 20)


# The finalizer first: Beam passes it by position, the tracker and estimator by name.
_PROCESS_PARAMS = dict(
    finalizer=DoFn.BundleFinalizerParam,
    tracker=DoFn.RestrictionParam(),
    watermark=DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()))


class _ReadTopicFn(DoFn, RestrictionProvider):
    """Reads a topic. The watermark is the oldest among the partitions' newest message
    timestamps; a partition read to its end and quiet for idle_seconds stops holding it
    back (a message older than the watermark arriving there later is late: still scored,
    and marked late). Offsets go to the consumer group when the runner finalizes the
    bundle that read them, for lag reporting and `start_from=committed`."""

    def __init__(self, read: KafkaRead) -> None:
        self.read = read

    def initial_restriction(self, topic: str) -> TopicRestriction:
        from kafka import TopicPartition

        wait_for_topics(self.read.bootstrap, [topic])
        consumer = _consumer(self.read.bootstrap, self.read.group_id)
        try:
            tps = [TopicPartition(topic, p)
                   for p in sorted(consumer.partitions_for_topic(topic) or ())]
            begins, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
            ranges = []
            for tp in tps:
                start = begins[tp]
                if self.read.start_from == COMMITTED:
                    start = max(start, consumer.committed(tp) or start)
                stop = ends[tp] if self.read.bounded else UNBOUNDED
                ranges.append(PartitionRange(tp.partition, start, max(start, stop)))
        finally:
            consumer.close()
        return TopicRestriction(tuple(ranges))

    def create_tracker(self, restriction: TopicRestriction) -> TopicTracker:
        return TopicTracker(restriction)

    def restriction_size(self, topic, restriction: TopicRestriction) -> int:
        return max(1, restriction.remaining())

    def truncate(self, topic, restriction):
        return None  # on drain, stop reading

    def setup(self) -> None:
        self.consumer = _consumer(self.read.bootstrap, self.read.group_id)
        self.quiet_since: dict[tuple[str, int], float] = {}
        # (topic, partition) -> the offset the consumer continues from, as the last
        # bundle left it: a bundle resuming there needs no seek.
        self.left_at: dict[tuple[str, int], int] = {}

    def teardown(self) -> None:
        self.consumer.close()

    def _commit(self, topic: str, positions: dict[int, int], starts: dict[int, int]) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        if not self.read.commit_read:
            return  # the group's offsets follow what was stored (CommitStored)
        moved = {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                 for p, o in positions.items() if o > starts[p]}
        if moved:
            self.consumer.commit(moved)

    def _watermark(self, topic: str, tracker_newest: dict[int, int], caught_up: set[int],
                   now: float) -> int | None:
        holding, idle = [], []
        for partition, newest in tracker_newest.items():
            key = (topic, partition)
            if partition in caught_up:
                quiet = now - self.quiet_since.setdefault(key, now) >= self.read.idle_seconds
            else:
                self.quiet_since.pop(key, None)
                quiet = False
            (idle if quiet else holding).append(newest)
        if holding:
            return None if min(holding) < 0 else min(holding)
        known = [n for n in idle if n >= 0]
        if self.read.idle_follows_clock:
            # A quiet topic of live events: nothing much older will come. A second ahead of
            # the clock, as a quiet topic is ahead of its newest message: Prism learns the
            # watermark only when a read bundle ends, so the clock itself held every firing
            # until this reader's next bundle. What comes meanwhile is behind the
            # watermark, and the next firing takes it.
            return max([*known, int(time.time() * 1000) + QUIET_ADVANCE_MS])
        # Quiet everywhere: past the newest message too, or a consumer that waits for
        # the watermark to pass a moment (detection's cells) would hold the last ones.
        return max(known) + QUIET_ADVANCE_MS if known else None

    def process(self, topic: str, finalizer=_PROCESS_PARAMS["finalizer"],
                tracker=_PROCESS_PARAMS["tracker"], watermark=_PROCESS_PARAMS["watermark"]):
        yield from self._read(topic, finalizer, tracker, watermark)

    def _read(self, topic: str, finalizer, tracker, watermark):
        from kafka import TopicPartition

        restriction: TopicRestriction = tracker.current_restriction()
        starts = {r.partition: r.start for r in restriction.ranges}
        stops = {r.partition: r.stop for r in restriction.ranges}
        newest = {r.partition: r.newest_ms for r in restriction.ranges}
        positions = dict(starts)
        # Registered in every bundle, even one that reads nothing: Prism asks every
        # bundle of this stage to finalize, and the SDK fails one with no callback.
        finalizer.register(lambda: self._commit(topic, positions, starts))
        tps = {p: TopicPartition(topic, p) for p in starts}
        reading = [p for p in starts if positions[p] < stops[p]]
        assigned = self.consumer.assignment()
        self.consumer.assign([tps[p] for p in reading])
        left_at, self.left_at = self.left_at, {}
        for p in reading:
            # A seek drops what the consumer has fetched ahead and validates the offset
            # with the leader again: only where it would not continue from here anyway.
            if tps[p] not in assigned or left_at.get((topic, p)) != positions[p]:
                self.consumer.seek(tps[p], positions[p])
        ends = time.monotonic() + self.read.poll_seconds
        while reading and (left := ends - time.monotonic()) > 0:
            # Never past the bundle's end: its messages wait for it.
            polled = self.consumer.poll(timeout_ms=max(1, int(left * 1000)))
            claimed: list[KafkaMessage] = []
            checkpointed = False
            for tp, records in polled.items():
                p = tp.partition
                for record in records:
                    if not tracker.try_claim((p, record.offset, record.timestamp)):
                        checkpointed = record.offset < stops[p]
                        break
                    positions[p] = record.offset + 1
                    newest[p] = max(newest[p], record.timestamp)
                    claimed.append(KafkaMessage(topic, p, record.offset, record.key,
                                                record.value, record.timestamp))
                if checkpointed:
                    break
            yield from self._emit(claimed)
            if checkpointed:
                return
            caught_up = set()
            for p in reading:
                at = self.consumer.position(tps[p])
                if at >= stops[p]:
                    tracker.try_claim((p, END, 0))  # bounded and read to its stop
                    caught_up.add(p)
                else:
                    high = self.consumer.highwater(tps[p])
                    if high is not None and at >= high:
                        caught_up.add(p)
            caught_up |= {p for p in starts if p not in reading}
            mark = self._watermark(topic, newest, caught_up, time.monotonic())
            if mark is not None:
                moment = Timestamp(micros=mark * 1_000)
                current = watermark.current_watermark()
                if current is None or moment > current:
                    watermark.set_watermark(moment)
            reading = [p for p in reading if positions[p] < stops[p]
                       and self.consumer.position(tps[p]) < stops[p]]
        if reading:
            self.left_at = {(topic, p): self.consumer.position(tps[p]) for p in reading}
            tracker.defer_remainder(Duration(seconds=0.1))

    def _emit(self, messages: list[KafkaMessage]):
        if not messages:
            return
        if self.read.batched:
            # One element a poll: Beam's per-element cost, paid in every stage after this
            # one, was most of the stream's CPU at 1,000 tx/s.
            earliest = min(m.timestamp_ms for m in messages)
            yield TimestampedValue(messages, Timestamp(micros=earliest * 1_000))
            return
        for m in messages:
            yield TimestampedValue(m, Timestamp(micros=m.timestamp_ms * 1_000))


class _ReadTopicUnboundedFn(_ReadTopicFn):
    @DoFn.unbounded_per_element()
    def process(self, topic: str, finalizer=_PROCESS_PARAMS["finalizer"],
                tracker=_PROCESS_PARAMS["tracker"], watermark=_PROCESS_PARAMS["watermark"]):
        yield from self._read(topic, finalizer, tracker, watermark)


@dataclass(frozen=True)
class KafkaRead:
    """How ReadFromKafka reads; the reading DoFn carries it to the workers."""

    bootstrap: str
    topics: tuple[str, ...]
    group_id: str
    bounded: bool
    start_from: str
    idle_seconds: float
    poll_seconds: float
    idle_follows_clock: bool
    commit_read: bool
    batched: bool = False


class ReadFromKafka(PTransform):
    """Topics -> KafkaMessage, each at its message timestamp (our producers stamp the event
    time). bounded: read to the end offsets as of the start, then finish (catch-up runs
    and tests); otherwise run until the pipeline is stopped. idle_follows_clock: when
    every partition is quiet the watermark follows the wall clock (live events stamped
    when they happen, such as analysts' labels), not just the newest message.
    commit_read: commit offsets to the group once read; False where the pipeline commits
    what it stored instead (CommitStored), so the group's lag is true. batched: each
    poll's messages as one list, at the earliest one's timestamp."""

    def __init__(self, bootstrap: str, topics: Sequence[str], group_id: str, *,
                 bounded: bool = False, start_from: str = EARLIEST,
                 idle_seconds: float = 2.0, poll_seconds: float = 0.5,
                 idle_follows_clock: bool = False, commit_read: bool = True,
                 batched: bool = False) -> None:
        super().__init__()
        if start_from not in (EARLIEST, COMMITTED):
            raise ValueError(f"start_from must be {EARLIEST} or {COMMITTED}: {start_from!r}")
        self.read = KafkaRead(bootstrap, tuple(topics), group_id, bounded, start_from,
                              idle_seconds, poll_seconds, idle_follows_clock, commit_read,
                              batched)

    def display_data(self) -> dict[str, Any]:
        read = self.read
        return {"bootstrap": read.bootstrap, "topics": ", ".join(read.topics),
                "group_id": read.group_id, "bounded": read.bounded,
                "start_from": read.start_from, "poll_seconds": read.poll_seconds,
                "batched": read.batched}

    def expand(self, pbegin):
        # Nothing here touches the network: a graph is built where the cluster may not be
        # reachable. Workers look the topics up (initial_restriction).
        reader = _ReadTopicFn if self.read.bounded else _ReadTopicUnboundedFn
        return (pbegin
                | "Topics" >> Create(list(self.read.topics))
                | "Read" >> ParDo(reader(self.read)))


def wait_for_topics(bootstrap: str, topics: Sequence[str], wait_seconds: float = 30.0) -> None:
    """Fails in one line when a topic does not exist (after the broker had time to
    auto-create it, where it does)."""
    consumer = _consumer(bootstrap, None)
    try:
        for topic in topics:
            deadline = time.monotonic() + wait_seconds
            while not consumer.partitions_for_topic(topic):
                if time.monotonic() > deadline:
                    raise ValueError(f"Kafka topic {topic!r} does not exist at {bootstrap}")
                consumer.topics()  # refreshes metadata; auto-creates where allowed
                time.sleep(0.2)
    finally:
        consumer.close()


class _WriteFn(DoFn):
    def __init__(self, settings: Settings, topic: str,
                 to_message: Callable[[Any], tuple[str | None, Mapping[str, Any]]]) -> None:
        self.settings = settings
        self.topic = topic
        self.to_message = to_message

    def setup(self) -> None:
        self.sender = KafkaSender(self.settings)

    def start_bundle(self) -> None:
        self.messages: list[tuple[str | None, bytes, int | None]] = []

    def process(self, element) -> None:
        key, record = self.to_message(element)
        self.messages.append((key, encode_record(record), event_millis(record)))

    def finish_bundle(self) -> None:
        # Sent together: each send that starts a producer batch wakes its I/O thread,
        # and on a busy worker every wake-up waits for the GIL again.
        for key, value, millis in self.messages:
            self.sender.send(self.topic, key, value, millis)
        self.messages = []
        # The bundle commits only once the broker has every message: at least once.
        self.sender.flush()

    def teardown(self) -> None:
        self.sender.close()


class WriteToKafka(PTransform):
    """Records -> JSON messages on a topic; to_message gives (key, JSON-able mapping)."""

    def __init__(self, settings: Settings, topic: str,
                 to_message: Callable[[Any], tuple[str | None, Mapping[str, Any]]]) -> None:
        super().__init__()
        self.settings = settings
        self.topic = topic
        self.to_message = to_message

    def display_data(self) -> dict[str, Any]:
        return {"bootstrap": self.settings.kafka_bootstrap, "topic": self.topic}

    def expand(self, records):
        return records | ParDo(_WriteFn(self.settings, self.topic, self.to_message))


def topic_config(settings: Settings) -> dict[str, str]:
    """What every project topic is created with. Retention is explicit: the broker's
    default (7 days by the newest record timestamp) would delete replayed history,
    whose timestamps are event times, before the pipeline read it."""
    return {"retention.ms": str(settings.kafka_retention_ms),
            "retention.bytes": str(settings.kafka_retention_bytes)}


def ensure_topics(settings: Settings, topics: Mapping[str, int]) -> None:
    """Creates missing topics with the given partition counts and topic_config; existing
    topics keep their partitions and get topic_config's retention if theirs differs."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = topic_config(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, partitions, 1, topic_configs=wanted)
                   for name, partitions in topics.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another made it first
                admin.create_topics(missing)
        present = [name for name in topics if name in existing]
        if present:
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in present])
            stale = [name for name, current in _topic_configs(described).items()
                     if any(current.get(k) != v for k, v in wanted.items())]
            if stale:
                admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                    configs=wanted) for name in stale])
    finally:
        admin.close()


def _topic_configs(described: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """describe_configs' answer -> {topic: {config name: value}}."""
    return {name: {key: entry["value"] for key, entry in entries.items()}
            for name, entries in described.get("topic", {}).items()}


def topic_retention(settings: Settings, topic: str) -> dict[str, str]:
    """The topic's retention.ms and retention.bytes as the broker has them."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        current = _topic_configs(admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]))[topic]
    finally:
        admin.close()
    return {k: current[k] for k in ("retention.ms", "retention.bytes")}


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    start: int  # the log start offset: older messages were deleted by retention
    end: int
    committed: int | None  # every message before it is stored (CommitStored)

    @property
    def stored_through(self) -> int:
        return self.start if self.committed is None else self.committed

    @property
    def lag(self) -> int:
        """Messages in the topic not yet stored."""
        return max(0, self.end - max(self.start, self.stored_through))

    @property
    def lost(self) -> int:
        """Messages the broker deleted before they were stored."""
        return max(0, self.start - self.stored_through)


def consumer_lag(settings: Settings, group_id: str, topic: str) -> list[PartitionLag]:
    """Per partition: the log start and end offsets and the group's committed offset."""
    from kafka import TopicPartition

    consumer = _consumer(settings.kafka_bootstrap, group_id)
    try:
        tps = [TopicPartition(topic, p)
               for p in sorted(consumer.partitions_for_topic(topic) or ())]
        starts = consumer.beginning_offsets(tps) if tps else {}
        ends = consumer.end_offsets(tps) if tps else {}
        return [PartitionLag(tp.partition, starts[tp], ends[tp], consumer.committed(tp))
                for tp in tps]
    finally:
        consumer.close()


# --- Progress: the group's offsets follow what was stored -----------------------------


def parse_position(position: str) -> tuple[str, int, int]:
    """"kafka:topic/partition/offset" (KafkaMessage.position) -> (topic, partition, offset)."""
    topic, partition, offset = position.removeprefix("kafka:").rsplit("/", 2)
    return topic, int(partition), int(offset)


Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, half-open [start, end)


def advance_frontier(frontier: int, pending: Intervals,
                     offsets: Sequence[int]) -> tuple[int, Intervals]:
    """Adds stored offsets to (frontier, pending): the frontier is the first offset not
    known to be stored; pending holds stored offsets after it, as intervals, so a
    partition far ahead of one missing offset costs a few pairs, not a set."""
    spans = sorted([*pending, *((o, o + 1) for o in offsets if o >= frontier)])
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if merged and merged[0][0] <= frontier:
        frontier = max(frontier, merged.pop(0)[1])
    return frontier, tuple((a, b) for a, b in merged)


def _by_partition(positions: Sequence[str]):
    grouped: dict[tuple[str, int], list[int]] = {}
    for position in positions:
        topic, partition, offset = parse_position(position)
        grouped.setdefault((topic, partition), []).append(offset)
    return [(f"{topic}/{partition}", tuple(offsets))
            for (topic, partition), offsets in grouped.items()]


class _CommitStoredFn(DoFn):
    """Per topic partition: advances the frontier of stored offsets and commits it as the
    group's offset, so lag (end - committed) counts messages not yet stored."""

    FRONTIER = ReadModifyWriteStateSpec("frontier", PickleCoder())

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id

    def setup(self) -> None:
        self.consumer = _consumer(self.bootstrap, self.group_id)

    def teardown(self) -> None:
        self.consumer.close()

    def process(self, element, state=DoFn.StateParam(FRONTIER)):
        from kafka import OffsetAndMetadata, TopicPartition
        from kafka.errors import KafkaError

        key, offsets = element
        topic, partition = key.rsplit("/", 1)
        tp = TopicPartition(topic, int(partition))
        saved = state.read()
        if saved is None:
            # Offsets before the group's committed one were stored by an earlier run.
            start = self._with_retries(lambda: self.consumer.beginning_offsets([tp])[tp])
            committed = self._with_retries(lambda: self.consumer.committed(tp))
            first = max(start, committed or start)
            saved = (first, (), first)
        frontier, pending = advance_frontier(saved[0], saved[1], offsets)
        committed = saved[2]
        if frontier > committed:
            try:
                self.consumer.commit({tp: OffsetAndMetadata(frontier, "", -1)})
                committed = frontier
            except KafkaError as exc:  # the broker restarting: the next batch commits it
                logging.getLogger(__name__).warning(
                    "commit of %s at %d failed, retried with the next batch: %s",
                    key, frontier, exc)
        state.write((frontier, pending, committed))

    @staticmethod
    def _with_retries(ask: Callable[[], Any]) -> Any:
        # A failed bundle ends a Prism job: wait out a broker restart instead.
        from kafka.errors import KafkaError

        for attempt in range(1, 41):
            try:
                return ask()
            except KafkaError:
                if attempt == 40:
                    raise
                time.sleep(min(0.25 * 2 ** (attempt - 1), 30.0))
        return None


class CommitStored(PTransform):
    """Tuples of stored positions (WriteToCassandra's STORED outputs) -> the group's
    committed offsets, advanced past every message whose rows are stored."""

    def __init__(self, bootstrap: str, group_id: str) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.group_id = group_id

    def expand(self, stored):
        return (stored
                | "ByPartition" >> FlatMap(_by_partition)
                | "Commit" >> ParDo(_CommitStoredFn(self.bootstrap, self.group_id)))


def publish(settings: Settings, topic: str, key: str | None, record: Mapping[str, Any]) -> None:
    """One message, acknowledged before returning (the dashboard's labels)."""
    sender = KafkaSender(settings)
    try:
        sender.send(topic, key, encode_record(record), event_millis(record))
        sender.flush()
    finally:
        sender.close()
