"""The record definitions are the schema: the Arrow layout, the Cassandra rows and the
queries derive from them, and the CQL tables hold every field the records define."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fraud_detection.io.parquet import ENTITY_SCHEMAS, TRANSACTION_SCHEMA
from fraud_detection.records import ENTITY_FIELDS, SCORE_FIELDS, TRANSACTION_FIELDS
from fraud_detection.store.tables import ENTITY_COLUMNS, STATEMENTS, TRANSACTION_TABLES
from fraud_detection.transforms.kernel import SCORED_SCHEMA

SCHEMA_CQL = Path(__file__).resolve().parents[2] / "fraud_detection" / "store" / "schema.cql"


def _cql_columns() -> dict[str, set[str]]:
    """Each table's columns as schema.cql creates and alters them."""
    text = re.sub(r"--[^\n]*", "", SCHEMA_CQL.read_text())
    tables: dict[str, set[str]] = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\)\s*(?:WITH[^;]*)?;",
                                 text, re.S):
        body = re.sub(r"PRIMARY KEY\s*\(.*\)", "", body, flags=re.S)
        tables[name] = {part.split()[0] for part in body.split(",") if part.split()}
    for name, column in re.findall(r"ALTER TABLE (\w+) ADD (?:IF NOT EXISTS )?(\w+)", text):
        tables[name].add(column)
    return tables


def _statement_columns(table: str) -> set[str]:
    inserted = re.search(r"\((.*?)\)", STATEMENTS[table]).group(1)
    return {c.strip() for c in inserted.split(",")}


@pytest.mark.parametrize("table", sorted(TRANSACTION_TABLES))
def test_each_transaction_table_holds_the_scored_transaction(table: str) -> None:
    columns = _cql_columns()[table]
    assert set(TRANSACTION_FIELDS) | set(SCORE_FIELDS) <= columns
    assert _statement_columns(table) == columns  # the upsert writes every column


@pytest.mark.parametrize("table", sorted(ENTITY_COLUMNS))
def test_each_entity_table_holds_its_record(table: str) -> None:
    kind = next(k for k in ENTITY_FIELDS if table.startswith(f"{k}s"))
    columns = _cql_columns()[table]
    assert set(ENTITY_FIELDS[kind]) <= columns
    assert _statement_columns(table) == columns


def test_the_arrow_layout_is_the_records_fields() -> None:
    assert tuple(TRANSACTION_SCHEMA.names) == TRANSACTION_FIELDS
    assert {k: tuple(s.names) for k, s in ENTITY_SCHEMAS.items()} == {
        f"{kind}s": fields for kind, fields in ENTITY_FIELDS.items()}
    assert set(SCORE_FIELDS) <= set(SCORED_SCHEMA.names)
