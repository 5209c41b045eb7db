"""The batch pipeline end to end: a generated world's Parquet in, every table filled
through the sink, and re-running it leaves every table as it was."""

from __future__ import annotations

import pytest

from fraud_detection.beam_pipelines import batch
from fraud_detection.store import queries
from fraud_detection.store.keyspace import connect
from fraud_detection.store.tables import ENTITY_COLUMNS, TRANSACTION_TABLES
from tests.integration.worlds import World

pytestmark = pytest.mark.integration

TABLES = [*TRANSACTION_TABLES, *ENTITY_COLUMNS, "account_balances", "benford_reports"]


def test_batch_scores_a_dataset_into_cassandra_and_reruns_change_nothing(
        small_world: World, keyspace_for) -> None:
    settings = keyspace_for("test_batch")
    argv = ["--input", str(small_world.root), "--runner=FnApiRunner"]
    summary = batch.run(argv, settings)
    assert summary.read == summary.scored == len(small_world.scored)
    assert summary.dead_lettered == 0 and summary.rows_failed == 0
    store = connect(settings)
    try:
        stored_ids = {row[0] for row in queries.table_contents(store, "transactions")}
        assert stored_ids == {s.transaction.transaction_id for s in small_world.scored}
        user = small_world.users[0]
        assert queries.user(store, user.user_id) == user
        mine = queries.collect(queries.transactions_of_user, store, user.user_id)
        assert {s.transaction.transaction_id for s in mine} == {
            s.transaction.transaction_id for s in small_world.scored
            if s.transaction.user_id == user.user_id}
        assert queries.benford_reports(store, "bank", small_world.banks[0].bank_id)
        before = {t: queries.table_contents(store, t) for t in TABLES}
        batch.run(argv, settings)
        assert {t: queries.table_contents(store, t) for t in TABLES} == before
    finally:
        store.close()
