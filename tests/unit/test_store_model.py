"""The store's pure parts: migrations parsing, table fan-out, keys, tokens, entity checks."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from cassandra import cqltypes

from fraud_detection.io.cassandra import EncodedRows, serialized_column
from fraud_detection.records import (
    Account,
    ScoredTransaction,
    Transaction,
    User,
    validate_entity,
)
from fraud_detection.store import keyspace, queries, tables

TX = Transaction(
    transaction_id="t-1", event_time=dt.datetime(2024, 3, 5, 10, 0, 0, 123456, tzinfo=dt.UTC),
    bank_id="bank-01", user_id="u-1", account_id="a-1", counterparty_id="m-1",
    counterparty_type="merchant", tx_type="PAYMENT", amount_cents=1250, currency="EUR",
    balance_before_cents=5000, balance_after_cents=3750, label="legit", source="test")


def test_schema_file_parses_into_numbered_migrations_that_only_add() -> None:
    found = keyspace.migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    for migration in found:
        for statement in migration.statements:
            assert statement.upper().startswith(("CREATE TABLE IF NOT EXISTS", "ALTER TABLE",
                                                 "CREATE INDEX IF NOT EXISTS"))
            assert "DROP" not in statement.upper()
    tables_created = {s.split()[5] for m in found for s in m.statements
                      if s.upper().startswith("CREATE TABLE")}
    assert set(tables.STATEMENTS) <= tables_created


def test_misnumbered_migrations_are_refused() -> None:
    with pytest.raises(keyspace.SchemaError, match="numbered"):
        keyspace.migrations("-- migration 1: a\nCREATE TABLE IF NOT EXISTS a (k int PRIMARY KEY);\n"
                            "-- migration 3: c\nCREATE TABLE IF NOT EXISTS c (k int "
                            "PRIMARY KEY);")


def test_statements_are_qualified_with_the_keyspace() -> None:
    assert keyspace.qualify("SELECT a FROM banks WHERE x = ?", "ks") == \
        "SELECT a FROM ks.banks WHERE x = ?"
    assert keyspace.qualify("INSERT INTO banks (a) VALUES (?)", "ks").startswith(
        "INSERT INTO ks.banks")
    ddl = keyspace._in_keyspace("CREATE TABLE IF NOT EXISTS banks (k int PRIMARY KEY)", "ks")
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS ks.banks")


def test_replication_follows_the_settings() -> None:
    from fraud_detection.config import load_settings

    simple = keyspace.replication(load_settings({}))
    assert simple["class"].endswith("SimpleStrategy") and simple["replication_factor"] == "1"
    network = keyspace.replication(load_settings({"cassandra_datacenter": "dc1",
                                                  "cassandra_replication_factor": 3}))
    assert network["class"].endswith("NetworkTopologyStrategy") and network["dc1"] == "3"


def test_a_flagged_transaction_fans_out_to_every_table_and_its_balance() -> None:
    flagged = ScoredTransaction(TX, 0.8, True, ("rule r1: amount 12.50",))
    written = dict(tables.scored_transaction_rows(flagged))
    assert set(written) == {*tables.TRANSACTION_TABLES, "account_balances"}
    unflagged = dict(tables.scored_transaction_rows(ScoredTransaction(TX, 0.1, False)))
    assert set(unflagged) == set(written) - tables.FLAGGED_ONLY
    # Every statement binds exactly the values its row supplies.
    for table, values in written.items():
        assert tables.STATEMENTS[table].count("?") == len(values)


def test_balance_is_written_at_the_event_time_in_microseconds() -> None:
    table = "account_balances"
    values = dict(tables.scored_transaction_rows(ScoredTransaction(TX, 0.1, False)))[table]
    assert "USING TIMESTAMP ?" in tables.STATEMENTS[table]
    assert values[-1] == 1709632800123456 and values[1] == 3750


def test_a_transaction_without_a_stated_balance_writes_none() -> None:
    silent = dataclasses.replace(TX, balance_before_cents=None, balance_after_cents=None)
    written = dict(tables.scored_transaction_rows(ScoredTransaction(silent, 0.1, False)))
    assert set(written) == set(tables.TRANSACTION_TABLES) - tables.FLAGGED_ONLY


@pytest.mark.parametrize(("cql_type", "arrow_type", "values"), [
    (cqltypes.LongType, pa.int64(), [0, -1, 2**62, None, 1709632800123456]),
    (cqltypes.Int32Type, pa.int32(), [2024, -7, None, 2**31 - 1]),
    (cqltypes.DoubleType, pa.float64(), [0.0, -1.5, 0.123456, None, 1e300]),
    (cqltypes.BooleanType, pa.bool_(), [True, False, None]),
    (cqltypes.UTF8Type, pa.string(), ["t-1", "", None, "Zoë's café €"]),
    (cqltypes.DateType, pa.timestamp("ms", tz="UTC"),
     [dt.datetime(2024, 3, 5, 10, 0, 0, 123000, tzinfo=dt.UTC),
      dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC), None]),
    (cqltypes.SimpleDateType, pa.date32(),
     [dt.date(2024, 3, 5), dt.date(1969, 12, 31), dt.date(1900, 1, 1), None]),
    (cqltypes.lookup_casstype("ListType(UTF8Type)"), pa.list_(pa.string()),
     [[], ["rule r1: amount 12.50", "model m: 0.91"], None]),
])
def test_a_column_serializes_to_the_bytes_the_driver_binds(cql_type, arrow_type,
                                                           values) -> None:
    column = pa.array(values, type=arrow_type)
    expected = [None if v is None else cql_type.serialize(v, 4) for v in values]
    assert serialized_column(cql_type, column, 4) == expected


def _encoded(sizes: list[int], counts: list[int]) -> EncodedRows:
    """Records whose rows are one per count, each value the record's index."""
    records = np.repeat(np.arange(len(counts)), counts)
    added = [(True, b"q", (bytes([r]),)) for r in records.tolist()]
    return EncodedRows([""] * len(counts), [("t", records, added)], np.array(sizes),
                       np.array(counts))


def test_requests_take_consecutive_records_within_their_bytes_and_rows() -> None:
    encoded = _encoded([100, 100, 0, 100, 300, 100, 100], [2, 2, 0, 2, 5, 1, 1])
    spans = encoded.spans(max_bytes=250, max_rows=5)
    # A record over a bound goes alone; one without rows starts no request.
    assert spans == [(0, 2), (3, 4), (4, 5), (5, 7)]
    for start, stop in spans:
        rows = encoded.rows(start, stop)
        assert len(rows) <= 5 or stop - start == 1
    assert [v[0] for _, v in encoded.rows(0, 7)] == [bytes([r]) for r in
                                                      [0, 0, 1, 1, 3, 3, 4, 4, 4, 4, 4, 5, 6]]
    assert encoded.rows(2, 3) == []


def test_keys_are_stable_and_in_range() -> None:
    assert tables.bucket_of("a-1") == tables.bucket_of("a-1")
    assert all(0 <= tables.bucket_of(f"a-{i}") < tables.ENTITY_BUCKETS for i in range(500))
    shards = {tables.bucket_of(f"t-{i}", tables.BANK_DAY_SHARDS) for i in range(500)}
    assert shards == set(range(tables.BANK_DAY_SHARDS))


def test_entities_fan_out_to_their_lookup_tables() -> None:
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    user = User("u-1", "bank-01", "Ann", "ann@example.com", "GB", when)
    account = Account("a-1", "u-1", "bank-01", "checking", "GBP", when)
    assert [t for t, _ in tables.entity_rows(user)] == ["users", "users_by_bank"]
    assert [t for t, _ in tables.entity_rows(account)] == [
        "accounts", "accounts_by_user", "accounts_by_bank"]


def test_paging_tokens_belong_to_their_query() -> None:
    token = queries._encode({"q": "user:u-1", "g": 0, "t": 1, "id": "t-1"})
    assert queries._decode(token, "user:u-1")["id"] == "t-1"
    with pytest.raises(queries.PagingError, match="another query"):
        queries._decode(token, "user:u-2")
    with pytest.raises(queries.PagingError):
        queries._decode("not a token!", "user:u-1")
    with pytest.raises(queries.PagingError, match="page size"):
        queries._page_size(0)


@pytest.mark.parametrize(("kind", "raw", "error"), [
    ("bank", {"bank_id": "b", "name": "B", "country": "gb", "currency": "GBP"}, "country"),
    ("bank", {"bank_id": "b", "name": "B", "country": "GB", "currency": "XXX"}, "currency"),
    ("user", {"user_id": "u", "bank_id": "b", "name": "N", "email": "nope", "country": "GB",
              "created_at": "2024-01-01T00:00:00Z"}, "email"),
    ("account", {"account_id": "a", "user_id": "u", "bank_id": "b", "account_type": "gold",
                 "currency": "GBP", "opened_at": "2024-01-01T00:00:00Z"}, "account_type"),
    ("account", {"account_id": "a"}, "user_id: missing"),
    ("merchant", {"merchant_id": "m", "name": "M", "category": "c", "country": "US",
                  "extra": 1}, "unknown fields"),
    ("planet", {}, "kind"),
])
def test_entity_validation_names_each_problem(kind: str, raw: dict, error: str) -> None:
    entity, errors = validate_entity(kind, raw)
    assert entity is None and any(error in e for e in errors), errors


def test_a_valid_entity_becomes_its_record() -> None:
    entity, errors = validate_entity("user", {
        "user_id": "u", "bank_id": "b", "name": "N", "email": "n@example.com", "country": "GB",
        "created_at": "2024-01-01T00:00:00Z"})
    assert errors == [] and isinstance(entity, User)
    assert entity.created_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
