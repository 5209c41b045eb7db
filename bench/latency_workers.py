"""The processes of bench/stream_latency.py that must not share an interpreter with the
bench itself: the paced sender and the reference consumer. Settings come from the
FRAUD_* environment (tests.integration.streaming.settings_env).

    python bench/latency_workers.py send WORLD --warmup W --count N --rate R [--tick-rate T]
        the sender. Every message is one of the world's transactions (in event-time
        order) stamped with its send time, as Kafka timestamp and event_time alike.
        1. sends rows 0 .. W at once, prints {"phase": "warmup", "offsets": ...};
        2. ticks until it reads "go" on stdin;
        3. sends rows W .. W+N at R per second, prints {"phase": "timed", "sent",
           "seconds", "rate", "behind_ms", "end_ms", "offsets"};
        4. ticks until it reads "stop" (or stdin closes).
        offsets: partition -> the offset after its last message of the phase. A tick is
        one more transaction (from the rows after the timed ones) every 1/T s: the
        pipeline releases a 100 ms cell once the watermark has passed it, and on a
        quiet topic the watermark stops at the newest message, so without later traffic
        the last cell of a burst would wait for ever.
    python bench/latency_workers.py bare
        the reference: a kafka-python consumer that writes the transactions' rows with
        prepared async upserts (packed into unlogged batches as the sink packs them), and
        commits its group's offsets once they are stored; runs until SIGTERM
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BARE_GROUP_ID = "bench-bare-consumer"
TICK_ROWS = 5_000  # rows after the timed ones that ticks cycle through


def world_rows(world: Path, skip: int = 0, count: int | None = None) -> list[dict]:
    """The world's transactions in event-time order, rows skip .. skip+count (or all)."""
    from fraud_detection.io.parquet import read_transactions

    rows = sorted(read_transactions(world).to_pylist(), key=lambda r: r["event_time"])
    if count is None:
        return rows[skip:]
    if skip + count > len(rows):
        raise SystemExit(f"the world has {len(rows)} transactions, {skip + count} wanted")
    return rows[skip:skip + count]


def stamp(row: dict, sent_at: dt.datetime) -> dict:
    """The row as a live event: its event time is its send time."""
    return {**row, "event_time": sent_at}


# Stands for the send time in a pre-encoded message; never a real event time.
_SEND_TIME_MARK = dt.datetime(1901, 2, 3, 4, 5, 6, 789, tzinfo=dt.UTC)


class Sender:
    """Messages are encoded before the clock starts, with a mark where the send time goes:
    at the rate, encoding each row as it is sent cost the sender more CPU than the
    producer did, and the machine is shared with what is measured. The producer is
    librdkafka's (confluent-kafka), as the product's producers are not: at 1,000 messages
    a second kafka-python's cost 35-49% of a core here, librdkafka's 9-13%. Its
    partitioner is Kafka's own murmur2, as kafka-python's is: an account's messages go to
    the partition the product's producers would send them to."""

    def __init__(self, settings) -> None:
        from confluent_kafka import Producer

        from fraud_detection.io.kafka import _json_value, encode_record

        self.encode = encode_record
        self.iso = _json_value
        self.mark = _json_value(_SEND_TIME_MARK).encode()
        self.kafka = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                               "enable.idempotence": True, "linger.ms": 5,
                               "partitioner": "murmur2_random"})
        self.topic = settings.topic_transactions
        self.kafka.list_topics(self.topic, timeout=30)  # metadata before any clock starts
        self.ends: dict[int, int] = {}
        self.errors: list[str] = []

    def encoded(self, rows: list[dict]) -> list[tuple[bytes, bytes]]:
        """(key, message with the send-time mark) per row."""
        return [(str(row["account_id"]).encode(), self.encode(stamp(row, _SEND_TIME_MARK)))
                for row in rows]

    def send(self, message: tuple[bytes, bytes]) -> None:
        now_ms = time.time_ns() // 1_000_000
        sent_at = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
        key, value = message
        self.kafka.produce(self.topic, value.replace(self.mark, self.iso(sent_at).encode(), 1),
                           key, on_delivery=self._delivered, timestamp=now_ms)

    def _delivered(self, error, message) -> None:
        if error is not None:
            self.errors.append(str(error))
        else:
            partition = message.partition()
            self.ends[partition] = max(self.ends.get(partition, 0), message.offset() + 1)

    def poll(self) -> None:
        """Serves delivery reports, so they do not pile up between flushes."""
        self.kafka.poll(0)

    def flush(self) -> dict[int, int]:
        """Waits for every message sent since the last flush; partition -> offset after
        the last of them."""
        if self.kafka.flush(120) or self.errors:
            raise RuntimeError(f"the broker did not take every message: {self.errors[:3]}")
        ends, self.ends = self.ends, {}
        return ends

    def tick(self, messages, rate: float, until: threading.Event) -> None:
        while not until.wait(1 / rate):
            self.send(next(messages))
            self.flush()

    def close(self) -> None:
        # The last ticks, outside the timed window: a loss is still reported.
        self.flush()


# Paced sends wake up at most this often: each wake-up costs the sender more than a
# message does (1,000 a second: 46-49% of a core waking for each, 35% every 5 ms, with
# kafka-python).
SEND_GRAIN_SECONDS = 0.005


def send(settings, world: Path, warmup: int, count: int, rate: float,
         tick_rate: float) -> None:
    rows = world_rows(world)
    if warmup + count >= len(rows):
        raise SystemExit(f"the world has {len(rows)} transactions, more than "
                         f"{warmup + count} wanted")
    warm, timed = rows[:warmup], rows[warmup:warmup + count]
    go, stop = threading.Event(), threading.Event()

    def control() -> None:
        for line in sys.stdin:
            (go if line.strip() == "go" else stop).set()
        go.set()
        stop.set()

    threading.Thread(target=control, daemon=True).start()
    sender = Sender(settings)
    warm, timed = sender.encoded(warm), sender.encoded(timed)
    ticks = itertools.cycle(sender.encoded(rows[warmup + count:warmup + count + TICK_ROWS]))

    def report(record: dict) -> None:
        print(json.dumps(record), flush=True)

    for message in warm:
        sender.send(message)
    report({"phase": "warmup", "offsets": sender.flush()})
    sender.tick(ticks, tick_rate, go)

    # Paced sends are k/rate apart; whatever is due goes at once (one wake-up per batch).
    behind = 0.0
    started = time.monotonic()
    k = 0
    while k < len(timed):
        now = time.monotonic()
        due = min(len(timed), int((now - started) * rate) + 1)
        if due <= k:
            time.sleep(max(started + k / rate - now, SEND_GRAIN_SECONDS))
            continue
        behind = max(behind, now - (started + k / rate))
        for message in timed[k:due]:
            sender.send(message)
        sender.poll()
        k = due
    # n sends span (n - 1)/rate.
    seconds = time.monotonic() - started
    end_ms = time.time_ns() // 1_000_000
    offsets = sender.flush()
    report({"phase": "timed", "sent": len(timed), "seconds": seconds,
            "rate": (len(timed) - 1) / seconds if len(timed) > 1 and seconds > 0 else 0.0,
            "behind_ms": behind * 1000, "end_ms": end_ms, "offsets": offsets})
    sender.tick(ticks, tick_rate, stop)
    sender.close()


def bare_consumer(settings) -> None:
    """Poll, validate, write the same rows as the pipeline with async prepared upserts
    (a poll's transactions as one table, serialized column-wise and packed into unlogged
    batches, as the sink sends them), wait for them, commit the batch's offsets; until
    SIGTERM."""
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

    from fraud_detection.io.cassandra import encoded_rows
    from fraud_detection.records import ScoredTransaction, validate_transaction
    from fraud_detection.store.keyspace import connect
    from fraud_detection.store.tables import STATEMENTS, scored_table_rows
    from fraud_detection.transforms.kernel import scored_table

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    store = connect(settings)
    prepared = {t: store.prepare(cql) for t, cql in STATEMENTS.items()}
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             group_id=BARE_GROUP_ID, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    topic = settings.topic_transactions
    partitions = [TopicPartition(topic, p)
                  for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    print(f"bare consumer: reading {topic} ({len(partitions)} partitions)", flush=True)
    try:
        while not stop:
            scored, offsets = [], {}
            for tp, records in consumer.poll(timeout_ms=50).items():
                for record in records:
                    offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                    tx, _ = validate_transaction(json.loads(record.value))
                    if tx is not None:
                        scored.append(ScoredTransaction(tx, 0.0, False))
            encoded = encoded_rows(prepared, scored_table_rows(scored_table(scored))) \
                if scored else None
            futures = [store.session.execute_async(encoded.request(prepared, start, stop))
                       for start, stop in encoded.spans()] if encoded else []
            for future in futures:
                future.result()
            if offsets:
                consumer.commit(offsets)
    finally:
        consumer.close()
        store.close()


def main() -> None:
    from fraud_detection.config import load_settings

    parser = argparse.ArgumentParser(description="workers of bench/stream_latency.py")
    commands = parser.add_subparsers(dest="command", required=True)
    sending = commands.add_parser("send")
    sending.add_argument("world", type=Path)
    sending.add_argument("--warmup", type=int, required=True)
    sending.add_argument("--count", type=int, required=True)
    sending.add_argument("--rate", type=float, required=True)
    sending.add_argument("--tick-rate", type=float, default=10.0)
    commands.add_parser("bare")
    args = parser.parse_args()
    settings = load_settings()
    if args.command == "send":
        send(settings, args.world, args.warmup, args.count, args.rate, args.tick_rate)
    else:
        bare_consumer(settings)


if __name__ == "__main__":
    main()
