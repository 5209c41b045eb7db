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
