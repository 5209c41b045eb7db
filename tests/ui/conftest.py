"""The dashboard's tests share one keyspace seeded through the batch pipeline, with a
login of each role. The customer is one with a flagged deposit, so their pages show
flagged transactions and the reasons in their words."""

from __future__ import annotations

import uuid

import pytest

from fraud_detection.beam_pipelines import batch
from fraud_detection.store.keyspace import connect
from fraud_detection.store.logins import add_login
from fraud_detection.store.rules import save_rules
from fraud_detection.transforms.rules import load_rules
from tests.integration.streaming import SETTING_NAMES

PASSWORD = "correct horse battery"


def _customer_with_a_flagged_deposit(store, users):
    from fraud_detection.store import queries

    for user in users:
        flagged = queries.anomalies_of_user(store, user.user_id, 100).items
        if any(s.transaction.tx_type == "CASH_IN" for s in flagged):
            return user
    raise AssertionError("the small world has no flagged deposit")


@pytest.fixture(scope="session")
def seeded(stack, small_world, keyspace_for):
    run = uuid.uuid4().hex[:8]
    settings = keyspace_for("test_app", kafka_bootstrap=stack.kafka_bootstrap,
                            redis_port=stack.ports.redis, topic_labels=f"labels-{run}")
    summary = batch.run(["--input", str(small_world.root), "--runner=FnApiRunner"], settings)
    assert summary.rows_failed == 0 and summary.flagged > 0
    store = connect(settings)
    save_rules(store, load_rules())
    customer = _customer_with_a_flagged_deposit(store, small_world.users)
    bank = small_world.banks[0]
    add_login(store, "cust", PASSWORD, "customer", user_id=customer.user_id)
    add_login(store, "bank", PASSWORD, "bank", bank_id=bank.bank_id)
    add_login(store, "ana", PASSWORD, "analyst")
    add_login(store, "root", PASSWORD, "admin")
    mp = pytest.MonkeyPatch()
    for name in SETTING_NAMES:  # the app reads its settings from the environment
        mp.setenv(f"FRAUD_{name.upper()}", str(getattr(settings, name)))
    yield settings, store, customer, bank
    mp.undo()
    store.close()


