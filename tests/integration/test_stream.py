"""The streaming pipeline against real Kafka and Cassandra: transactions sent by a
streamer, mixed with malformed messages, are each stored once or dead-lettered once."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import Counter

import pytest
from kafka import KafkaConsumer

from fraud_detection.beam_pipelines import stream
from fraud_detection.io.kafka import KafkaSender, encode_record, ensure_topics
from fraud_detection.stack.runners import prism_args
from fraud_detection.store import queries
from fraud_detection.store.keyspace import connect
from tests.integration.streaming import expected_outcomes
from tests.integration.worlds import replay_world, stream_settings, write_entities

pytestmark = pytest.mark.integration


def _malformed(world_tx: dict, n: int) -> list[tuple[bytes, str]]:
    """n bad messages of five kinds, each with the words its dead letter must give."""
    kinds = []
    for i in range(n):
        record = {**world_tx, "transaction_id": f"bad-{i}"}
        kind = i % 5
        if kind == 0:
            kinds.append((b'{"transaction_id": "bad-' + str(i).encode() + b'", oops', "not JSON"))
            continue
        if kind == 1:
            record["amount_cents"] = "twelve"
            expect = "amount_cents"
        elif kind == 2:
            del record["account_id"]
            expect = "account_id: missing"
        elif kind == 3:
            record["amount_cents"] = -500
            expect = "amount_cents"
        else:
            record["account_id"] = f"nobody-{i}"
            expect = "unknown account"
        kinds.append((encode_record(record), expect))
    return kinds


def test_stream_stores_each_transaction_once_and_dead_letters_malformed(
        stack, small_world, keyspace_for) -> None:
    run = uuid.uuid4().hex[:8]
    settings = stream_settings(keyspace_for, stack, "test_stream", run)
    store = connect(settings)
    write_entities(settings, small_world)
    ensure_topics(settings, {settings.topic_transactions: stream.TRANSACTION_PARTITIONS})

    # The world through a streamer, then 1,000 malformed messages after it.
    replay_world(settings, small_world, f"stream-{run}")
    good = [s.transaction for s in small_world.scored]
    sample = {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
              for k, v in good[-1].to_dict().items()}
    bad = _malformed(sample, 1000)
    sender = KafkaSender(settings)
    for i, (value, _) in enumerate(bad):
        sender.send(settings.topic_transactions, f"bad-{i}", value,
                    int(good[-1].event_time.timestamp() * 1000))
    sender.flush()
    sender.close()

    summary = stream.run(["--bounded", *prism_args()], settings)

    assert summary.read == len(good) + len(bad)
    assert summary.rows_failed == 0
    rows = list(store.execute("SELECT transaction_id, score, flagged, reasons, late "
                              "FROM transactions", fetch_size=5000))
    ids = [r.transaction_id for r in rows]
    assert len(ids) == len(set(ids)) == len(good)
    # Scored as the batch path scores the same world.
    expected = expected_outcomes(small_world.root, settings.fraud_threshold)
    assert {r.transaction_id: (r.score, r.flagged, list(r.reasons or []), r.late)
            for r in rows} == expected
    letters = list(store.execute("SELECT raw, errors FROM dead_letters", fetch_size=5000))
    assert len(letters) == len(bad)  # in = stored + dead-lettered
    reasons = Counter()
    for letter in letters:
        text = "; ".join(letter.errors)
        for _, expect in bad:
            if expect in text:
                reasons[expect] += 1
                break
    assert reasons == Counter(expect for _, expect in bad)
    # Balances are those of replaying the transactions in event-time order.
    last: dict[str, int] = {}
    for tx in sorted(good, key=lambda t: t.event_time):
        if tx.balance_after_cents is not None:
            last[tx.account_id] = tx.balance_after_cents
    for account_id, cents in last.items():
        assert queries.balance(store, account_id).balance_cents == cents, account_id
    # Every dead letter also went to the dead-letters topic, with its position.
    consumer = KafkaConsumer(settings.topic_dead_letters,
                             bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    published = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert len(published) == len(bad)
    store.close()
