"""Latency from Kafka to a row in Cassandra, and whether the rate was sustained, for the
streaming pipeline (`python -m fraud_detection stream` on Prism) against a bare
kafka-python consumer that writes the same rows to Cassandra, in the same run.

Goals, on 2 cores: sustained with p99 <= 1 s at 1,000 tx/s; moonshot: p99 <= 500 ms at
2,000 tx/s.

Each system, at each rate, gets a fresh keyspace and topics. It is started first, and
a sender in its own process (bench/latency_workers.py) sends warm-up transactions; the
bench waits until the system has stored them: Prism's and the readers' start-up is not
latency. Then it sends the generated world's transactions at the rate for --seconds,
each stamped with its send time (Kafka timestamp and event_time alike), and reports what
it sent and the rate it achieved. Outside that window it ticks: --tick-rate more
transactions a second, so the pipeline's watermark keeps moving as under live traffic
(on a quiet topic it stops at the newest message, and the last 100 ms cell of a burst
waits for the next message). Warm-up and ticks are left out of the figures. Rows count
as stored if they are stored within --drain seconds after the last timed send; the drain
ends early once the system's consumer group has committed the timed messages' offsets
(both systems commit only what they have stored): one Kafka request a second; nothing
polls Cassandra during the run.

After the run, once: the topic is read back for each transaction's record timestamp
(ms), and `SELECT transaction_id, WRITETIME(score) FROM transactions` for when its row
was written (µs, the writing driver's clock: the same host). Latency = write time -
record timestamp. stored/s is over the write times, first to last. Sustained: every
sent row stored within the drain, and stored/s >= 0.95 x sent/s. flagged: the share of
the timed transactions stored as flagged; each of those also writes the two alert tables
and, in `stream`, an alert message (the bare consumer scores nothing: 0%). Re-stamped
at these rates an account's history is compressed into minutes, so velocity rules fire
far more often than in the generated world; a larger world (--world-rows) spreads the
rate over more accounts. A bare-consumer run of --warm-seconds at 1,000 tx/s comes first,
unreported: a freshly started Cassandra used 113-119 CPU-seconds on its first 30-second
run of bare at 1,000 tx/s, 62-71 on the second and 40-50 from the third (its JIT compiles
for minutes; C1 alone held it at 80). Needs `python -m fraud_detection stack up`.

    python bench/stream_latency.py [--rates 200,500,1000,2000] [--seconds 20] [--drain 60]
                                   [--systems bare,stream] [--tick-rate 10]
                                   [--world-rows 300000] [--stream-args "--shards 2"]
                                   [--warm-seconds 120]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.latency_workers import BARE_GROUP_ID, TICK_ROWS, world_rows
from fraud_detection.beam_pipelines.stream import GROUP_ID as STREAM_GROUP_ID
from fraud_detection.config import Settings, load_settings
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.kafka import (
    TRANSACTION_PARTITIONS,
    consumer_lag,
    ensure_topics,
)
from fraud_detection.store.keyspace import apply_schema, connect, drop_keyspace
from fraud_detection.store.rules import save_rules
from fraud_detection.store.tables import STATEMENTS, entity_rows
from fraud_detection.transforms.rules import load_rules
from tests.integration.streaming import kill_stream, settings_env, start_stream
from tests.integration.worlds import World, load_world

WORKERS = Path(__file__).with_name("latency_workers.py")
WARMUP = 40  # transactions, sent before the timed ones and left out of the figures
SYSTEMS = {"bare": "bare kafka-python consumer", "stream": "stream (Prism)"}


@dataclass
class Result:
    system: str
    rate: int
    sent: int
    sent_rate: float
    stored: int
    stored_rate: float
    latencies_ms: list[float]
    flagged: int  # of the timed transactions: each also writes two alert tables (and
    # `stream` sends it to the alerts topic)

    def percentile(self, p: float) -> float:
        """Nearest rank."""
        if not self.latencies_ms:
            return math.nan
        return self.latencies_ms[max(0, math.ceil(p / 100 * len(self.latencies_ms)) - 1)]

    @property
    def sustained(self) -> bool:
        return self.stored == self.sent and self.stored_rate >= 0.95 * self.sent_rate


# The warm-up run's rate: what the goal is about.
WARM_RATE = 1_000


def fresh_settings(base: dict) -> Settings:
    run = uuid.uuid4().hex[:8]
    return load_settings({**base, "cassandra_keyspace": f"bench_latency_{run}",
                          "topic_transactions": f"bench-tx-{run}",
                          "topic_alerts": f"bench-alerts-{run}",
                          "topic_dead_letters": f"bench-dead-{run}",
                          "topic_labels": f"bench-labels-{run}"})


def topics(settings: Settings) -> dict[str, int]:
    return {settings.topic_transactions: TRANSACTION_PARTITIONS, settings.topic_labels: 1,
            settings.topic_alerts: 1, settings.topic_dead_letters: 1}


def prepare(settings: Settings, world: World) -> None:
    """Schema, rules and the world's entities (the sink's rows, written directly: no
    pipeline, and no session left open in this process), and the topics."""
    from cassandra.concurrent import execute_concurrent

    apply_schema(settings)
    store = connect(settings)
    try:
        save_rules(store, load_rules())
        writes = [(store.prepare(STATEMENTS[table]), values)
                  for entity in world.entities for table, values in entity_rows(entity)]
        for ok, outcome in execute_concurrent(store.session, writes, concurrency=64,
                                              raise_on_first_error=False):
            if not ok:
                raise RuntimeError(f"writing the world's entities: {outcome}")
    finally:
        store.close()
    ensure_topics(settings, topics(settings))


def start_system(system: str, settings: Settings, log: Path,
                 stream_args: list[str]) -> subprocess.Popen:
    if system == "stream":
        return start_stream(settings, log, stream_args)
    return subprocess.Popen([sys.executable, str(WORKERS), "bare"], env=settings_env(settings),
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop_system(system: str, process: subprocess.Popen) -> None:
    if system == "stream":
        kill_stream(process)
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def stored_through(settings: Settings, group_id: str, offsets: dict[int, int]) -> bool:
    """Whether the system's group has committed, in every partition, the offsets up to
    `offsets` as stored (both systems commit only what they have stored)."""
    done = {p.partition: p.stored_through
            for p in consumer_lag(settings, group_id, settings.topic_transactions)}
    return all(done.get(partition, 0) >= end for partition, end in offsets.items())


def wait_until_stored(settings: Settings, group_id: str, offsets: dict[int, int],
                      seconds: float, process: subprocess.Popen, log: Path) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if stored_through(settings, group_id, offsets):
            return True
        if process.poll() is not None:
            raise RuntimeError(f"the system exited ({process.returncode}); log {log}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


class SenderProcess:
    """bench/latency_workers.py send: warm-up, then ticks until `go`, then the timed
    rows, then ticks until `stop`."""

    def __init__(self, settings: Settings, world: Path, rate: int, count: int,
                 tick_rate: float, log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(WORKERS), "send", str(world), "--warmup", str(WARMUP),
             "--count", str(count), "--rate", str(rate), "--tick-rate", str(tick_rate)],
            env=settings_env(settings), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log.open("ab"), text=True)

    def report(self, phase: str) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(30)
            raise RuntimeError(f"the sender exited ({self.process.returncode}); log "
                               f"{self.log}:\n{self.log.read_text(errors='replace')[-3000:]}")
        record = json.loads(line)
        assert record["phase"] == phase, record
        record["offsets"] = {int(p): o for p, o in record["offsets"].items()}
        return record

    def tell(self, word: str) -> None:
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.tell("stop")
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def record_timestamps(settings: Settings) -> dict[str, int]:
    """transaction id -> the Kafka timestamp (ms) of the message that carried it."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=5_000)
    topic = settings.topic_transactions
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        found: dict[str, int] = {}
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1_000).values():
                for record in records:
                    found[json.loads(record.value)["transaction_id"]] = record.timestamp
        return found
    finally:
        consumer.close()


def write_times(settings: Settings) -> dict[str, tuple[int, bool]]:
    """transaction id -> (WRITETIME(score) of its row in the transactions table (µs),
    flagged)."""
    store = connect(settings)
    try:
        rows = store.execute("SELECT transaction_id, WRITETIME(score), flagged "
                             "FROM transactions", fetch_size=5_000)
        return {r[0]: (r[1], bool(r[2])) for r in rows}
    finally:
        store.close()


def delete_topics(settings: Settings) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.delete_topics(list(topics(settings)))
    except Exception as exc:  # leftovers are harmless: every run has topics of its own
        print(f"  (could not delete the run's topics: {exc})", flush=True)
    finally:
        admin.close()


def measure(system: str, rate: int, args: argparse.Namespace, world: World,
            base: dict) -> Result:
    settings = fresh_settings(base)
    group_id = STREAM_GROUP_ID if system == "stream" else BARE_GROUP_ID
    count = int(rate * args.seconds)
    logs = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    log = logs / f"{system}.log"
    prepare(settings, world)
    try:
        process = start_system(system, settings, log, shlex.split(args.stream_args))
        sender = None
        try:
            sender = SenderProcess(settings, world.root, rate, count, args.tick_rate,
                                   logs / "sender.log")
            warm = sender.report("warmup")
            if not wait_until_stored(settings, group_id, warm["offsets"], args.startup,
                                     process, log):
                raise RuntimeError(f"warm-up not stored within {args.startup:.0f} s; log "
                                   f"{log}:\n{log.read_text(errors='replace')[-3000:]}")
            sender.tell("go")
            sent = sender.report("timed")
            drained = wait_until_stored(settings, group_id, sent["offsets"], args.drain,
                                        process, log)
        finally:
            if sender is not None:
                sender.close()
            stop_system(system, process)
        timestamps = record_timestamps(settings)
        writes = write_times(settings)
    finally:
        drop_keyspace(settings)
        delete_topics(settings)

    timed = {row["transaction_id"] for row in world_rows(world.root, WARMUP, count)}
    if len(timestamps.keys() & timed) != sent["sent"]:
        raise RuntimeError(f"{len(timestamps.keys() & timed)} timed messages in the topic, "
                           f"the sender reported {sent['sent']}")
    limit_us = (sent["end_ms"] + int(args.drain * 1_000)) * 1_000
    flagged = sum(writes[i][1] for i in writes.keys() & timed)
    stored = {i: w for i, (w, _) in writes.items() if i in timed and w <= limit_us}
    latencies = sorted(stored[i] / 1_000 - timestamps[i] for i in stored)
    span_s = (max(stored.values()) - min(stored.values())) / 1e6 if len(stored) > 1 else 0.0
    result = Result(system, rate, sent["sent"], sent["rate"], len(stored),
                    (len(stored) - 1) / span_s if span_s > 0 else 0.0, latencies, flagged)
    print(f"  {SYSTEMS[system]} at {rate}/s: sent {result.sent} at {result.sent_rate:.0f}/s "
          f"(at most {sent['behind_ms']:.0f} ms behind schedule), stored {result.stored}"
          f"{'' if drained else f' (the {args.drain:.0f} s drain ran out)'}, "
          f"p99 {result.percentile(99):.0f} ms; logs in {logs}", flush=True)
    return result


def table(results: list[Result]) -> str:
    lines = [f"{'system':<28} {'target/s':>8} {'sent/s':>7} {'stored':>13} {'stored/s':>8} "
             f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'flagged':>8}  sustained"]
    for r in results:
        lines.append(
            f"{SYSTEMS[r.system]:<28} {r.rate:>8} {r.sent_rate:>7.0f} "
            f"{f'{r.stored}/{r.sent}':>13} {r.stored_rate:>8.0f} {r.percentile(50):>7.0f} "
            f"{r.percentile(95):>7.0f} {r.percentile(99):>7.0f} "
            f"{r.flagged / max(r.sent, 1):>8.0%}  "
            f"{'yes' if r.sustained else 'no'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,500,1000,2000",
                        help="target rates, tx/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of sending at each rate")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds after the last send within which rows count as stored")
    parser.add_argument("--startup", type=float, default=300.0,
                        help="seconds a system may take to store the warm-up rows")
    parser.add_argument("--tick-rate", type=float, default=10.0,
                        help="transactions a second sent outside the timed window (left "
                             "out of the figures) so the last timed ones are released")
    parser.add_argument("--systems", default="bare,stream",
                        help=f"which systems, comma-separated: {', '.join(SYSTEMS)}")
    parser.add_argument("--world-rows", type=int, default=300_000,
                        help="size of the generated world the transactions come from; "
                             "more rows spread the same rate over more accounts")
    parser.add_argument("--stream-args", default="",
                        help="pipeline options for the stream, e.g. \"--shards 2\"")
    parser.add_argument("--warm-seconds", type=float, default=120.0,
                        help="seconds of an unreported bare-consumer run at 1,000 tx/s "
                             "first: a freshly started Cassandra spends its first "
                             "minutes compiling (3x the CPU per row), 0 to skip")
    parser.add_argument("--cassandra-port", type=int, default=9042)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    systems = [s.strip() for s in args.systems.split(",")]
    if unknown := set(systems) - set(SYSTEMS):
        parser.error(f"--systems: unknown {', '.join(sorted(unknown))}")
    base = {"cassandra_port": args.cassandra_port}
    root = Path(tempfile.mkdtemp(prefix="bench-latency-")) / "world"
    needed = WARMUP + int(max(*rates, WARM_RATE) * max(args.seconds, args.warm_seconds)
                          ) + TICK_ROWS
    generate(WorldConfig(days=30, seed=13, rows=max(1_000, needed, args.world_rows)), root,
             progress=False)
    world = load_world(root)
    if args.warm_seconds > 0:
        warm = measure("bare", WARM_RATE, argparse.Namespace(**{
            **vars(args), "seconds": args.warm_seconds}), world, base)
        print(f"  (that run warmed Cassandra up: p99 {warm.percentile(99):.0f} ms, "
              "not reported)", flush=True)
    results = []
    for rate in rates:
        for system in systems:
            try:
                results.append(measure(system, rate, args, world, base))
            except RuntimeError as exc:  # the other measurements still count
                print(f"  {SYSTEMS[system]} at {rate}/s: FAILED: {exc}", flush=True)
    print()
    print(table(results))


if __name__ == "__main__":
    main()
