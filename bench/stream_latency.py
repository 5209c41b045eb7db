"""Latency from produce to row in Cassandra, and whether the rate was sustained, for the
streaming pipeline (`stream` on Prism) against a bare kafka-python consumer that writes
the same rows to Cassandra, in the same run. Goal: p99 <= 500 ms at 2,000 tx/s.

For each rate, a fresh keyspace and topic: the generated world's transactions are sent
at that rate for --seconds; a prober asks Cassandra every 20 ms which sent ids have
landed (resolution ~20 ms). Rows that have not landed --drain seconds after the last
send count as not landed. Needs `python -m fraud_detection stack up`.

    python bench/stream_latency.py [--rates 500,1000,2000] [--seconds 5] [--drain 120]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fraud_detection.config import load_settings
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.kafka import KafkaSender, ensure_topics
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import ScoredTransaction, validate_transaction
from fraud_detection.store.keyspace import apply_schema, connect, drop_keyspace
from fraud_detection.store.rules import save_rules
from fraud_detection.store.tables import STATEMENTS, scored_transaction_rows
from fraud_detection.transforms.rules import load_rules
from tests.integration.streaming import kill_stream, start_stream
from tests.integration.worlds import load_world, write_entities


def bare_consumer(settings, stop: threading.Event) -> None:
    """Reference: poll, validate, write the same rows with async prepared upserts."""
    from kafka import KafkaConsumer

    store = connect(settings)
    prepared = {t: store.prepare(cql) for t, cql in STATEMENTS.items()}
    consumer = KafkaConsumer(settings.topic_transactions,
                             bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", group_id=None)
    import json

    try:
        while not stop.is_set():
            futures = []
            for records in consumer.poll(timeout_ms=50).values():
                for record in records:
                    tx, _ = validate_transaction(json.loads(record.value))
                    if tx is None:
                        continue
                    for table, values in scored_transaction_rows(ScoredTransaction(tx, 0.0,
                                                                                   False)):
                        futures.append(store.session.execute_async(prepared[table], values))
            for future in futures:
                future.result()
    finally:
        consumer.close()
        store.close()


class Prober:
    """Records when each sent transaction id first appears in the transactions table."""

    def __init__(self, settings) -> None:
        self.store = connect(settings)
        self.query = self.store.prepare(
            "SELECT transaction_id FROM transactions WHERE transaction_id = ?")
        self.sent: dict[str, float] = {}
        self.landed: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from cassandra.concurrent import execute_concurrent_with_args

        while not self.stop.is_set():
            with self.lock:
                waiting = [i for i in self.sent if i not in self.landed][:2000]
            if waiting:
                results = execute_concurrent_with_args(
                    self.store.session, self.query, [(i,) for i in waiting], concurrency=64)
                now = time.monotonic()
                for i, (ok, rows) in zip(waiting, results, strict=True):
                    if ok and rows.one() is not None:
                        self.landed[i] = now
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.store.close()


def measure(system: str, rate: int, seconds: float, drain: float, world: Path,
            base) -> dict:
    run = uuid.uuid4().hex[:8]
    settings = load_settings({**base, "cassandra_keyspace": f"bench_latency_{run}",
                              "topic_transactions": f"tx-{run}", "topic_alerts": f"al-{run}",
                              "topic_dead_letters": f"dl-{run}", "topic_labels": f"lb-{run}"})
    apply_schema(settings)
    store = connect(settings)
    save_rules(store, load_rules())
    store.close()
    write_entities(settings, load_world(world))
    ensure_topics(settings, {settings.topic_transactions: 4})
    rows = sorted(read_transactions(world).to_pylist(), key=lambda r: r["event_time"])
    rows = rows[:int(rate * seconds)]
    stop = threading.Event()
    log = Path(tempfile.mkdtemp()) / "stream.log"
    if system == "stream":
        process = start_stream(settings, log)
        time.sleep(15)  # Prism and the job start; not part of latency
    else:
        worker = threading.Thread(target=bare_consumer, args=(settings, stop), daemon=True)
        worker.start()
        time.sleep(2)
    prober = Prober(settings)
    sender = KafkaSender(settings)
    started = time.monotonic()
    for k, row in enumerate(rows):
        due = started + k / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        sender.send_record(settings.topic_transactions, row)
        with prober.lock:
            prober.sent[row["transaction_id"]] = time.monotonic()
        if k % 200 == 199:
            sender.flush()
    sender.flush()
    send_seconds = time.monotonic() - started
    deadline = time.monotonic() + drain
    while len(prober.landed) < len(rows) and time.monotonic() < deadline:
        time.sleep(0.5)
    prober.close()
    sender.close()
    if system == "stream":
        kill_stream(process)
    stop.set()
    latencies = sorted((prober.landed[i] - prober.sent[i]) * 1000 for i in prober.landed)
    drop_keyspace(settings)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] \
            if latencies else float("nan")

    last_landed = max(prober.landed.values(), default=started)
    return {"system": system, "rate": rate, "sent": len(rows),
            "send_rate": len(rows) / send_seconds, "landed": len(latencies),
            "land_rate": len(latencies) / max(1e-9, last_landed - started),
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p95": pct(95), "p99": pct(99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=120.0)
    parser.add_argument("--cassandra-port", type=int, default=9042)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    base = {"cassandra_port": args.cassandra_port}
    world = Path(tempfile.mkdtemp(prefix="bench-latency-")) / "world"
    generate(WorldConfig(days=30, seed=13, rows=max(rates) * int(args.seconds) + 5_000),
             world, progress=False)
    results = []
    for rate in rates:
        for system in ("bare consumer", "stream"):
            result = measure(system, rate, args.seconds, args.drain, world, base)
            print(result, flush=True)
            results.append(result)
    print()
    print(f"{'system':<28} {'target/s':>8} {'sent/s':>8} {'landed':>12} {'landed/s':>9} "
          f"{'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}  sustained")
    for r in results:
        sustained = r["landed"] == r["sent"] and r["land_rate"] >= 0.95 * r["rate"]
        name = "stream (Prism)" if r["system"] == "stream" else "bare kafka-python consumer"
        print(f"{name:<28} {r['rate']:>8} {r['send_rate']:>8.0f} "
              f"{r['landed']:>5}/{r['sent']:<6} {r['land_rate']:>9.0f} {r['p50']:>9.0f} "
              f"{r['p95']:>9.0f} {r['p99']:>9.0f}  {'yes' if sustained else 'no'}")


if __name__ == "__main__":
    main()
