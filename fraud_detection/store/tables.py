"""How records become rows: the upserts the sink prepares, and each record's fan-out.

Transaction rows carry the whole scored transaction into every table that serves a
query. Balances are written USING TIMESTAMP = event time, so the latest event wins
whatever order writes arrive in. Transaction rows take the write's own timestamp, so
re-scoring a day after a rule or model change replaces the old score (an equal
timestamp would leave the larger value, not the newer one); replaying the same input
still leaves the same content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cassandra.util import Date

from fraud_detection.records import (
    ENTITY_FIELDS,
    SCORE_FIELDS,
    TRANSACTION_FIELDS,
    Account,
    Bank,
    DeadLetter,
    Merchant,
    ScoredTransaction,
    User,
)
from fraud_detection.transforms.benford import BenfordReport
from fraud_detection.transforms.kernel import DAY_MICROS, POSITION, scored_table

# Fixed for the life of a keyspace: readers compute the same buckets.
BANK_DAY_SHARDS = 8
ENTITY_BUCKETS = 16

RowWrite = tuple[str, tuple]

# A transaction's who and when, which tables key on; event_time_us keeps the exact time
# beside Cassandra's millisecond event_time.
_TX_KEYS = ("transaction_id", "event_time", "bank_id", "user_id", "account_id")
# Transaction columns in every transaction table, after the table's own key columns.
TX_FACTS = tuple(name for name in TRANSACTION_FIELDS if name not in _TX_KEYS)
TX_SCORE = SCORE_FIELDS
# Every column of a transaction table: what the readers select.
TX_COLUMNS = (*_TX_KEYS[:2], "event_time_us", *_TX_KEYS[2:], *TX_FACTS, *TX_SCORE)

# Each transaction table: its key columns (partition then clustering) in insert order.
TRANSACTION_TABLES: dict[str, tuple[str, ...]] = {
    "transactions": ("transaction_id",),
    "transactions_by_account": ("account_id", "year", "event_time", "transaction_id"),
    "transactions_by_user": ("user_id", "year", "event_time", "transaction_id"),
    "transactions_by_bank_day": ("bank_id", "day", "shard", "event_time", "transaction_id"),
    "fraud_by_bank_day": ("bank_id", "day", "event_time", "transaction_id"),
    "anomalies_by_user": ("user_id", "event_time", "transaction_id"),
}
FLAGGED_ONLY = frozenset({"fraud_by_bank_day", "anomalies_by_user"})


def _columns(table: str) -> tuple[str, ...]:
    key = TRANSACTION_TABLES[table]
    return (*key, *(c for c in TX_COLUMNS if c not in key))


def _insert(table: str, columns: Iterable[str], suffix: str = "") -> str:
    columns = tuple(columns)
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)}){suffix}")


def _keyed(kind: str, *key: str) -> tuple[str, ...]:
    """An entity table's columns: its key columns, then the record's other fields."""
    return (*key, *(name for name in ENTITY_FIELDS[kind] if name not in key))


# Each kind's primary table (the plural) is its fields in order; the others lead with
# their keys. bucket: the entity id's hash bucket (bucket_of).
ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {
    **{f"{kind}s": ENTITY_FIELDS[kind] for kind in ENTITY_FIELDS},
    "users_by_bank": _keyed("user", "bank_id", "bucket", "user_id"),
    "accounts_by_user": _keyed("account", "user_id", "account_id"),
    "accounts_by_bank": _keyed("account", "bank_id", "bucket", "account_id"),
}
BALANCE_COLUMNS = ("account_id", "balance_cents", "currency", "as_of", "as_of_us",
                   "transaction_id")
DEAD_LETTER_COLUMNS = ("source", "day", "received_at", "id", "errors", "raw")
BENFORD_COLUMNS = ("scope", "key", "window_start", "window_end", "n", "first_mad",
                   "first_chi_square", "first_level", "first_observed", "first_two_mad",
                   "first_two_chi_square", "first_two_level", "first_two_observed", "level")

STATEMENTS: dict[str, str] = {
    **{table: _insert(table, _columns(table)) for table in TRANSACTION_TABLES},
    **{table: _insert(table, columns) for table, columns in ENTITY_COLUMNS.items()},
    "account_balances": _insert("account_balances", BALANCE_COLUMNS, " USING TIMESTAMP ?"),
    "dead_letters": _insert("dead_letters", DEAD_LETTER_COLUMNS),
    "benford_reports": _insert("benford_reports", BENFORD_COLUMNS),
}


def bucket_of(entity_id: str, buckets: int = ENTITY_BUCKETS) -> int:
    # crc32, not hash(): Python salts str hashes per process.
    return zlib.crc32(entity_id.encode()) % buckets


def day_of(moment: dt.datetime) -> Date:
    return Date(moment.astimezone(dt.UTC).date())


def _ms(moment: dt.datetime) -> dt.datetime:
    # Cassandra timestamps hold milliseconds; the key must be what a read returns.
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


_TABLE_COLUMNS = {table: _columns(table) for table in TRANSACTION_TABLES}


@dataclass(frozen=True)
class TableRows:
    """A batch of records' rows, column-wise: per statement, the records that write a row
    to it (in order) and its bound values as Arrow columns over every record. The sink
    serializes a column once for all the statements that bind it."""

    positions: list[str]  # per record: where it was read, "" if unknown
    statements: list[tuple[str, np.ndarray, list[pa.Array]]]


def scored_table_rows(table: pa.Table) -> TableRows:
    """Scored transactions (kernel.SCORED_SCHEMA) -> every row they write: one per
    table that serves a query about the transaction (the flagged-only ones for flagged
    transactions only), and the account's balance where the transaction states it."""
    n = table.num_rows
    micros = table["event_time"].combine_chunks().cast(pa.int64()).to_numpy()
    ids = table["transaction_id"].combine_chunks()
    values = {name: table[name].combine_chunks()
              for name in ("transaction_id", "bank_id", "user_id", "account_id", *TX_FACTS,
                           *TX_SCORE)}
    event_time = pa.array(np.floor_divide(micros, 1000), pa.timestamp("ms", tz="UTC"))
    values.update(
        event_time=event_time, event_time_us=pa.array(micros, pa.int64()),
        year=pc.year(event_time).cast(pa.int32()),
        day=pa.array(np.floor_divide(micros, DAY_MICROS).astype(np.int32), pa.date32()),
        shard=pa.array([bucket_of(i, BANK_DAY_SHARDS) for i in ids.to_pylist()], pa.int32()),
        balance_cents=values["balance_after_cents"], as_of=event_time)
    values["as_of_us"] = values["event_time_us"]
    everyone = np.arange(n)
    flagged = np.flatnonzero(values["flagged"].fill_null(False).to_numpy(zero_copy_only=False))
    stated = np.flatnonzero(values["balance_after_cents"].is_valid().to_numpy(
        zero_copy_only=False))
    statements = [(name, flagged if name in FLAGGED_ONLY else everyone,
                   [values[c] for c in columns]) for name, columns in _TABLE_COLUMNS.items()]
    statements.append(("account_balances", stated,
                       [values[c] for c in (*BALANCE_COLUMNS, "event_time_us")]))
    positions = (table[POSITION].combine_chunks().fill_null("").to_pylist()
                 if POSITION in table.column_names else [""] * n)
    return TableRows(positions, [s for s in statements if len(s[1])])


def scored_transaction_rows(scored: ScoredTransaction) -> list[RowWrite]:
    """Everything one scored transaction writes, as values: scored_table_rows for one."""
    rows = scored_table_rows(scored_table([scored]))
    return [(name, tuple(column[0].as_py() for column in columns))
            for name, _, columns in rows.statements]


# Each entity type's kind, and the tables its rows go to.
_ENTITY_TABLES = {Bank: ("bank", ("banks",)),
                  User: ("user", ("users", "users_by_bank")),
                  Account: ("account", ("accounts", "accounts_by_user", "accounts_by_bank")),
                  Merchant: ("merchant", ("merchants",))}


def entity_rows(entity: Bank | User | Account | Merchant) -> list[RowWrite]:
    """An entity's row in each table that serves it, in ENTITY_COLUMNS' order."""
    if type(entity) not in _ENTITY_TABLES:
        raise TypeError(f"not an entity: {type(entity).__name__}")
    kind, tables = _ENTITY_TABLES[type(entity)]
    values = {name: getattr(entity, name) for name in ENTITY_FIELDS[kind]}
    for name, value in values.items():
        if isinstance(value, dt.datetime):
            values[name] = _ms(value)
    values["bucket"] = bucket_of(values[f"{kind}_id"])
    return [(table, tuple(values[c] for c in ENTITY_COLUMNS[table])) for table in tables]


def dead_letter_id(letter: DeadLetter) -> str:
    """Stable for the same record from the same source, so a replay writes one row."""
    key = f"{letter.source}\0{letter.raw}"
    if letter.position:  # two equal bad messages at two offsets are two dead letters
        key += f"\0{letter.position}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def dead_letter_row(letter: DeadLetter, received_at: dt.datetime | None = None) -> RowWrite:
    """received_at: when the letter's own time (letter.received_at) is unknown."""
    received_at = letter.received_at or received_at
    if received_at is None:
        raise ValueError("a dead letter needs a received_at")
    return ("dead_letters", (letter.source, day_of(received_at), _ms(received_at),
                             dead_letter_id(letter), list(letter.errors), letter.raw))


def benford_row(report: BenfordReport) -> RowWrite:
    first, two = report.first, report.first_two
    return ("benford_reports", (
        report.scope, report.key, Date(dt.date.fromisoformat(report.window_start)),
        Date(dt.date.fromisoformat(report.window_end)), first.n, first.mad, first.chi_square,
        first.level, list(first.observed), two.mad, two.chi_square, two.level,
        list(two.observed), report.level))


def clear_flags_of_day(store, day: dt.date, bank_ids: Iterable[str],
                       user_ids: Iterable[str]) -> None:
    """Removes a day's rows from the flagged-only tables (before re-scoring it), with one
    partition delete per bank and one range delete per user."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1)
    for bank_id in sorted(set(bank_ids)):
        store.execute("DELETE FROM fraud_by_bank_day WHERE bank_id = ? AND day = ?",
                      (bank_id, Date(day)))
    for user_id in sorted(set(user_ids)):
        store.execute("DELETE FROM anomalies_by_user WHERE user_id = ? AND event_time >= ? "
                      "AND event_time < ?", (user_id, start, end))
