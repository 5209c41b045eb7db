"""Entities sent to the Kafka entity topics are added through the same checks as the
CLI; bad ones land in the dead letters (topic and table) with the reason."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from kafka import KafkaConsumer

from fraud_detection.io.entity_topics import consume_entity_topics, publish_entity
from fraud_detection.store import queries
from fraud_detection.store.keyspace import connect

pytestmark = pytest.mark.integration


def test_entity_topics_add_good_entities_and_dead_letter_the_rest(keyspace_for) -> None:
    run = uuid.uuid4().hex[:8]
    # Fresh topic names per run, so earlier runs' messages and offsets do not matter.
    settings = keyspace_for("test_entity_topics", topic_new_bank=f"new-bank-{run}",
                            topic_new_user=f"new-user-{run}",
                            topic_new_account=f"new-account-{run}",
                            topic_dead_letters=f"dead-letters-{run}")
    bank = {"bank_id": f"b-{run}", "name": "Topic Bank", "country": "DE", "currency": "EUR"}
    user = {"user_id": f"u-{run}", "bank_id": bank["bank_id"], "name": "Ute Topic",
            "email": "ute@example.com", "country": "DE", "created_at": "2024-02-01T00:00:00Z"}
    account = {"account_id": f"a-{run}", "user_id": user["user_id"], "bank_id": bank["bank_id"],
               "account_type": "savings", "currency": "EUR",
               "opened_at": "2024-02-02T00:00:00Z"}
    # The account is sent first: it must wait for its user and bank, not be rejected.
    publish_entity(settings, "account", account)
    publish_entity(settings, "user", user)
    publish_entity(settings, "bank", bank)
    publish_entity(settings, "bank", bank)  # a replay of the same bank is harmless
    publish_entity(settings, "bank", {**bank, "name": "Impostor"})
    publish_entity(settings, "user", {**user, "user_id": f"u2-{run}", "bank_id": "nowhere"})
    publish_entity(settings, "account", {**account, "account_type": "gold"})

    store = connect(settings)
    try:
        report = consume_entity_topics(settings, store, idle_seconds=3, reference_wait=2)
        assert report.added == {"bank": 2, "user": 1, "account": 1}
        assert report.rejected == 3
        assert queries.bank(store, bank["bank_id"]).name == "Topic Bank"
        assert queries.user(store, user["user_id"]).created_at == dt.datetime(2024, 2, 1,
                                                                               tzinfo=dt.UTC)
        assert [a.account_id for a in queries.accounts_of_user(store, user["user_id"])] == \
            [account["account_id"]]
        day = dt.datetime.now(dt.UTC).date()
        stored = queries.collect(queries.dead_letters_on, store,
                                 f"kafka:new-bank-{run}", day)
        assert [d.letter.errors for d in stored] == [(f"bank_id: bank 'b-{run}' already "
                                                      "exists",)]
    finally:
        store.close()

    consumer = KafkaConsumer(settings.topic_dead_letters,
                             bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    reasons = sorted(json.loads(m.value)["reason"] for m in consumer)
    consumer.close()
    assert len(reasons) == 3
    assert any("unknown bank 'nowhere'" in r for r in reasons)
    assert any("account_type: 'gold'" in r for r in reasons)
