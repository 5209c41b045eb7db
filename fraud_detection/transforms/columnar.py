"""DetectFraud over Arrow tables: the batch path, vectorised with numpy.

Computes exactly what the per-element path computes (AccountHistory, CounterpartyHistory,
rules, the model and the decision) for transactions processed in event-time order, but
a column at a time over an account's whole history. The parity tests hold the two
paths to identical scores and reasons.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraud_detection.io.parquet import TRANSACTION_SCHEMA, transactions_table
from fraud_detection.model import MODEL_FEATURES
from fraud_detection.records import (
    COUNTERPARTY_TYPES,
    CREDIT_TX_TYPES,
    LEGIT,
    TX_TYPES,
    ScoredTransaction,
    Transaction,
)
from fraud_detection.transforms.benford import MIN_SAMPLE as BENFORD_MIN_SAMPLE
from fraud_detection.transforms.benford import NONCONFORMITY, first_digit_counts, result_from_counts
from fraud_detection.transforms.counterparty import (
    DELAY_DAYS,
    MIN_TRANSACTIONS,
    NO_RISK_TYPES,
    WINDOW_DAYS,
)
from fraud_detection.transforms.features import (
    BENFORD_WINDOW_DAYS,
    FEATURE_NAMES,
    MAX_COUNTERPARTIES,
    MIN_HISTORY_FOR_ZSCORE,
    RECENT_AMOUNTS,
    WINDOWS_HOURS,
)
from fraud_detection.transforms.rules import _OPS, Rule, RuleHit
from fraud_detection.transforms.score import hit_text

HOUR_MICROS = 3_600_000_000
DAY_MICROS = 24 * HOUR_MICROS
SCORE_FIELDS = [("score", pa.float64()), ("flagged", pa.bool_()),
                ("reasons", pa.list_(pa.string())), ("late", pa.bool_()),
                ("model_version", pa.string())]
SCORED_SCHEMA = pa.schema([*TRANSACTION_SCHEMA, *SCORE_FIELDS])
FEATURE_TABLE_SCHEMA = pa.schema([
    ("transaction_id", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")),
    ("account_id", pa.string()),
    ("label", pa.string()),
    ("amount_cents", pa.int64()),
    ("rules_score", pa.float64()),
    *((name, pa.float64()) for name in MODEL_FEATURES),
])
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)


def round6(values: np.ndarray) -> np.ndarray:
    """Python's round(v, 6) for every value, exactly, without a Python call per value.

    rint(v * 1e6) / 1e6 is the same float as round(v, 6) whenever v * 1e6 is not within
    its own rounding error of a half; those few, and values too large to have a sixth
    decimal, go through round itself.
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values * 1e6
        out = np.rint(scaled) / 1e6
        fraction = np.abs(scaled - np.trunc(scaled))
        doubtful = (np.abs(fraction - 0.5) <= 4 * np.spacing(np.abs(scaled))) \
            | ~(np.abs(scaled) < 2.0**52)
    for i in np.flatnonzero(doubtful).tolist():
        out[i] = round(float(values[i]), 6)
    return out


def table_of(transactions: Sequence[Transaction]) -> pa.Table:
    return transactions_table({name: [getattr(t, name) for t in transactions]
                               for name in TRANSACTION_SCHEMA.names})


def in_account_order(table: pa.Table) -> pa.Table:
    """Sorted the way every path processes an account: by time, ties by id."""
    return table.take(pc.sort_indices(table, [("account_id", "ascending"),
                                              ("event_time", "ascending"),
                                              ("transaction_id", "ascending")]))


def _micros(table: pa.Table) -> np.ndarray:
    return table["event_time"].combine_chunks().cast(pa.int64()).to_numpy()


def _int_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    column = table[name].combine_chunks()
    return (column.fill_null(0).to_numpy().astype(np.int64),
            column.is_valid().to_numpy(zero_copy_only=False))


def _strings(table: pa.Table, name: str) -> np.ndarray:
    return table[name].combine_chunks().to_numpy(zero_copy_only=False)


def _account_starts(account: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's account (rows sorted by account)."""
    n = len(account)
    new = np.ones(n, dtype=bool)
    new[1:] = account[1:] != account[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def _robust_zscores(amount: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features.robust_zscore of each amount against up to RECENT_AMOUNTS before it in its
    account; `position` is the row's index within its account."""
    n = len(amount)
    z, ratio = np.zeros(n), np.ones(n)
    history = np.minimum(position, RECENT_AMOUNTS)
    values = amount.astype(np.float64)
    for length in np.unique(history[history >= MIN_HISTORY_FOR_ZSCORE]):
        rows = np.flatnonzero(history == length)
        windows = np.lib.stride_tricks.sliding_window_view(values, length)[rows - length]
        median = np.median(windows, axis=1)
        mad = np.median(np.abs(windows - median[:, None]), axis=1)
        scale = np.where(mad != 0, 1.4826 * mad, np.maximum(median * 0.1, 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            z[rows] = (values[rows] - median) / scale
            ratio[rows] = np.where(median != 0, values[rows] / median,
                                   (amount[rows] > 0) * 1e6)
    return round6(np.where(np.isfinite(z), z, 0.0)), round6(ratio)


def _new_counterparty(account: np.ndarray, counterparty: np.ndarray,
                      starts: np.ndarray) -> np.ndarray:
    pair = np.char.add(np.char.add(account.astype(str), "\x00"), counterparty.astype(str))
    _, first_seen = np.unique(pair, return_index=True)
    new = np.zeros(len(account), dtype=bool)
    new[first_seen] = True
    # An account with more counterparties than AccountHistory remembers: replay its
    # bounded memory exactly (rare, so a loop).
    distinct = np.bincount(starts[new], minlength=len(starts))
    for start in np.flatnonzero(distinct > MAX_COUNTERPARTIES).tolist():
        stop = start + int(np.count_nonzero(starts == start))
        known: OrderedDict = OrderedDict()
        for i in range(start, stop):
            new[i] = counterparty[i] not in known
            known[counterparty[i]] = None
            known.move_to_end(counterparty[i])
            while len(known) > MAX_COUNTERPARTIES:
                known.popitem(last=False)
    return new


def _benford_nonconforming(account_codes: np.ndarray, amount: np.ndarray,
                           micros: np.ndarray) -> np.ndarray:
    """The account's previous Benford window broke the first-digit test (AccountHistory's
    verdict: at least MIN_SAMPLE amounts of two digits or more)."""
    seconds = micros / 1e6
    window = np.floor_divide(seconds, BENFORD_WINDOW_DAYS * 86_400).astype(np.int64)
    has_prefix = amount >= 10
    digits = np.searchsorted(_POWERS_OF_TEN, amount, side="right")
    first = amount // _POWERS_OF_TEN[np.maximum(digits - 1, 0)]
    group = account_codes.astype(np.int64) * (1 << 32) + window
    keys, inverse, sizes = np.unique(group[has_prefix], return_inverse=True,
                                     return_counts=True)
    verdicts: dict[int, bool] = {}
    firsts = first[has_prefix]
    for index in np.flatnonzero(sizes >= BENFORD_MIN_SAMPLE):
        counts = np.zeros(100, dtype=np.int64)
        # first_digit_counts reads the two-digit counts: put each amount under d*10.
        np.add.at(counts, firsts[inverse == index] * 10, 1)
        level = result_from_counts(first_digit_counts(counts), 1).level
        verdicts[int(keys[index])] = level == NONCONFORMITY
    if not verdicts:
        return np.zeros(len(amount), dtype=bool)
    previous = (group - 1).tolist()
    return np.array([verdicts.get(g, False) for g in previous], dtype=bool)


def account_features(table: pa.Table) -> dict[str, np.ndarray]:
    """Features (all but counterparty_risk) of each row of a table in account order."""
    account = _strings(table, "account_id")
    account_codes = pc.dictionary_encode(table["account_id"]).combine_chunks() \
        .indices.to_numpy().astype(np.int64)
    micros = _micros(table)
    amount, _ = _int_column(table, "amount_cents")
    n = len(account)
    starts = _account_starts(account)
    index = np.arange(n)
    out: dict[str, np.ndarray] = {}
    hour = micros // HOUR_MICROS
    # Sorted by account then time, so a window is a searchsorted range of (account, hour).
    key = starts.astype(np.int64) * (1 << 32) + hour
    cumulative = np.concatenate([[0], np.cumsum(amount)])
    for name, hours in WINDOWS_HOURS.items():
        first = np.searchsorted(key, key - hours + 1, side="left")
        out[f"count_{name}"] = index - first
        out[f"amount_{name}"] = cumulative[index] - cumulative[first]
    out["amount_zscore"], out["amount_to_median"] = _robust_zscores(amount, index - starts)
    since = np.full(n, -1.0)
    later = index > starts
    since[later] = (micros[later] - micros[index[later] - 1]) / 1e6
    out["seconds_since_last"] = since
    out["new_counterparty"] = _new_counterparty(account, _strings(table, "counterparty_id"),
                                                starts)
    before, before_valid = _int_column(table, "balance_before_cents")
    after, after_valid = _int_column(table, "balance_after_cents")
    credit = np.isin(_strings(table, "tx_type"), list(CREDIT_TX_TYPES))
    expected = before + np.where(credit, amount, -amount)
    out["balance_mismatch"] = before_valid & after_valid & (expected != after)
    out["night"] = hour % 24 < 6
    out["weekend"] = (micros // DAY_MICROS + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    out["benford_nonconforming"] = _benford_nonconforming(account_codes, amount, micros)
    return out


def _epoch_day(micros: np.ndarray) -> np.ndarray:
    return micros // DAY_MICROS


def on_days(table: pa.Table, first: dt.date, last: dt.date) -> pa.Array:
    """Which rows have an event time (UTC) on a day from first to last."""
    day = _epoch_day(_micros(table))
    epoch = dt.date(1970, 1, 1)
    return pa.array((day >= (first - epoch).days) & (day <= (last - epoch).days))


def counterparty_days(table: pa.Table) -> pa.Table:
    """Transactions and frauds per counterparty and day, for counterparty risk. Cash
    counterparties carry no risk and are left out."""
    risky = table.filter(pc.invert(pc.is_in(table["counterparty_type"],
                                            pa.array(sorted(NO_RISK_TYPES)))))
    fraud = pc.and_(pc.is_valid(risky["label"]),
                    pc.not_equal(pc.fill_null(risky["label"], LEGIT), LEGIT))
    days = pa.table({"counterparty_id": risky["counterparty_id"],
                     "day": pa.array(_epoch_day(_micros(risky))),
                     "count": pa.array(np.ones(risky.num_rows, dtype=np.int64)),
                     "frauds": fraud.cast(pa.int64())})
    return sum_counterparty_days([days])


def sum_counterparty_days(tables: Sequence[pa.Table]) -> pa.Table:
    grouped = pa.concat_tables(tables).group_by(["counterparty_id", "day"]) \
        .aggregate([("count", "sum"), ("frauds", "sum")])
    return grouped.rename_columns(["counterparty_id", "day", "count", "frauds"])


def counterparty_risk(table: pa.Table, days: pa.Table, delay_days: int = DELAY_DAYS,
                      window_days: int = WINDOW_DAYS) -> np.ndarray:
    """CounterpartyHistory.risk for each row: the fraud share of the counterparty's
    transactions over window_days ending delay_days before the row's day."""
    days = days.sort_by([("counterparty_id", "ascending"), ("day", "ascending")])
    ids = days["counterparty_id"].combine_chunks()
    codes = pc.index_in(table["counterparty_id"], value_set=pc.unique(ids)).fill_null(-1) \
        .to_numpy().astype(np.int64)
    day_codes = pc.index_in(ids, value_set=pc.unique(ids)).to_numpy().astype(np.int64)
    key = day_codes * (1 << 32) + days["day"].to_numpy()
    count = np.concatenate([[0], np.cumsum(days["count"].to_numpy())])
    frauds = np.concatenate([[0], np.cumsum(days["frauds"].to_numpy())])
    newest = _epoch_day(_micros(table)) - delay_days
    lo = np.searchsorted(key, codes * (1 << 32) + newest - window_days, side="left")
    hi = np.searchsorted(key, codes * (1 << 32) + newest, side="left")
    n, f = count[hi] - count[lo], frauds[hi] - frauds[lo]
    risky = (codes >= 0) & ~np.isin(_strings(table, "counterparty_type"), list(NO_RISK_TYPES))
    share = np.where(risky & (n >= MIN_TRANSACTIONS), f / np.maximum(n, 1), 0.0)
    return round6(share)


def _column(table: pa.Table, features: Mapping[str, np.ndarray],
            name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, present) of a field a rule names; strings and other types as objects."""
    if name in features:
        values = features[name]
        return values, np.ones(len(values), dtype=bool)
    if name not in table.column_names:
        return None
    column = table[name].combine_chunks()
    present = column.is_valid().to_numpy(zero_copy_only=False)
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return column.fill_null(False if pa.types.is_boolean(kind) else 0) \
            .to_numpy(zero_copy_only=False), present
    if pa.types.is_string(kind):
        return column.to_numpy(zero_copy_only=False), present
    return np.array(column.to_pylist(), dtype=object), present


def _is_plain(value: Any) -> bool:
    return isinstance(value, int | float | bool | str)


def _leaf_mask(op_name: str, values: np.ndarray, present: np.ndarray, value: Any) -> np.ndarray:
    """rules._OPS[op_name](v, value) for every present v; False where Python would raise."""
    op = _OPS[op_name]
    numeric = values.dtype != object
    try:
        if op_name in ("==", "!=") and _is_plain(value) and (numeric or isinstance(value, str)):
            if numeric == isinstance(value, str):
                hit = np.full(len(values), op_name == "!=")
            else:
                hit = op(values, value)
            return present & np.asarray(hit, dtype=bool)
        if numeric and op_name in ("<", "<=", ">", ">=") and _is_plain(value) \
                and not isinstance(value, str):
            return present & op(values, value)
        if numeric and op_name == "multiple_of" and isinstance(value, int | float) \
                and not isinstance(value, bool) and value != 0:
            return present & (np.remainder(values, value) == 0)
        if numeric and op_name == "between" and all(
                _is_plain(v) and not isinstance(v, str) for v in value):
            return present & (value[0] <= values) & (values <= value[1])
        if op_name == "in" and isinstance(value, list | tuple | set) and all(
                _is_plain(v) for v in value):
            return present & np.isin(values, list(value))
    except TypeError:
        pass
    return np.array([ok and _leaf_hit(op, v, value)
                     for v, ok in zip(values.tolist(), present.tolist(), strict=True)],
                    dtype=bool)


class _Leaves:
    """The leaves of a rule's condition, numbered, so a row can say which one decided."""

    NOT = -2

    def __init__(self) -> None:
        self.fields: list[str] = []
        self.values: list[np.ndarray] = []


def _check(condition: Mapping[str, Any], table: pa.Table, features, leaves: _Leaves,
           n: int) -> np.ndarray:
    """rules._check over whole columns: the leaf that decided each true row, -1 if false."""
    if "all" in condition:
        parts = [_check(c, table, features, leaves, n) for c in condition["all"]]
        decided = parts[-1].copy()
        for part in parts:
            decided[part == -1] = -1
        return decided
    if "any" in condition:
        decided = np.full(n, -1, dtype=np.int64)
        for c in condition["any"]:
            part = _check(c, table, features, leaves, n)
            decided = np.where(decided == -1, part, decided)
        return decided
    if "not" in condition:
        inner = _check(condition["not"], table, features, leaves, n)
        return np.where(inner == -1, _Leaves.NOT, -1)
    column = _column(table, features, condition["field"])
    if column is None:
        return np.full(n, -1, dtype=np.int64)
    leaves.fields.append(condition["field"])
    leaves.values.append(column[0])
    hit = _leaf_mask(condition["op"], column[0], column[1], condition["value"])
    return np.where(hit, len(leaves.fields) - 1, -1)


def _leaf_hit(op, actual: Any, value: Any) -> bool:
    if actual is None:
        return False
    try:
        return bool(op(actual, value))
    except TypeError:
        return False


def _firings(rules: Sequence[Rule], table: pa.Table, features: Mapping[str, np.ndarray]
             ) -> Iterator[tuple[Rule, np.ndarray, list[tuple[str, Any]]]]:
    """Per active rule: the rows it fires on, each with the field and value that fired it."""
    for rule in rules:
        if rule.paused:
            continue
        leaves = _Leaves()
        decided = _check(rule.when, table, features, leaves, table.num_rows)
        rows = np.flatnonzero(decided != -1)
        deciders = decided[rows]
        found: list[tuple[str, Any]] = [("not", None)] * len(rows)
        for leaf in np.unique(deciders[deciders >= 0]).tolist():
            at = np.flatnonzero(deciders == leaf)
            field = leaves.fields[leaf]
            for i, value in zip(at.tolist(), leaves.values[leaf][rows[at]].tolist(),
                                strict=True):
                found[i] = (field, value)
        yield rule, rows, found


def rule_hits(rules: Sequence[Rule], table: pa.Table,
              features: Mapping[str, np.ndarray]) -> dict[int, list[RuleHit]]:
    """The hits of each row that has any, in rule order, with the field and value that
    fired them."""
    hits: dict[int, list[RuleHit]] = {}
    for rule, rows, found in _firings(rules, table, features):
        for row, (field, value) in zip(rows.tolist(), found, strict=True):
            hits.setdefault(row, []).append(
                RuleHit(rule.rule_id, rule.description, field, value, rule.weight))
    return hits


def model_matrix(table: pa.Table, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """model.model_vector for every row."""
    micros = _micros(table)
    amount, _ = _int_column(table, "amount_cents")
    tx_type, cp_type = _strings(table, "tx_type"), _strings(table, "counterparty_type")
    columns = [features[name].astype(np.float64) for name in FEATURE_NAMES]
    columns.append(np.array([math.log1p(a) for a in amount.tolist()]))
    columns.append((micros // HOUR_MICROS % 24).astype(np.float64))
    columns.extend((tx_type == t).astype(np.float64) for t in TX_TYPES)
    columns.extend((cp_type == t).astype(np.float64) for t in COUNTERPARTY_TYPES)
    return np.column_stack(columns)


def detect_features(table: pa.Table, counterparty: pa.Table, delay_days: int = DELAY_DAYS,
                    window_days: int = WINDOW_DAYS) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Transactions (whole account histories) -> (the rows in account order, every
    feature of each row, counterparty risk included)."""
    table = in_account_order(table.select(TRANSACTION_SCHEMA.names).cast(TRANSACTION_SCHEMA))
    features = account_features(table)
    features["counterparty_risk"] = counterparty_risk(table, counterparty, delay_days,
                                                      window_days)
    return table, features


def feature_table(table: pa.Table, rules: Sequence[Rule], counterparty: pa.Table,
                  delay_days: int = DELAY_DAYS, window_days: int = WINDOW_DAYS) -> pa.Table:
    """What `train` and `evaluate` learn from (FEATURE_TABLE_SCHEMA): each transaction's
    label, its model vector and the rules' noisy-or, computed as score_table does."""
    table, features = detect_features(table, counterparty, delay_days, window_days)
    remaining = np.ones(table.num_rows)
    for rule, rows, _ in _firings(rules, table, features):
        remaining[rows] *= 1.0 - rule.weight
    matrix = model_matrix(table, features)
    columns = {name: table[name] for name in FEATURE_TABLE_SCHEMA.names[:5]}
    columns["rules_score"] = pa.array(1.0 - remaining)
    columns.update((name, pa.array(matrix[:, i])) for i, name in enumerate(MODEL_FEATURES))
    return pa.table(columns, schema=FEATURE_TABLE_SCHEMA)


def score_table(table: pa.Table, rules: Sequence[Rule], threshold: float,
                counterparty: pa.Table, model: Any = None, model_version: str = "",
                delay_days: int = DELAY_DAYS, window_days: int = WINDOW_DAYS) -> pa.Table:
    """Transactions (whole account histories) -> the same rows in account order with
    score, flagged, reasons, late and model_version, as transforms.score.decide gives."""
    table, features = detect_features(table, counterparty, delay_days, window_days)
    n = table.num_rows
    # Noisy-or as transforms.score.combine: each row's factors multiplied in rule order,
    # then the model's, so the floats are the per-element path's to the last bit.
    remaining = np.ones(n)
    reason_rows: list[np.ndarray] = []
    reason_texts: list[str] = []
    for rule, rows, found in _firings(rules, table, features):
        remaining[rows] *= 1.0 - rule.weight
        reason_rows.append(rows)
        reason_texts.extend(hit_text(rule.rule_id, rule.description, field, value)
                            for field, value in found)
    if model is not None and n:
        probabilities = model.predict_proba(model_matrix(table, features))[:, 1]
        remaining *= 1.0 - probabilities
        model_name = model_version or "score"
        reason_rows.append(np.arange(n))
        reason_texts.extend(f"model {model_name}: {p:.2f}" for p in probabilities.tolist())
    score = round6(1.0 - remaining)
    rows = np.concatenate(reason_rows) if reason_rows else np.zeros(0, dtype=np.int64)
    in_row_order = np.argsort(rows, kind="stable")  # keeps rule order within a row
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    reasons = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(reason_texts, type=pa.string()).take(in_row_order))
    return table.append_column("score", pa.array(score)) \
        .append_column("flagged", pa.array(score >= threshold)) \
        .append_column("reasons", reasons) \
        .append_column("late", pa.array(np.zeros(n, dtype=bool))) \
        .append_column("model_version", pa.array([model_version] * n, type=pa.string()))


def scored_records(table: pa.Table) -> Iterator[ScoredTransaction]:
    names = TRANSACTION_SCHEMA.names
    for row in table.to_pylist():
        yield ScoredTransaction(Transaction(**{k: row[k] for k in names}), row["score"],
                                row["flagged"], tuple(row["reasons"]), row["late"],
                                row["model_version"])


def split_by_account(table: pa.Table, shards: int) -> Iterator[tuple[int, pa.Table]]:
    """(shard, rows) by a stable hash of the account id, so an account's rows meet in
    one shard whichever file or batch they came from."""
    unique = pc.unique(table["account_id"])
    shard_of = np.array([zlib.crc32(a.encode()) % shards for a in unique.to_pylist()],
                        dtype=np.int64)
    shard = shard_of[pc.index_in(table["account_id"], value_set=unique).to_numpy()]
    for s in np.unique(shard).tolist():
        yield s, table.filter(pa.array(shard == s))
