"""A generated world as records: entities, and transactions scored from their labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fraud_detection.io.parquet import entity_records, read_transactions
from fraud_detection.records import (
    LEGIT,
    Account,
    Bank,
    Merchant,
    ScoredTransaction,
    User,
    validate_transaction,
)


@dataclass(frozen=True)
class World:
    root: Path
    banks: list[Bank]
    users: list[User]
    accounts: list[Account]
    merchants: list[Merchant]
    scored: list[ScoredTransaction]

    @property
    def entities(self) -> list:
        return [*self.banks, *self.users, *self.accounts, *self.merchants]


def label_scored(tx) -> ScoredTransaction:
    fraud = tx.label not in (None, LEGIT)
    return ScoredTransaction(tx, score=0.9 if fraud else 0.1, flagged=fraud,
                             reasons=(f"label {tx.label}",) if fraud else (),
                             model_version="labels")


def load_world(root: Path) -> World:
    scored = []
    for raw in read_transactions(root).to_pylist():
        tx, errors = validate_transaction(raw)
        assert tx is not None, errors
        scored.append(label_scored(tx))
    return World(root, entity_records(root, "banks"), entity_records(root, "users"),
                 entity_records(root, "accounts"), entity_records(root, "merchants"), scored)


def write_entities(settings, world: World) -> None:
    """The world's banks, users, accounts and merchants into Cassandra through the sink."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from fraud_detection.io.cassandra import WriteToCassandra
    from fraud_detection.store.tables import entity_rows

    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = (p | beam.Create(world.entities, reshuffle=False)
             | WriteToCassandra(settings, entity_rows))


def stream_settings(keyspace_for, stack, keyspace: str, run: str):
    """Settings for a stream test: a fresh keyspace with the default rules and the test
    stack's services, and topics of its own."""
    from fraud_detection.store.keyspace import connect
    from fraud_detection.store.rules import save_rules
    from fraud_detection.transforms.rules import load_rules

    settings = keyspace_for(
        keyspace, kafka_bootstrap=stack.kafka_bootstrap, redis_port=stack.ports.redis,
        topic_transactions=f"tx-{run}", topic_alerts=f"alerts-{run}",
        topic_dead_letters=f"dead-{run}", topic_labels=f"labels-{run}")
    store = connect(settings)
    try:
        save_rules(store, load_rules())
    finally:
        store.close()
    return settings


def replay_world(settings, world: World, name: str) -> None:
    """Every transaction of the world into the transactions topic through a streamer."""
    from fraud_detection.store.streamer_state import StreamerState
    from fraud_detection.streamers.config import streamer_config
    from fraud_detection.streamers.runner import Streamer

    config = streamer_config({"name": name, "source": "parquet", "path": str(world.root),
                              "topic": settings.topic_transactions, "rate": 20_000}, "")
    state = StreamerState(settings)
    try:
        state.register(name, config.to_dict())
        assert Streamer(config, settings, state).run() == "finished"
        state.forget(name)
    finally:
        state.close()


def stored_tables(settings) -> dict[str, list]:
    """Every table a batch run fills, each as sorted rows read back from Cassandra: to
    compare two runs into two keyspaces."""
    from fraud_detection.store import queries
    from fraud_detection.store.keyspace import connect
    from fraud_detection.store.tables import ENTITY_COLUMNS, TRANSACTION_TABLES

    store = connect(settings)
    try:
        return {table: sorted(queries.table_contents(store, table), key=repr)
                for table in (*TRANSACTION_TABLES, *ENTITY_COLUMNS, "account_balances",
                              "benford_reports")}
    finally:
        store.close()
