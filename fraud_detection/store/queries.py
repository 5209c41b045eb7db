"""One read per user story, each a partition read with a prepared statement.

Lists of transactions come newest first in pages. A page's token is an opaque cursor
(the last row's clustering key and which partition it came from), so the next page is
a range read from there: no driver paging state to keep, and the same token works
when a list spans several partitions (years, a day's shards, every bank).
"""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cassandra.util import Date

from fraud_detection.records import (
    EARLIEST_EVENT_TIME,
    SCORE_FIELDS,
    TRANSACTION_FIELDS,
    Account,
    Bank,
    DeadLetter,
    Merchant,
    ScoredTransaction,
    Transaction,
    User,
    epoch_micros,
    from_epoch_micros,
)
from fraud_detection.store.keyspace import Store
from fraud_detection.store.tables import (
    BANK_DAY_SHARDS,
    ENTITY_BUCKETS,
    ENTITY_COLUMNS,
    TRANSACTION_TABLES,
    TX_COLUMNS,
)

T = TypeVar("T")
UTC = dt.UTC
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 5000


class PagingError(ValueError):
    pass


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    token: str | None  # None: this was the last page


@dataclass(frozen=True)
class AccountBalance:
    account_id: str
    balance_cents: int
    currency: str
    as_of: dt.datetime
    transaction_id: str


@dataclass(frozen=True)
class StoredDeadLetter:
    letter: DeadLetter
    received_at: dt.datetime
    id: str


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- decoding rows into records ------------------------------------------------------

_TX_SELECT = ", ".join(TX_COLUMNS)


def _scored(row) -> ScoredTransaction:
    values = {name: getattr(row, name) for name in (*TRANSACTION_FIELDS, *SCORE_FIELDS)}
    # The exact time, not Cassandra's milliseconds; empty collections come back as None.
    values.update(event_time=from_epoch_micros(row.event_time_us),
                  source=row.source or "", source_flagged=bool(row.source_flagged),
                  flagged=bool(row.flagged), reasons=tuple(row.reasons or ()),
                  late=bool(row.late), model_version=row.model_version or "")
    tx = Transaction(**{name: values[name] for name in TRANSACTION_FIELDS})
    return ScoredTransaction(tx, **{name: values[name] for name in SCORE_FIELDS})


def _entity(kind: type, row) -> Any:
    values = row._asdict()
    for name in ("created_at", "opened_at"):
        if name in values:
            values[name] = _utc(values[name])
    values.pop("bucket", None)
    return kind(**values)


# -- paging tokens -------------------------------------------------------------------

def _encode(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def _decode(token: str | None, query: str) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise PagingError("paging token is not one this query returned") from None
    if not isinstance(cursor, dict) or cursor.get("q") != query:
        raise PagingError("paging token belongs to another query")
    return cursor


def _page_size(size: int) -> int:
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise PagingError(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    return size


def _ms(moment: dt.datetime) -> int:
    return epoch_micros(_utc(moment)) // 1000


def _newest_first(store: Store, table: str, query: str, groups: Sequence[Sequence[tuple]],
                  page_size: int, token: str | None) -> Page[ScoredTransaction]:
    """Walks groups of partitions in order; within a group the partitions are merged
    newest first. `groups` holds each partition's key values in key order."""
    size = _page_size(page_size)
    partition_key = [c for c in TRANSACTION_TABLES[table] if c not in ("event_time",
                                                                       "transaction_id")]
    where = " AND ".join(f"{c} = ?" for c in partition_key)
    first = f"SELECT {_TX_SELECT} FROM {table} WHERE {where} LIMIT ?"
    after = (f"SELECT {_TX_SELECT} FROM {table} WHERE {where} "
             "AND (event_time, transaction_id) < (?, ?) LIMIT ?")
    cursor = _decode(token, query)
    group_index = cursor["g"] if cursor else 0
    items: list[ScoredTransaction] = []
    last: tuple[dt.datetime, str, int] | None = None
    while group_index < len(groups) and len(items) < size:
        wanted = size - len(items)
        runs = []
        for key in groups[group_index]:
            if cursor and cursor["g"] == group_index:
                moment = dt.datetime.fromtimestamp(cursor["t"] / 1000, tz=UTC)
                rows = store.execute(after, (*key, moment, cursor["id"], wanted), wanted)
            else:
                rows = store.execute(first, (*key, wanted), wanted)
            runs.append([(_ms(r.event_time), r.transaction_id, r) for r in rows])
        merged = heapq.merge(*runs, key=lambda item: (item[0], item[1]), reverse=True)
        taken = [item for _, item in zip(range(wanted), merged, strict=False)]
        items.extend(_scored(row) for _, _, row in taken)
        if taken:
            last = (taken[-1][0], taken[-1][1], group_index)
        if len(items) < size:
            group_index += 1
    if len(items) < size or last is None:
        # Fewer than asked: every partition is exhausted. A full page may be the last
        # too; the next call then returns an empty page without a token.
        return Page(items, None)
    return Page(items, _encode({"q": query, "g": last[2], "t": last[0], "id": last[1]}))


def _years(since: dt.datetime | None, until: dt.datetime | None) -> list[int]:
    newest = (until or dt.datetime.now(UTC)).year + 1  # clocks and time zones drift
    oldest = (since or EARLIEST_EVENT_TIME).year
    return list(range(newest, oldest - 1, -1))


# -- customer ------------------------------------------------------------------------

def user(store: Store, user_id: str) -> User | None:
    row = store.execute(f"SELECT {', '.join(ENTITY_COLUMNS['users'])} FROM users "
                        "WHERE user_id = ?", (user_id,)).one()
    return None if row is None else _entity(User, row)


def accounts_of_user(store: Store, user_id: str) -> list[Account]:
    columns = ENTITY_COLUMNS["accounts"]
    rows = store.execute(f"SELECT {', '.join(columns)} FROM accounts_by_user "
                         "WHERE user_id = ?", (user_id,))
    return [_entity(Account, row) for row in rows]


def account(store: Store, account_id: str) -> Account | None:
    row = store.execute(f"SELECT {', '.join(ENTITY_COLUMNS['accounts'])} FROM accounts "
                        "WHERE account_id = ?", (account_id,)).one()
    return None if row is None else _entity(Account, row)


def transactions_of_user(store: Store, user_id: str, page_size: int = DEFAULT_PAGE_SIZE,
                         token: str | None = None) -> Page[ScoredTransaction]:
    found = user(store, user_id)
    years = _years(found.created_at if found else None, None)
    return _newest_first(store, "transactions_by_user", f"user:{user_id}",
                         [[(user_id, y)] for y in years], page_size, token)


def transactions_of_account(store: Store, account_id: str, page_size: int = DEFAULT_PAGE_SIZE,
                            token: str | None = None) -> Page[ScoredTransaction]:
    found = account(store, account_id)
    years = _years(found.opened_at if found else None, None)
    return _newest_first(store, "transactions_by_account", f"account:{account_id}",
                         [[(account_id, y)] for y in years], page_size, token)


def anomalies_of_user(store: Store, user_id: str, page_size: int = DEFAULT_PAGE_SIZE,
                      token: str | None = None) -> Page[ScoredTransaction]:
    return _newest_first(store, "anomalies_by_user", f"anomalies:{user_id}",
                         [[(user_id,)]], page_size, token)


def transaction(store: Store, transaction_id: str) -> ScoredTransaction | None:
    row = store.execute(f"SELECT {_TX_SELECT} FROM transactions WHERE transaction_id = ?",
               (transaction_id,)).one()
    return None if row is None else _scored(row)


def balance(store: Store, account_id: str) -> AccountBalance | None:
    row = store.execute("SELECT account_id, balance_cents, currency, as_of_us, transaction_id "
                        "FROM account_balances WHERE account_id = ?", (account_id,)).one()
    if row is None:
        return None
    as_of = from_epoch_micros(row.as_of_us)
    return AccountBalance(row.account_id, row.balance_cents, row.currency, as_of,
                          row.transaction_id)


# -- bank ----------------------------------------------------------------------------

def bank(store: Store, bank_id: str) -> Bank | None:
    row = store.execute(f"SELECT {', '.join(ENTITY_COLUMNS['banks'])} FROM banks "
                        "WHERE bank_id = ?", (bank_id,)).one()
    return None if row is None else _entity(Bank, row)


def banks(store: Store) -> list[Bank]:
    # A handful of rows: the one table read whole.
    rows = store.execute(f"SELECT {', '.join(ENTITY_COLUMNS['banks'])} FROM banks")
    return sorted((_entity(Bank, row) for row in rows), key=lambda b: b.bank_id)


def merchant(store: Store, merchant_id: str) -> Merchant | None:
    row = store.execute(f"SELECT {', '.join(ENTITY_COLUMNS['merchants'])} FROM merchants "
                        "WHERE merchant_id = ?", (merchant_id,)).one()
    return None if row is None else _entity(Merchant, row)


def _bucketed(store: Store, table: str, id_column: str, kind: type, bank_id: str, page_size: int,
              token: str | None) -> Page:
    size = _page_size(page_size)
    columns = ", ".join(c for c in ENTITY_COLUMNS[table] if c != "bucket")
    query = f"{table}:{bank_id}"
    cursor = _decode(token, query)
    bucket, after_id = (cursor["b"], cursor["id"]) if cursor else (0, None)
    items: list = []
    last: tuple[int, str] | None = None
    while bucket < ENTITY_BUCKETS and len(items) < size:
        wanted = size - len(items)
        if after_id is None:
            rows = store.execute(f"SELECT {columns} FROM {table} WHERE bank_id = ? "
                                 "AND bucket = ? LIMIT ?", (bank_id, bucket, wanted), wanted)
        else:
            rows = store.execute(f"SELECT {columns} FROM {table} WHERE bank_id = ? "
                                 f"AND bucket = ? AND {id_column} > ? LIMIT ?",
                        (bank_id, bucket, after_id, wanted), wanted)
        found = [_entity(kind, row) for row in rows]
        items.extend(found)
        if found:
            last = (bucket, getattr(found[-1], id_column))
        if len(items) < size:
            bucket, after_id = bucket + 1, None
    if len(items) < size or last is None:
        return Page(items, None)
    return Page(items, _encode({"q": query, "b": last[0], "id": last[1]}))


def accounts_of_bank(store: Store, bank_id: str, page_size: int = DEFAULT_PAGE_SIZE,
                     token: str | None = None) -> Page[Account]:
    return _bucketed(store, "accounts_by_bank", "account_id", Account, bank_id, page_size,
                     token)


def users_of_bank(store: Store, bank_id: str, page_size: int = DEFAULT_PAGE_SIZE,
                  token: str | None = None) -> Page[User]:
    return _bucketed(store, "users_by_bank", "user_id", User, bank_id, page_size, token)


def bank_transactions_on(store: Store, bank_id: str, day: dt.date,
                         page_size: int = DEFAULT_PAGE_SIZE,
                         token: str | None = None) -> Page[ScoredTransaction]:
    date = Date(day)
    shards = [(bank_id, date, shard) for shard in range(BANK_DAY_SHARDS)]
    return _newest_first(store, "transactions_by_bank_day", f"bank:{bank_id}:{day}",
                         [shards], page_size, token)


def bank_frauds_on(store: Store, bank_id: str, day: dt.date, page_size: int = DEFAULT_PAGE_SIZE,
                   token: str | None = None) -> Page[ScoredTransaction]:
    date = Date(day)
    return _newest_first(store, "fraud_by_bank_day", f"fraud:{bank_id}:{day}",
                         [[(bank_id, date)]], page_size, token)


# -- fraud detector ------------------------------------------------------------------

def all_transactions_on(store: Store, day: dt.date, page_size: int = DEFAULT_PAGE_SIZE,
                        token: str | None = None) -> Page[ScoredTransaction]:
    """Every bank's transactions of a day, merged newest first."""
    date = Date(day)
    partitions = [(b.bank_id, date, shard) for b in banks(store)
                  for shard in range(BANK_DAY_SHARDS)]
    return _newest_first(store, "transactions_by_bank_day", f"all:{day}", [partitions],
                         page_size, token)


def dead_letters_on(store: Store, source: str, day: dt.date, page_size: int = DEFAULT_PAGE_SIZE,
                    token: str | None = None) -> Page[StoredDeadLetter]:
    size = _page_size(page_size)
    query = f"dead:{source}:{day}"
    cursor = _decode(token, query)
    date = Date(day)
    columns = "received_at, id, errors, raw"
    if cursor:
        moment = dt.datetime.fromtimestamp(cursor["t"] / 1000, tz=UTC)
        rows = store.execute(f"SELECT {columns} FROM dead_letters WHERE source = ? AND day = ? "
                             "AND (received_at, id) < (?, ?) LIMIT ?",
                    (source, date, moment, cursor["id"], size), size)
    else:
        rows = store.execute(f"SELECT {columns} FROM dead_letters WHERE source = ? AND day = ? "
                             "LIMIT ?", (source, date, size), size)
    items = [StoredDeadLetter(DeadLetter(source, tuple(r.errors or ()), r.raw),
                              _utc(r.received_at), r.id) for r in rows]
    if len(items) < size:
        return Page(items, None)
    return Page(items, _encode({"q": query, "t": _ms(items[-1].received_at),
                                "id": items[-1].id}))


@dataclass(frozen=True)
class StoredBenford:
    scope: str
    key: str
    window_start: dt.date
    window_end: dt.date
    n: int
    level: str
    first_mad: float
    first_observed: list[float]
    first_expected: list[float]
    first_two_mad: float
    first_two_level: str


def benford_reports(store: Store, scope: str, key: str, limit: int = 12) -> list[StoredBenford]:
    """A bank's or an account's Benford reports, newest window first."""
    from fraud_detection.transforms.benford import EXPECTED_FIRST

    rows = store.execute("SELECT window_start, window_end, n, level, first_mad, first_observed, "
                         "first_two_mad, first_two_level FROM benford_reports "
                         "WHERE scope = ? AND key = ? LIMIT ?", (scope, key, limit))
    return [StoredBenford(scope, key, r.window_start.date(), r.window_end.date(), r.n, r.level,
                          r.first_mad, list(r.first_observed or ()),
                          [float(x) for x in EXPECTED_FIRST], r.first_two_mad,
                          r.first_two_level) for r in rows]


def collect(fetch: Callable[..., Page[T]], *args: Any, page_size: int = 1000) -> list[T]:
    """Every item of a paged query (for tests, exports and small lists)."""
    items: list[T] = []
    token = None
    while True:
        page = fetch(*args, page_size=page_size, token=token)
        items.extend(page.items)
        token = page.token
        if token is None:
            return items


def table_contents(store: Store, table: str) -> list[tuple]:
    """Every row of one of our tables, in a stable order: for comparing whole tables
    (idempotency checks, runner parity). Reads the whole table; not for serving."""
    if table not in {*TRANSACTION_TABLES, *ENTITY_COLUMNS, "account_balances", "dead_letters",
                     "benford_reports", "rules"}:
        raise ValueError(f"not a table of ours: {table!r}")
    rows = store.execute(f"SELECT * FROM {table}", fetch_size=5000)
    return sorted((tuple(row) for row in rows), key=repr)


def latest_activity_day(store: Store, sample: int = 1000) -> dt.date | None:
    """The newest day among a sample of account balances: a default day for screens that
    show one day (the data may be a replay of another year)."""
    rows = store.execute("SELECT as_of_us FROM account_balances LIMIT ?", (sample,))
    newest = max((r.as_of_us for r in rows if r.as_of_us is not None), default=None)
    return None if newest is None else from_epoch_micros(newest).date()


# -- dashboard: finding a user, analysts' verdicts -----------------------------------

def search_users(store: Store, text: str, limit: int = 20,
                 scan_limit: int = 20_000) -> list[User]:
    """Users whose id, name or e-mail holds `text` (any case), by name; with no text,
    the first users found. An exact user id is always found; other matches are looked
    for among the first `scan_limit` users only, since nothing indexes names."""
    wanted = text.strip().lower()
    exact = user(store, text.strip()) if wanted else None
    found = [exact] if exact else []
    columns = ", ".join(ENTITY_COLUMNS["users"])
    rows = store.execute(f"SELECT {columns} FROM users LIMIT ?", (scan_limit,),
                         fetch_size=1000)
    for row in rows:
        if len(found) >= limit:
            break
        if wanted in f"{row.user_id}\n{row.name}\n{row.email or ''}".lower() and (
                exact is None or row.user_id != exact.user_id):
            found.append(_entity(User, row))
    return sorted(found, key=lambda u: (u.name.lower(), u.user_id))


def verdicts_of(store: Store, transaction_ids: Sequence[str]) -> dict[str, Any]:
    """Analysts' verdicts (labels.Verdict) on these transactions, by transaction id; a
    transaction nobody judged has none."""
    from fraud_detection.store.labels import Verdict

    found: dict[str, Verdict] = {}
    ids = list(dict.fromkeys(transaction_ids))
    for start in range(0, len(ids), 100):  # one request per hundred ids
        rows = store.execute("SELECT transaction_id, verdict, label, analyst, labelled_at, "
                             "counterparty_id, transaction_time FROM labels "
                             "WHERE transaction_id IN ?", (ids[start:start + 100],))
        for r in rows:
            found[r.transaction_id] = Verdict(
                r.transaction_id, r.verdict, r.label, r.analyst, _utc(r.labelled_at),
                r.counterparty_id, _utc(r.transaction_time))
    return found


def bank_flagged_with_verdicts_on(store: Store, bank_id: str, day: dt.date
                                  ) -> list[tuple[ScoredTransaction, Any]]:
    """A bank's flagged transactions of a day, newest first, each with its analyst's
    verdict or None. The confirmed ones are the bank's confirmed frauds: analysts judge
    only flagged transactions (the alert queue)."""
    flagged = collect(bank_frauds_on, store, bank_id, day)
    verdicts = verdicts_of(store, [s.transaction.transaction_id for s in flagged])
    return [(s, verdicts.get(s.transaction.transaction_id)) for s in flagged]
