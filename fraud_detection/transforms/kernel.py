"""The detection kernel: the one implementation of detection, with no Beam in it.

Two steps, each a pure function of a batch (an Arrow table) and an explicit state:

- `account_step`: the rows of some accounts, in (account, event time, id) order, and
  the state of those accounts -> each row's behaviour features and late mark, and the
  accounts' new state.
- `counterparty_step`: featured rows (and analysts' labels) of some counterparties and
  their state -> counterparty risk, and with it the rules, the model and the decision
  with reasons; and the counterparties' new state.

Batch runs each step once per shard over its whole history from empty state;
streaming runs them over every micro-batch the watermark releases, carrying the state.
Running a step over a batch, or over that batch cut in two at a moment in time, gives
the same rows: that is what makes the two modes agree.

A row is late when its account already holds a later event (it arrived after the
watermark released that one). It is scored against that history and marked late.

State is compact and versioned: each account's or counterparty's state is a bytes value
(`encode_account` / `encode_counterparty`), bounded by the windows below.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraud_detection import records
from fraud_detection.io.parquet import TRANSACTION_SCHEMA, arrow_fields
from fraud_detection.records import (
    COUNTERPARTY_TYPES,
    CREDIT_TX_TYPES,
    LEGIT,
    TX_TYPES,
    ScoredTransaction,
    Transaction,
)
from fraud_detection.transforms.benford import MIN_SAMPLE as BENFORD_MIN_SAMPLE
from fraud_detection.transforms.benford import NONCONFORMITY, result_from_counts
from fraud_detection.transforms.rules import _OPS, Rule, RuleHit

HOUR_MICROS = 3_600_000_000
DAY_MICROS = 24 * HOUR_MICROS
WINDOWS_HOURS = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}
MAX_HOURS = max(WINDOWS_HOURS.values())
RECENT_AMOUNTS = 200  # robust z-score over the account's last N amounts
MAX_COUNTERPARTIES = 1_000  # least recently paid forgotten first
MIN_HISTORY_FOR_ZSCORE = 5
BENFORD_WINDOW_DAYS = 30  # as BenfordReports' default, so the verdict matches the report
DELAY_DAYS = 7  # labels are known this long after the transaction
WINDOW_DAYS = 28  # counterparty risk over this many days, ending DELAY_DAYS back
# A counterparty's fraud share starts as if it had PRIOR_WEIGHT transactions at this
# rate, so a few transactions move it only a little (not zero below a count, nor 1.0
# after one fraud in one transaction).
PRIOR_FRAUD_RATE = 0.005
PRIOR_WEIGHT = 10
NO_RISK_TYPES = frozenset({"cash"})  # ATMs: a shared counterparty, not a merchant
LATE_REASON = "arrived late: scored against a history that already held later events"

# Computed by the account step, carried in FEATURED_SCHEMA.
ACCOUNT_FEATURES = (
    "count_1h", "amount_1h", "count_24h", "amount_24h", "count_7d", "amount_7d",
    "count_30d", "amount_30d",  # the account's transactions before this one
    "amount_zscore",  # robust: (amount - median) / (1.4826 * MAD); 0 without history
    "amount_to_median",  # amount / median of recent amounts; 1 without history
    # The same against the account's recent amounts of this transaction's type only: a
    # payment five times the usual payment stands out, though transfers are larger.
    "type_amount_zscore", "type_amount_to_median",
    "seconds_since_last",  # -1 for the account's first transaction, 0 for a late one
    "new_counterparty", "balance_mismatch",
    "night",  # 00:00-05:59 UTC
    "weekend",
    # The account's amounts in the previous Benford window broke Benford's law.
    "benford_nonconforming",
)
# Derived from those when read: the account's mean amount before this transaction over
# a window (0 without history), and this amount against it (1 without history).
MEAN_WINDOWS = ("24h", "7d", "30d")
DERIVED_FEATURES = (*(f"mean_{w}" for w in MEAN_WINDOWS),
                    *(f"amount_to_mean_{w}" for w in MEAN_WINDOWS))
# Computed by the counterparty step from its state and delayed labels, each window ending
# delay_days before the transaction's day: its transactions, and the share confirmed as
# fraud, smoothed toward PRIOR_FRAUD_RATE; counterparty_risk is that share over
# window_days, the one rules name. Cash counterparties carry none (0).
COUNTERPARTY_WINDOWS = (1, 7, 30)
# Needing no label, so over the days before the transaction's own: the share of the
# counterparty's transactions whose payer had never paid it before, smoothed toward
# PRIOR_STRANGER_SHARE. A terminal cashing out stolen cards is paid by strangers.
STRANGER_WINDOWS = (1, 7)
PRIOR_STRANGER_SHARE = 0.25
# Against the counterparty's usual over days [30, 7) back, before any recent burst: a
# small shop's six new payers a day stand out against its one, which a share shrunk
# toward the prior hides. In counts: yesterday's new payers, the usual per day (and its
# share), and how far yesterday and the last 7 days' mean rose above the usual.
USUAL_STRANGER_DAYS = (30, 7)
STRANGER_COUNT_FEATURES = (
    "counterparty_strangers_count_1d", "counterparty_strangers_usual_per_day",
    "counterparty_strangers_usual_share", "counterparty_strangers_excess_1d",
    "counterparty_strangers_excess_7d",
)
# The counterparty's usual ticket: the mean and spread of the log amounts paid to it over
# the 30 days before the transaction's own, smoothed toward a prior ticket of 40.00 (in
# minor units) with a log spread of 1, as if AMOUNT_PRIOR_WEIGHT more transactions had
# been that; and this amount's z-score against it. A terminal cashing out stolen cards
# takes tickets of its own kind from card holders of every level, so the amount stands
# out against the counterparty's usual, while its customers pay what they usually do.
AMOUNT_DAYS = 30
PRIOR_LOG_AMOUNT = math.log(4_000)
PRIOR_LOG_AMOUNT_VARIANCE = 1.0
AMOUNT_PRIOR_WEIGHT = 2
# Log amounts are summed in fixed point (integers: exact, so any split of a history into
# batches sums to the same features).
LOG_AMOUNT_UNITS = 1024
AMOUNT_FEATURES = (f"counterparty_log_amount_{AMOUNT_DAYS}d",
                   f"counterparty_amount_zscore_{AMOUNT_DAYS}d")
COUNTERPARTY_FEATURES = (
    "counterparty_risk",
    *(f"counterparty_count_{d}d" for d in COUNTERPARTY_WINDOWS),
    *(f"counterparty_fraud_{d}d" for d in COUNTERPARTY_WINDOWS),
    *(f"counterparty_strangers_{d}d" for d in STRANGER_WINDOWS),
    *STRANGER_COUNT_FEATURES,
    *AMOUNT_FEATURES,
)
FEATURE_NAMES = (*ACCOUNT_FEATURES, *DERIVED_FEATURES, *COUNTERPARTY_FEATURES)
# The rules' noisy-or is the model's last input: the model learns how far to trust each
# level of it, so rules and model together score at least as well as the model alone.
RULES_SCORE = "rules_score"
MODEL_FEATURES: tuple[str, ...] = (
    *FEATURE_NAMES, "log_amount", "hour",
    *(f"tx_type_{t}" for t in TX_TYPES),
    *(f"counterparty_type_{t}" for t in COUNTERPARTY_TYPES),
    RULES_SCORE,
)
_FEATURE_TYPES = {name: pa.int64() for name in FEATURE_NAMES[:8]} | {
    name: pa.bool_() for name in ("new_counterparty", "balance_mismatch", "night", "weekend",
                                  "benford_nonconforming")}
# Carried beside a transaction's own columns: where it was read (Kafka position).
POSITION = "position"
# Optional, in bounded input: the order rows arrived in (e.g. the day of the daily file
# that brought them). Each arrival is one batch, as a streaming firing would be.
ARRIVAL = "arrival"
FEATURED_SCHEMA = pa.schema([
    *TRANSACTION_SCHEMA, (POSITION, pa.string()), ("late", pa.bool_()),
    *((name, _FEATURE_TYPES.get(name, pa.float64())) for name in ACCOUNT_FEATURES),
])
SCORE_FIELDS = arrow_fields(ScoredTransaction, records.SCORE_FIELDS)
SCORED_SCHEMA = pa.schema([*TRANSACTION_SCHEMA, (POSITION, pa.string()), *SCORE_FIELDS])
FEATURE_TABLE_SCHEMA = pa.schema([
    ("transaction_id", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")),
    ("account_id", pa.string()),
    ("label", pa.string()),
    ("amount_cents", pa.int64()),
    *((name, pa.float64()) for name in MODEL_FEATURES),
])
LABEL_SCHEMA = pa.schema([
    ("transaction_id", pa.string()), ("counterparty_id", pa.string()),
    ("transaction_time", pa.timestamp("us", tz="UTC")), ("label", pa.string()),
    ("labelled_at", pa.timestamp("us", tz="UTC")),
])
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)


# --- small column helpers -------------------------------------------------------------

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


def micros(table: pa.Table, name: str = "event_time") -> np.ndarray:
    return table[name].combine_chunks().cast(pa.int64()).to_numpy()


def _int_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    column = table[name].combine_chunks()
    return (column.fill_null(0).to_numpy().astype(np.int64),
            column.is_valid().to_numpy(zero_copy_only=False))


def _strings(table: pa.Table, name: str) -> np.ndarray:
    return table[name].combine_chunks().to_numpy(zero_copy_only=False)


def _bools(table: pa.Table, name: str) -> np.ndarray:
    return table[name].combine_chunks().fill_null(False).to_numpy(zero_copy_only=False)


def table_of(transactions: Sequence[Transaction],
             positions: Sequence[str] | None = None) -> pa.Table:
    """Transactions -> a table of TRANSACTION_SCHEMA plus their read positions (theirs, or
    the given ones)."""
    columns = {f.name: pa.array([getattr(t, f.name) for t in transactions], type=f.type)
               for f in TRANSACTION_SCHEMA}
    if positions is None:
        positions = [t.position for t in transactions]
    columns[POSITION] = pa.array(positions, type=pa.string())
    return pa.table(columns)


def with_positions(table: pa.Table) -> pa.Table:
    """The transaction columns in TRANSACTION_SCHEMA, and a position column ('' if none)."""
    out = table.select(TRANSACTION_SCHEMA.names).cast(TRANSACTION_SCHEMA)
    position = (table[POSITION] if POSITION in table.column_names
                else pa.array([""] * table.num_rows, type=pa.string()))
    out = out.append_column(POSITION, position)
    if ARRIVAL in table.column_names:
        out = out.append_column(ARRIVAL, table[ARRIVAL].cast(pa.int64()))
    return out


def in_order(table: pa.Table, key: str) -> pa.Table:
    """Sorted the way every path processes a key's rows: by time, ties by id."""
    return table.take(pc.sort_indices(table, [(key, "ascending"), ("event_time", "ascending"),
                                              ("transaction_id", "ascending")]))


def _group_starts(codes: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's group (rows sorted by group)."""
    n = len(codes)
    new = np.ones(n, dtype=bool)
    new[1:] = codes[1:] != codes[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def _codes(values: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Index of each value in ids (every value is in ids)."""
    return pc.index_in(pa.array(values, type=pa.string()),
                       value_set=pa.array(list(ids), type=pa.string())).to_numpy() \
        .astype(np.int64)


def _ranges(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of the given lengths: each element's group and its index within it."""
    group = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    return group, np.arange(len(group)) - np.repeat(starts, lengths)


# --- account state ----------------------------------------------------------------------

@dataclass
class AccountState:
    """What one account did, bounded: hour buckets of the longest window, the last
    RECENT_AMOUNTS amounts, up to MAX_COUNTERPARTIES counterparties (least recent first),
    first-digit counts of the current and previous Benford windows, the latest event."""

    last_micros: int
    hours: np.ndarray  # int64, ascending
    counts: np.ndarray  # int64
    amounts: np.ndarray  # int64
    recent: np.ndarray  # int64, oldest first
    recent_types: np.ndarray  # int64: each recent amount's index in TX_TYPES
    counterparties: list[str]
    benford_windows: np.ndarray  # int64 (2,), -1 for none
    benford_counts: np.ndarray  # int64 (2, 9): first digits 1..9


ACCOUNT_STATE_VERSION = 2  # 2: each recent amount carries its transaction type
# Recent amounts are stored as amount * TYPE_SLOTS + type code, in the same 8 bytes.
TYPE_SLOTS = 8
_ACCOUNT_HEADER = struct.Struct("<BqHHH2q")


def encode_account(state: AccountState) -> bytes:
    """Versioned bytes: header, buckets, recent amounts, Benford counts, counterparties.
    At most 720 buckets, 200 amounts and 1,000 counterparties: see MAX_ACCOUNT_BYTES."""
    def zeros(values) -> np.ndarray:
        return np.zeros(len(values), dtype=np.int64)

    return _encode_accounts(
        [""], np.array([state.last_micros]), zeros(state.hours), state.hours, state.counts,
        state.amounts, zeros(state.recent), state.recent * TYPE_SLOTS + state.recent_types,
        zeros(state.counterparties),
        pa.array(state.counterparties, type=pa.string()), state.benford_windows[None],
        state.benford_counts[None])[""]


def decode_account(blob: bytes) -> AccountState:
    prior = _Prior.of([""], {"": blob})
    return AccountState(int(prior.last[0]), prior.bucket_hour, prior.bucket_count,
                        prior.bucket_amount, prior.recent // TYPE_SLOTS,
                        prior.recent % TYPE_SLOTS, prior.counterparties.tolist(),
                        prior.benford_windows[0], prior.benford_counts[0])


def _pack_strings(values: Sequence[str]) -> bytes:
    """Lengths (uint32), then the UTF-8 bytes: any id survives, separators included."""
    encoded = [v.encode() for v in values]
    return np.array([len(e) for e in encoded], dtype="<u4").tobytes() + b"".join(encoded)


def _unpack_strings(blob: bytes, at: int, n: int) -> list[str]:
    lengths = np.frombuffer(blob, dtype="<u4", count=n, offset=at).tolist()
    at += 4 * n
    out = []
    for length in lengths:
        out.append(blob[at:at + length].decode())
        at += length
    return out


# Counterparty ids of up to 64 bytes; a measured account at the bounds is this size.
MAX_ACCOUNT_BYTES = _ACCOUNT_HEADER.size + MAX_HOURS * 16 + RECENT_AMOUNTS * 8 + 72 \
    + MAX_COUNTERPARTIES * 68


def _first_digits(amount: np.ndarray) -> np.ndarray:
    digits = np.searchsorted(_POWERS_OF_TEN, amount, side="right")
    return amount // _POWERS_OF_TEN[np.maximum(digits - 1, 0)]


def _nonconforming(first_digit_counts: np.ndarray) -> bool:
    counts = np.zeros(10, dtype=np.int64)
    counts[1:] = first_digit_counts
    return result_from_counts(counts, 1).level == NONCONFORMITY


@dataclass
class _Prior:
    """The states of a batch's accounts, flattened: element arrays with their account's
    code (its index in the batch's sorted account ids)."""

    known: np.ndarray  # bool per account
    last: np.ndarray  # int64 per account, min int64 for none
    bucket_code: np.ndarray
    bucket_hour: np.ndarray
    bucket_count: np.ndarray
    bucket_amount: np.ndarray
    recent_code: np.ndarray
    recent: np.ndarray  # amount * TYPE_SLOTS + type code
    counterparty_code: np.ndarray
    counterparties: np.ndarray
    benford_windows: np.ndarray  # (accounts, 2)
    benford_counts: np.ndarray  # (accounts, 2, 9)

    @classmethod
    def of(cls, ids: Sequence[str], states: Mapping[str, bytes]) -> _Prior:
        """Decodes the states of ids (encode_account's format) into flat arrays: each
        field's bytes gathered from every state, then converted once."""
        n = len(ids)
        windows = np.full((n, 2), -1, dtype=np.int64)
        last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        known = np.zeros(n, dtype=bool)
        sizes: list[tuple[int, int, int]] = []
        fields: list[list[memoryview]] = [[], [], [], [], [], [], []]
        header, unpack = _ACCOUNT_HEADER.size, _ACCOUNT_HEADER.unpack_from
        for c, account in enumerate(ids):
            blob = states.get(account)
            if blob is None:
                continue
            version, last[c], nb, nr, nc, windows[c, 0], windows[c, 1] = unpack(blob)
            if version != ACCOUNT_STATE_VERSION:
                raise ValueError(f"account state version {version}, this code reads "
                                 f"{ACCOUNT_STATE_VERSION}")
            known[c] = True
            sizes.append((nb, nr, nc))
            view, at = memoryview(blob), header
            for field, width in enumerate((4 * nb, 4 * nb, 8 * nb, 8 * nr, 72, 4 * nc)):
                fields[field].append(view[at:at + width])
                at += width
            fields[6].append(view[at:])

        def column(field: int, dtype: str) -> np.ndarray:
            return np.frombuffer(b"".join(fields[field]), dtype=dtype).astype(np.int64)

        codes = np.flatnonzero(known)
        nb, nr, nc = (np.array(x, dtype=np.int64) for x in zip(*sizes, strict=True)) \
            if sizes else (np.zeros(0, np.int64),) * 3
        counts = np.zeros((n, 2, 9), dtype=np.int64)
        counts[codes] = column(4, "<i4").reshape(-1, 2, 9)
        lengths = column(5, "<u4")
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        names = pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets.tobytes()),
                                            pa.py_buffer(b"".join(fields[6])))
        return cls(known, last, np.repeat(codes, nb), column(0, "<i4"), column(1, "<i4"),
                   column(2, "<i8"), np.repeat(codes, nr), column(3, "<i8"),
                   np.repeat(codes, nc), names.to_numpy(zero_copy_only=False).astype(object),
                   windows, counts)


def _middle(ordered: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.median of each row's first `lengths` values, the row sorted ascending."""
    rows, mid = np.arange(len(lengths)), lengths // 2
    upper = ordered[rows, mid]
    return np.where(lengths % 2 == 1, upper, (ordered[rows, mid - 1] + upper) / 2)


def _median_and_mad(values: np.ndarray, ends: np.ndarray,
                    lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD of values[end - length:end] for each (end, length), as np.median
    gives them. A length shared by many rows is one strided np.median; the others go
    together, padded and sorted (a few dozen rows of many lengths: a streaming firing)."""
    median, mad = np.zeros(len(ends)), np.zeros(len(ends))
    distinct, inverse, shared = np.unique(lengths, return_inverse=True, return_counts=True)
    by_length = shared[inverse] >= _ROWS_PER_STRIDED_MEDIAN
    for length in distinct[shared >= _ROWS_PER_STRIDED_MEDIAN].tolist():
        at = np.flatnonzero(lengths == length)
        windows = np.lib.stride_tricks.sliding_window_view(values, length)[ends[at] - length]
        median[at] = np.median(windows, axis=1)
        mad[at] = np.median(np.abs(windows - median[at, None]), axis=1)
    rest = np.flatnonzero(~by_length)
    if len(rest):
        n = lengths[rest]
        columns = np.arange(int(n.max()))
        inside = columns < n[:, None]
        at = np.minimum(ends[rest, None] - n[:, None] + columns, len(values) - 1)
        windows = np.where(inside, values[at], np.inf)
        median[rest] = _middle(np.sort(windows, axis=1), n)
        deviations = np.where(inside, np.abs(windows - median[rest, None]), np.inf)
        mad[rest] = _middle(np.sort(deviations, axis=1), n)
    return median, mad


# Below this many rows of one history length, the padded sort beats a strided median.
_ROWS_PER_STRIDED_MEDIAN = 32


def _robust_zscores(values: np.ndarray, rows: np.ndarray,
                    history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z, amount / median) of values[rows] against the `history` values before each."""
    n = len(rows)
    z, ratio = np.zeros(n), np.ones(n)
    values = values.astype(np.float64)
    at = np.flatnonzero(history >= MIN_HISTORY_FOR_ZSCORE)
    median, mad = _median_and_mad(values, rows[at], history[at])
    # A flat history (MAD 0) still needs a scale: one cent, or a tenth of the median.
    scale = np.where(mad != 0, 1.4826 * mad, np.maximum(median * 0.1, 1.0))
    amount = values[rows[at]]
    with np.errstate(divide="ignore", invalid="ignore"):
        z[at] = (amount - median) / scale
        ratio[at] = np.where(median != 0, amount / median, (amount > 0) * 1e6)
    return round6(np.where(np.isfinite(z), z, 0.0)), round6(ratio)


def account_step(batch: pa.Table, states: Mapping[str, bytes] | None = None,
                 keep_state: bool = True) -> tuple[pa.Table, dict[str, bytes]]:
    """Rows of some accounts -> (the rows in account order with late and every feature
    but counterparty_risk (FEATURED_SCHEMA), the new state of each account in the batch).
    states: account id -> encoded state, for accounts seen before (None: none were)."""
    table = in_order(with_positions(batch), "account_id")
    if ARRIVAL in table.column_names:
        table = table.drop_columns([ARRIVAL])
    n = table.num_rows
    account = _strings(table, "account_id")
    ids = pc.unique(table["account_id"]).to_pylist()  # sorted, as the rows are
    code = _codes(account, ids)
    prior = _Prior.of(ids, states or {})
    t = micros(table)
    amount, _ = _int_column(table, "amount_cents")
    hour = t // HOUR_MICROS
    starts = _group_starts(code)
    index = np.arange(n)
    out: dict[str, np.ndarray] = {}

    # Windows: rows before this one in the batch, plus the state's buckets up to its hour.
    key = code * (1 << 32) + hour
    cumulative = np.concatenate([[0], np.cumsum(amount)])
    bucket_key = prior.bucket_code * (1 << 32) + prior.bucket_hour
    order = np.argsort(bucket_key, kind="stable")
    bucket_key = bucket_key[order]
    bucket_count = np.concatenate([[0], np.cumsum(prior.bucket_count[order])])
    bucket_amount = np.concatenate([[0], np.cumsum(prior.bucket_amount[order])])
    upto = np.searchsorted(bucket_key, key, side="right")
    for name, hours in WINDOWS_HOURS.items():
        first = np.searchsorted(key, key - hours + 1, side="left")
        since = np.searchsorted(bucket_key, key - hours + 1, side="left")
        out[f"count_{name}"] = index - first + bucket_count[upto] - bucket_count[since]
        out[f"amount_{name}"] = cumulative[index] - cumulative[first] \
            + bucket_amount[upto] - bucket_amount[since]

    # Recent amounts: the state's, then the batch's, per account in one sequence.
    recent_lengths = np.bincount(prior.recent_code, minlength=len(ids))
    batch_lengths = np.bincount(code, minlength=len(ids))
    offsets = np.concatenate([[0], np.cumsum(recent_lengths + batch_lengths)[:-1]])
    sequence = np.zeros(int((recent_lengths + batch_lengths).sum()), dtype=np.int64)
    _, within = _ranges(recent_lengths)
    sequence[offsets[prior.recent_code] + within] = prior.recent
    sequence_code = np.repeat(np.arange(len(ids)), recent_lengths + batch_lengths)
    in_account = index - starts
    rows = offsets[code] + recent_lengths[code] + in_account
    sequence[rows] = amount * TYPE_SLOTS + _type_codes(table)
    amounts, types = sequence // TYPE_SLOTS, sequence % TYPE_SLOTS
    history = np.minimum(recent_lengths[code] + in_account, RECENT_AMOUNTS)
    out["amount_zscore"], out["amount_to_median"] = _robust_zscores(amounts, rows, history)
    # Against the amounts of the row's type among those same recent ones (what a state
    # holds): the sequence regrouped by (account, type), each group still in time order.
    group = sequence_code * TYPE_SLOTS + types
    by_type = np.argsort(group, kind="stable")
    at = np.empty_like(by_type)
    at[by_type] = np.arange(len(by_type))
    typed_key = group[by_type] * (len(sequence) + 1) + by_type
    oldest = np.searchsorted(typed_key, group[rows] * (len(sequence) + 1) + rows - history)
    out["type_amount_zscore"], out["type_amount_to_median"] = _robust_zscores(
        amounts[by_type], at[rows], at[rows] - oldest)

    # The latest event before: the previous row, or the state's latest for the first.
    late = prior.known[code] & (t < prior.last[code])
    previous = np.where(index > starts, np.roll(t, 1), prior.last[code])
    seen = (index > starts) | prior.known[code]
    latest = np.maximum(previous, np.where(prior.known[code], prior.last[code], previous))
    out["seconds_since_last"] = np.where(seen, np.maximum(t - latest, 0) / 1e6, -1.0)

    counterparty = _strings(table, "counterparty_id")
    out["new_counterparty"] = _new_counterparties(code, counterparty, starts, prior)
    before, before_valid = _int_column(table, "balance_before_cents")
    after, after_valid = _int_column(table, "balance_after_cents")
    credit = np.isin(_strings(table, "tx_type"), list(CREDIT_TX_TYPES))
    expected = before + np.where(credit, amount, -amount)
    out["balance_mismatch"] = before_valid & after_valid & (expected != after)
    out["night"] = hour % 24 < 6
    out["weekend"] = (t // DAY_MICROS + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    window = t // (BENFORD_WINDOW_DAYS * DAY_MICROS)
    out["benford_nonconforming"] = _benford_nonconforming(code, amount, window, prior)

    featured = table.append_column("late", pa.array(late))
    for name in FEATURED_SCHEMA.names[len(featured.column_names):]:
        featured = featured.append_column(
            name, pa.array(out[name], type=FEATURED_SCHEMA.field(name).type))
    new_states = _account_states(ids, code, t, hour, amount, counterparty, window, prior,
                                 sequence, sequence_code) if keep_state else {}
    return featured, new_states


def _type_codes(table: pa.Table) -> np.ndarray:
    """Each row's index in TX_TYPES (len(TX_TYPES) for any other type)."""
    codes = pc.index_in(table["tx_type"], pa.array(TX_TYPES, type=pa.string()))
    return pc.fill_null(codes, len(TX_TYPES)).to_numpy(zero_copy_only=False).astype(np.int64)


def _new_counterparties(code: np.ndarray, counterparty: np.ndarray, starts: np.ndarray,
                        prior: _Prior) -> np.ndarray:
    pair = np.char.add(np.char.add(code.astype(str), "\x00"), counterparty.astype(str))
    _, first_seen = np.unique(pair, return_index=True)
    new = np.zeros(len(code), dtype=bool)
    new[first_seen] = True
    if len(prior.counterparties):
        known = np.char.add(np.char.add(prior.counterparty_code.astype(str), "\x00"),
                            prior.counterparties.astype(str))
        new &= ~np.isin(pair, known)
    # An account with more counterparties than the state remembers: replay its bounded
    # memory exactly (rare, so a loop).
    distinct = np.bincount(code[new], minlength=len(prior.known)) \
        + np.bincount(prior.counterparty_code, minlength=len(prior.known))
    for c in np.flatnonzero(distinct > MAX_COUNTERPARTIES).tolist():
        remembered = OrderedDict.fromkeys(prior.counterparties[prior.counterparty_code == c])
        for i in np.flatnonzero(code == c).tolist():
            new[i] = counterparty[i] not in remembered
            remembered[counterparty[i]] = None
            remembered.move_to_end(counterparty[i])
            while len(remembered) > MAX_COUNTERPARTIES:
                remembered.popitem(last=False)
    return new


def _benford_nonconforming(code: np.ndarray, amount: np.ndarray, window: np.ndarray,
                           prior: _Prior) -> np.ndarray:
    """The account's previous Benford window (state and batch amounts of two digits or
    more) broke the first-digit test on at least MIN_SAMPLE amounts."""
    has_prefix = amount >= 10
    group = code * (1 << 32) + window
    keys, inverse = np.unique(group[has_prefix], return_inverse=True)
    counts = np.zeros((len(keys), 9), dtype=np.int64)
    np.add.at(counts, (inverse, _first_digits(amount[has_prefix]) - 1), 1)
    # The state's counts of the same windows.
    state_code = np.repeat(np.arange(len(prior.known)), 2)
    state_window = prior.benford_windows.reshape(-1)
    state_counts = prior.benford_counts.reshape(-1, 9)
    live = state_window >= 0
    state_keys = state_code[live] * (1 << 32) + state_window[live]
    all_keys = np.union1d(keys, state_keys)
    totals = np.zeros((len(all_keys), 9), dtype=np.int64)
    totals[np.searchsorted(all_keys, keys)] += counts
    totals[np.searchsorted(all_keys, state_keys)] += state_counts[live]
    sizes = totals.sum(axis=1)
    verdict = np.zeros(len(all_keys), dtype=bool)
    for i in np.flatnonzero(sizes >= BENFORD_MIN_SAMPLE).tolist():
        verdict[i] = _nonconforming(totals[i])
    previous = group - 1
    at = np.minimum(np.searchsorted(all_keys, previous), max(len(all_keys) - 1, 0))
    return (all_keys[at] == previous) & verdict[at] if len(all_keys) \
        else np.zeros(len(code), dtype=bool)


def _group_sums(key: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(sorted distinct keys, each values' exact int64 sum per key)."""
    order = np.argsort(key, kind="stable")
    key = key[order]
    if not len(key):
        return (key, *(np.zeros((0, *v.shape[1:]), np.int64) for v in values))
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    return (key[starts], *(np.add.reduceat(v[order].astype(np.int64), starts, axis=0)
                           for v in values))


def _last_per_group(group: np.ndarray, keep: int) -> np.ndarray:
    """Mask of the last `keep` elements of each group (elements sorted by group)."""
    n = len(group)
    ends = np.searchsorted(group, group, side="right")
    return ends - np.arange(n) <= keep


def _account_states(ids: Sequence[str], code: np.ndarray, t: np.ndarray, hour: np.ndarray,
                    amount: np.ndarray, counterparty: np.ndarray, window: np.ndarray,
                    prior: _Prior, sequence: np.ndarray,
                    sequence_code: np.ndarray) -> dict[str, bytes]:
    """Each account's state after the batch, computed for all accounts at once (a
    streaming firing holds a few dozen; a loop per account cost more than the features).
    sequence: the state's recent amounts then the batch's, per account in code order."""
    n = len(ids)
    last = np.maximum(np.maximum.reduceat(t, np.flatnonzero(np.diff(code, prepend=-1))),
                      prior.last)

    # Hour buckets of the longest window before each account's latest event.
    b_code = np.concatenate([prior.bucket_code, code])
    b_hour = np.concatenate([prior.bucket_hour, hour])
    keep = b_hour > last[b_code] // HOUR_MICROS - MAX_HOURS  # older never counts again
    key, counts, amounts = _group_sums(
        b_code[keep] * (1 << 32) + b_hour[keep],
        np.concatenate([prior.bucket_count, np.ones(len(code), np.int64)])[keep],
        np.concatenate([prior.bucket_amount, amount])[keep])
    bucket_code, hours = key >> 32, key & 0xFFFFFFFF

    recent = _last_per_group(sequence_code, RECENT_AMOUNTS)
    recent_code, recent_amounts = sequence_code[recent], sequence[recent]

    # Counterparties, least recently paid first: the state's (distinct), then the batch's.
    cp_code = np.concatenate([prior.counterparty_code, code])
    names = pa.array(np.concatenate([prior.counterparties, counterparty]), type=pa.string())
    pair = cp_code * (1 << 32) + pc.dictionary_encode(names).indices.to_numpy(
        zero_copy_only=False)
    reversed_first = np.unique(pair[::-1], return_index=True)[1]
    latest = np.sort(len(pair) - 1 - reversed_first)  # each pair's last use, in order
    latest = latest[np.argsort(cp_code[latest], kind="stable")]
    latest = latest[_last_per_group(cp_code[latest], MAX_COUNTERPARTIES)]
    kept_code, kept_names = cp_code[latest], names.take(pa.array(latest))

    # Benford first-digit counts of the current and previous windows.
    state_code = np.repeat(np.arange(n), 2)
    live = prior.benford_windows.reshape(-1) >= 0
    prefixed = amount >= 10
    digits = np.zeros((int(prefixed.sum()), 9), dtype=np.int64)
    digits[np.arange(len(digits)), _first_digits(amount[prefixed]) - 1] = 1
    w_code = np.concatenate([state_code[live], code[prefixed]])
    w_key, w_counts = _group_sums(
        w_code * (1 << 32) + np.concatenate([prior.benford_windows.reshape(-1)[live],
                                            window[prefixed]]),
        np.concatenate([prior.benford_counts.reshape(-1, 9)[live], digits]))
    w_code, w_window = w_key >> 32, w_key & 0xFFFFFFFF
    current = last[w_code] // (BENFORD_WINDOW_DAYS * DAY_MICROS)
    fresh = w_window >= current - 1
    w_code, w_window, w_counts = w_code[fresh], w_window[fresh], w_counts[fresh]
    two = _last_per_group(w_code, 2)
    w_code, w_window, w_counts = w_code[two], w_window[two], w_counts[two]
    slot = np.arange(len(w_code)) - np.searchsorted(w_code, w_code, side="left")
    benford_windows = np.full((n, 2), -1, dtype=np.int64)
    benford_counts = np.zeros((n, 2, 9), dtype=np.int64)
    benford_windows[w_code, slot] = w_window
    benford_counts[w_code, slot] = w_counts

    return _encode_accounts(ids, last, bucket_code, hours, counts, amounts, recent_code,
                            recent_amounts, kept_code, kept_names, benford_windows,
                            benford_counts)


def _encode_accounts(ids: Sequence[str], last: np.ndarray, bucket_code: np.ndarray,
                     hours: np.ndarray, counts: np.ndarray, amounts: np.ndarray,
                     recent_code: np.ndarray, recent: np.ndarray, cp_code: np.ndarray,
                     names: pa.StringArray, benford_windows: np.ndarray,
                     benford_counts: np.ndarray) -> dict[str, bytes]:
    """encode_account for many accounts from flat arrays grouped by account code: each
    column converted once, each account's bytes sliced out of it."""
    n = len(ids)
    bounds = np.arange(n + 1)
    b_at = np.searchsorted(bucket_code, bounds).tolist()
    r_at = np.searchsorted(recent_code, bounds).tolist()
    c_at = np.searchsorted(cp_code, bounds).tolist()
    hours_b, counts_b = hours.astype("<i4").tobytes(), counts.astype("<i4").tobytes()
    amounts_b, recent_b = amounts.astype("<i8").tobytes(), recent.astype("<i8").tobytes()
    benford_b = benford_counts.astype("<i4").tobytes()
    # A string array's offsets (int32, from its own offset) index its data buffer.
    offsets = np.frombuffer(names.buffers()[1], dtype=np.int32, count=len(names) + 1,
                            offset=names.offset * 4).astype(np.int64)
    lengths_b = np.diff(offsets).astype("<u4").tobytes()
    data = names.buffers()[2]
    text = data.to_pybytes() if data is not None else b""
    text_at = offsets.tolist()
    header = _ACCOUNT_HEADER.pack
    states: dict[str, bytes] = {}
    for c, (account, latest, windows) in enumerate(zip(ids, last.tolist(),
                                                       benford_windows.tolist(), strict=True)):
        b0, b1, r0, r1, c0, c1 = b_at[c], b_at[c + 1], r_at[c], r_at[c + 1], c_at[c], \
            c_at[c + 1]
        states[account] = b"".join((
            header(ACCOUNT_STATE_VERSION, latest, b1 - b0, r1 - r0, c1 - c0, *windows),
            hours_b[4 * b0:4 * b1], counts_b[4 * b0:4 * b1], amounts_b[8 * b0:8 * b1],
            recent_b[8 * r0:8 * r1], benford_b[72 * c:72 * (c + 1)],
            lengths_b[4 * c0:4 * c1], text[text_at[c0]:text_at[c1]]))
    return states


# --- counterparty state, risk and the decision ------------------------------------------

# 1 had no strangers, 2 no amounts: read as none (_decode_older_counterparty)
COUNTERPARTY_STATE_VERSION = 3
_COUNTERPARTY_HEADER = struct.Struct("<BqII")


@dataclass
class CounterpartyState:
    """Transactions, confirmed frauds, transactions from new payers and their amounts per
    day of one counterparty, for the delay plus the window, and the transactions analysts labelled
    in that time (counted once)."""

    last_micros: int
    days: np.ndarray  # int64 epoch days, ascending
    counts: np.ndarray
    frauds: np.ndarray
    labelled: list[str]  # transaction ids
    labelled_days: np.ndarray  # their epoch days
    strangers: np.ndarray  # per day: transactions whose payer was new to it
    # Per day: the sum of its transactions' log amounts, and of their squares, in
    # LOG_AMOUNT_UNITS (and its square).
    log_amounts: np.ndarray
    log_squares: np.ndarray


def encode_counterparty(state: CounterpartyState) -> bytes:
    """One state's bytes: _encode_counterparties for one."""
    return _encode_counterparties(
        [""], np.array([state.last_micros], np.int64), np.zeros(len(state.days), np.int64),
        np.asarray(state.days), [np.asarray(a) for a in (
            state.counts, state.frauds, state.strangers, state.log_amounts,
            state.log_squares)], {0: (state.labelled, np.asarray(state.labelled_days))})[""]


def decode_counterparty(blob: bytes) -> CounterpartyState:
    """One state, of any version: _decode_counterparties for one."""
    prior = _decode_counterparties([""], {"": blob})
    labelled, labelled_days = prior.labelled.get(0, ([], np.zeros(0, np.int64)))
    return CounterpartyState(int(prior.last[0]), prior.days, prior.counts, prior.frauds,
                             labelled, labelled_days, prior.strangers, prior.log_amounts,
                             prior.log_squares)


def _decode_older_counterparty(blob: bytes, version: int, nd: int, nl: int,
                               ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """A state of an older version: its day arrays (days, counts, frauds, strangers) and
    (log amounts, log squares), and its labelled ids and days."""
    if not 1 <= version < COUNTERPARTY_STATE_VERSION:
        raise ValueError(f"counterparty state version {version}, this code reads 1 to "
                         f"{COUNTERPARTY_STATE_VERSION}")
    arrays = 3 if version == 1 else 4
    at = _COUNTERPARTY_HEADER.size
    four = np.zeros((4, nd), np.int64)
    four[:arrays] = np.frombuffer(blob, "<i4", arrays * nd, at).reshape(arrays, nd)
    at += 4 * arrays * nd
    return (four, np.zeros((2, nd), np.int64), _unpack_strings(blob, at + 4 * nl, nl),
            np.frombuffer(blob, "<i4", nl, at).astype(np.int64))


@dataclass
class _CounterpartyPriors:
    """The states of a batch's counterparties, flat: one entry per (counterparty, day)."""

    code: np.ndarray  # the counterparty's index in the batch's ids
    days: np.ndarray
    counts: np.ndarray
    frauds: np.ndarray
    strangers: np.ndarray
    log_amounts: np.ndarray
    log_squares: np.ndarray
    last: np.ndarray  # per id: the state's last_micros, INT64_MIN without a state
    labelled: dict[int, tuple[list[str], np.ndarray]]  # per code with any: ids, days


def _decode_counterparties(ids: Sequence[str], states: Mapping[str, bytes]
                           ) -> _CounterpartyPriors:
    """Every state among ids at once: per state only its header is read in Python."""
    last = np.full(len(ids), np.iinfo(np.int64).min, dtype=np.int64)
    codes, small, large, labelled = [], [], [], {}
    header = _COUNTERPARTY_HEADER
    for c, cp_id in enumerate(ids):
        blob = states.get(cp_id)
        if blob is None:
            continue
        version, last[c], nd, nl = header.unpack_from(blob)
        if version == COUNTERPARTY_STATE_VERSION:
            at = header.size
            small.append(np.frombuffer(blob, "<i4", 4 * nd, at).reshape(4, nd))
            large.append(np.frombuffer(blob, "<i8", 2 * nd, at + 16 * nd).reshape(2, nd))
            if nl:
                at += 32 * nd
                labelled[c] = (_unpack_strings(blob, at + 4 * nl, nl),
                               np.frombuffer(blob, "<i4", nl, at).astype(np.int64))
        else:
            four, two, names, days = _decode_older_counterparty(blob, version, nd, nl)
            small.append(four)
            large.append(two)
            if nl:
                labelled[c] = (names, days)
        codes.append(np.full(nd, c, dtype=np.int64))
    four = np.concatenate(small, axis=1).astype(np.int64) if small \
        else np.zeros((4, 0), np.int64)
    two = np.concatenate(large, axis=1).astype(np.int64) if large \
        else np.zeros((2, 0), np.int64)
    code = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    return _CounterpartyPriors(code, *four, *two, last, labelled)


def _encode_counterparties(ids: Sequence[str], last: np.ndarray, code: np.ndarray,
                           day: np.ndarray, sums: Sequence[np.ndarray],
                           labelled: Mapping[int, tuple[list[str], np.ndarray]]
                           ) -> dict[str, bytes]:
    """Each id's encode_counterparty, from its day entries (code, day ascending; sums:
    counts, frauds, strangers, log amounts, log squares) and labelled transactions."""
    bounds = np.searchsorted(code, np.arange(len(ids) + 1)).tolist()
    small = np.stack([day, *sums[:3]]).astype("<i4")
    large = np.stack(sums[3:]).astype("<i8")
    header = _COUNTERPARTY_HEADER.pack
    none: tuple[list[str], np.ndarray] = ([], np.zeros(0, np.int64))
    states: dict[str, bytes] = {}
    for c, (cp_id, latest) in enumerate(zip(ids, last.tolist(), strict=True)):
        lo, hi = bounds[c], bounds[c + 1]
        names, days = labelled.get(c, none)
        states[cp_id] = b"".join((
            header(COUNTERPARTY_STATE_VERSION, latest, hi - lo, len(names)),
            small[:, lo:hi].tobytes(), large[:, lo:hi].tobytes(),
            days.astype("<i4").tobytes(), _pack_strings(names)))
    return states


def _log_amount_units(table: pa.Table) -> np.ndarray:
    amount, _ = _int_column(table, "amount_cents")
    amount = np.maximum(amount, 1)
    return np.rint(np.log(amount) * LOG_AMOUNT_UNITS).astype(np.int64)


def _smoothed(part: np.ndarray, total: np.ndarray, prior: float) -> np.ndarray:
    """part / total as if PRIOR_WEIGHT more transactions had had the prior share."""
    return (part + PRIOR_WEIGHT * prior) / (total + PRIOR_WEIGHT)


def risky(table: pa.Table) -> np.ndarray:
    return ~np.isin(_strings(table, "counterparty_type"), list(NO_RISK_TYPES))


def _is_fraud(table: pa.Table, name: str = "label") -> np.ndarray:
    labels = table[name].combine_chunks()
    return pc.fill_null(pc.not_equal(labels, LEGIT), False).to_numpy(zero_copy_only=False)


def counterparty_features(table: pa.Table, labels: pa.Table | None,
                          states: Mapping[str, bytes] | None, delay_days: int = DELAY_DAYS,
                          window_days: int = WINDOW_DAYS, keep_state: bool = True,
                          ) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """Each row's COUNTERPARTY_FEATURES: its counterparty's transactions and their fraud
    share over windows ending delay_days before the row's day, from the state, the
    batch's rows (their own labels) and analysts' labels given at or before the row's
    time. Cash counterparties carry none."""
    states = states or {}
    n = table.num_rows
    cp = _strings(table, "counterparty_id")
    t = micros(table)
    day = t // DAY_MICROS
    counted = risky(table)
    labels = labels if labels is not None else LABEL_SCHEMA.empty_table()
    label_cp = _strings(labels, "counterparty_id")
    ids = sorted(set(cp[counted].tolist()) | set(label_cp.tolist()))
    code = np.full(n, -1, dtype=np.int64)
    if counted.any():
        code[counted] = _codes(cp[counted], ids)
    prior = _decode_counterparties(ids, states)
    # Analysts' labels, each transaction counted once: not in the state, first in the batch.
    label_ids = _strings(labels, "transaction_id")
    label_code = _codes(label_cp, ids) if labels.num_rows else np.zeros(0, np.int64)
    label_at = micros(labels, "labelled_at")
    label_day = micros(labels, "transaction_time") // DAY_MICROS
    seen = {(c, x) for c, (names, _) in prior.labelled.items() for x in names}
    fresh = np.zeros(labels.num_rows, dtype=bool)
    for i in np.argsort(label_at, kind="stable").tolist():
        pair = (int(label_code[i]), label_ids[i])
        fresh[i] = pair not in seen
        seen.add(pair)
    label_fraud = fresh & _is_fraud(labels)

    # Per (counterparty, day): transactions and frauds, of the state and of the batch.
    row_fraud = _is_fraud(table)
    day_code = np.concatenate([code[counted], prior.code])
    day_day = np.concatenate([day[counted], prior.days])
    day_count = np.concatenate([np.ones(int(counted.sum()), np.int64), prior.counts])
    day_fraud = np.concatenate([row_fraud[counted].astype(np.int64), prior.frauds])
    day_strangers = np.concatenate([_bools(table, "new_counterparty")[counted].astype(np.int64),
                                    prior.strangers])
    log_amount = _log_amount_units(table)
    day_log = np.concatenate([log_amount[counted], prior.log_amounts])
    day_log_sq = np.concatenate([log_amount[counted] ** 2, prior.log_squares])
    keys = day_code * (1 << 32) + day_day
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    count = np.concatenate([[0], np.cumsum(day_count[order])])
    fraud = np.concatenate([[0], np.cumsum(day_fraud[order])])
    stranger = np.concatenate([[0], np.cumsum(day_strangers[order])])
    logs = np.concatenate([[0], np.cumsum(day_log[order])])
    squares = np.concatenate([[0], np.cumsum(day_log_sq[order])])
    newest = day - delay_days  # exclusive: labels before it are known
    row_key = np.maximum(code, 0) * (1 << 32)
    hi = np.searchsorted(keys, row_key + newest, side="left")
    verdicts = np.flatnonzero(label_fraud).tolist()  # few: analysts' verdicts
    counted_row = code >= 0

    def window(days: int) -> tuple[np.ndarray, np.ndarray]:
        """(transactions, smoothed fraud share) over the days ending `newest`."""
        lo = np.searchsorted(keys, row_key + newest - days, side="left")
        total, frauds = count[hi] - count[lo], fraud[hi] - fraud[lo]
        for i in verdicts:
            frauds = frauds + ((code == label_code[i]) & (t >= label_at[i])
                               & (label_day[i] >= newest - days) & (label_day[i] < newest))
        share = _smoothed(frauds, total, PRIOR_FRAUD_RATE)
        return (np.where(counted_row, total, 0).astype(np.float64),
                round6(np.where(counted_row, share, 0.0)))

    features = {"counterparty_risk": window(window_days)[1]}
    for d in COUNTERPARTY_WINDOWS:
        features[f"counterparty_count_{d}d"], features[f"counterparty_fraud_{d}d"] = window(d)

    def days_back(first: int, last: int, *sums: np.ndarray) -> tuple[np.ndarray, ...]:
        """Transactions and each of sums (cumulative, by key) over the days [first, last)
        back from the row's; by default sums are the strangers."""
        lo = np.searchsorted(keys, row_key + day - first, side="left")
        hi = np.searchsorted(keys, row_key + day - last, side="left")
        return tuple(c[hi] - c[lo] for c in (count, *(sums or (stranger,))))

    recent = {d: days_back(d, 0) for d in STRANGER_WINDOWS}
    for d, (total, strangers) in recent.items():
        share = _smoothed(strangers, total, PRIOR_STRANGER_SHARE)
        features[f"counterparty_strangers_{d}d"] = round6(np.where(counted_row, share, 0.0))
    usual_from, usual_to = USUAL_STRANGER_DAYS
    usual_total, usual_strangers = days_back(usual_from, usual_to)
    usual = usual_strangers / (usual_from - usual_to)
    yesterday, last_week = recent[1][1], recent[7][1]
    for name, values in zip(STRANGER_COUNT_FEATURES, (
            yesterday, usual, _smoothed(usual_strangers, usual_total, PRIOR_STRANGER_SHARE),
            yesterday - usual, last_week / 7 - usual), strict=True):
        features[name] = round6(np.where(counted_row, values, 0.0))
    n_amounts, log_sum, square_sum = days_back(AMOUNT_DAYS, 0, logs, squares)
    weight = n_amounts + AMOUNT_PRIOR_WEIGHT
    mean = (log_sum / LOG_AMOUNT_UNITS + AMOUNT_PRIOR_WEIGHT * PRIOR_LOG_AMOUNT) / weight
    variance = (square_sum / LOG_AMOUNT_UNITS ** 2 + AMOUNT_PRIOR_WEIGHT * (
        PRIOR_LOG_AMOUNT_VARIANCE + PRIOR_LOG_AMOUNT ** 2)) / weight - mean ** 2
    zscore = (log_amount / LOG_AMOUNT_UNITS - mean) / np.sqrt(np.maximum(variance, 1e-6))
    for name, values in zip(AMOUNT_FEATURES, (mean, zscore), strict=True):
        features[name] = round6(np.where(counted_row, values, 0.0))
    if not keep_state:
        return features, {}

    # The new state of each counterparty in the batch, all at once: its day entries of
    # the state, the rows and analysts' fraud verdicts (a fraud, no transaction), from
    # the oldest day any window reaches back from its last moment.
    last = prior.last.copy()
    np.maximum.at(last, code[counted], t[counted])
    np.maximum.at(last, label_code, label_at)
    oldest = last // DAY_MICROS - max(delay_days + max(window_days, *COUNTERPARTY_WINDOWS),
                                      USUAL_STRANGER_DAYS[0], AMOUNT_DAYS)
    verdict_code, verdict_day = label_code[label_fraud], label_day[label_fraud]
    no_rows = np.zeros(len(verdict_code), np.int64)
    add_code = np.concatenate([day_code, verdict_code])
    add_day = np.concatenate([day_day, verdict_day])
    keep = add_day >= oldest[add_code]
    key, *sums = _group_sums(
        (add_code * (1 << 32) + add_day)[keep],
        *(np.concatenate([values, extra])[keep]
          for values, extra in ((day_count, no_rows), (day_fraud, no_rows + 1),
                                (day_strangers, no_rows), (day_log, no_rows),
                                (day_log_sq, no_rows))))
    # Labelled transactions, recorded once: the state's and the batch's fresh verdicts,
    # as long as their day is within reach.
    labelled: dict[int, tuple[list[str], np.ndarray]] = {}
    new_labels = np.flatnonzero(fresh)
    for c in set(prior.labelled) | set(label_code[new_labels].tolist()):
        mine = new_labels[label_code[new_labels] == c]
        names, days = prior.labelled.get(c, ([], np.zeros(0, np.int64)))
        names = names + label_ids[mine].tolist()
        days = np.concatenate([days, label_day[mine]])
        still = days >= oldest[c]
        labelled[c] = ([x for x, s in zip(names, still.tolist(), strict=True) if s],
                       days[still])
    new_states = _encode_counterparties(ids, last, key >> 32, key & 0xFFFFFFFF, sums,
                                        labelled)
    return features, new_states


def _column(table: pa.Table, features: Mapping[str, np.ndarray],
            name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, present) of a field a rule names; strings and other types as objects."""
    if name in features:
        values = features[name]
        return values, np.ones(len(values), dtype=bool)
    if name not in TRANSACTION_SCHEMA.names:
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


def _leaf_hit(op, actual: Any, value: Any) -> bool:
    if actual is None:
        return False
    try:
        return bool(op(actual, value))
    except TypeError:
        return False


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
    """A condition over whole columns: the leaf that decided each true row, -1 if false
    (for `all`, the last leaf; for `any`, the first true one; `not` names no leaf)."""
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
    """The hits of each row that has any, in rule order, with the field and value."""
    hits: dict[int, list[RuleHit]] = {}
    for rule, rows, found in _firings(rules, table, features):
        for row, (field, value) in zip(rows.tolist(), found, strict=True):
            hits.setdefault(row, []).append(
                RuleHit(rule.rule_id, rule.description, field, value, rule.weight))
    return hits


def hit_text(rule_id: str, description: str, field: str, value: Any) -> str:
    shown = f"{value:.2f}" if isinstance(value, float) else value
    return f"{description or rule_id} [{rule_id}: {field} = {shown}]"


def features_of(table: pa.Table) -> dict[str, np.ndarray]:
    """The account features of a featured table, and those derived from them, as numpy
    arrays."""
    out = {}
    for name in ACCOUNT_FEATURES:
        column = table[name].combine_chunks()
        out[name] = column.to_numpy(zero_copy_only=False)
    amount, _ = _int_column(table, "amount_cents")
    for window in MEAN_WINDOWS:
        count = out[f"count_{window}"]
        mean = np.where(count > 0, out[f"amount_{window}"] / np.maximum(count, 1), 0.0)
        out[f"mean_{window}"] = round6(mean)
        out[f"amount_to_mean_{window}"] = round6(
            np.where(count > 0, amount / np.maximum(mean, 1.0), 1.0))
    return out


def model_columns(table: pa.Table, features: Mapping[str, np.ndarray],
                  rules_score: np.ndarray) -> list[np.ndarray]:
    """The model's input (MODEL_FEATURES) for every row, a float64 array per feature."""
    t = micros(table)
    amount, _ = _int_column(table, "amount_cents")
    tx_type, cp_type = _strings(table, "tx_type"), _strings(table, "counterparty_type")
    columns = [features[name].astype(np.float64, copy=False) for name in FEATURE_NAMES]
    # math.log1p, not numpy's: the same bits on every machine's CPU.
    columns.append(np.array([math.log1p(a) for a in amount.tolist()]))
    columns.append((t // HOUR_MICROS % 24).astype(np.float64))
    columns.extend((tx_type == kind).astype(np.float64) for kind in TX_TYPES)
    columns.extend((cp_type == kind).astype(np.float64) for kind in COUNTERPARTY_TYPES)
    columns.append(np.asarray(rules_score, dtype=np.float64))
    return columns


def model_matrix(table: pa.Table, features: Mapping[str, np.ndarray],
                 rules_score: np.ndarray) -> np.ndarray:
    """The model's input (MODEL_FEATURES) for every row, a row per transaction."""
    if not len(table):
        return np.zeros((0, len(MODEL_FEATURES)))
    return np.column_stack(model_columns(table, features, rules_score))


@dataclass
class Decider:
    """Rules, threshold and an optional model (with its version): the decision."""

    rules: Sequence[Rule]
    threshold: float = 0.5
    model: Any = None
    model_version: str = ""


def counterparty_step(featured: pa.Table, states: Mapping[str, bytes] | None,
                      decider: Decider | None, labels: pa.Table | None = None,
                      delay_days: int = DELAY_DAYS, window_days: int = WINDOW_DAYS,
                      keep_state: bool = True, features_only: bool = False,
                      ) -> tuple[pa.Table, dict[str, bytes]]:
    """Featured rows of some counterparties -> (scored rows (SCORED_SCHEMA), or with
    features_only the training table (FEATURE_TABLE_SCHEMA); the counterparties' new
    state). labels: analysts' verdicts (LABEL_SCHEMA) on those counterparties."""
    table = in_order(featured, "counterparty_id")
    features, new_states = counterparty_features(table, labels, states, delay_days,
                                                 window_days, keep_state)
    features.update(features_of(table))
    if features_only:
        return training_rows(table, features, decider.rules if decider else ()), new_states
    return decide(table, features, decider), new_states


def rules_score(rules: Sequence[Rule], table: pa.Table, features: Mapping[str, np.ndarray]
                ) -> tuple[np.ndarray, list[tuple[Rule, np.ndarray, list]]]:
    """The rules' noisy-or per row (factors multiplied in rule order), and each rule's
    firings: (rule, rows, what it found in each)."""
    remaining = np.ones(table.num_rows)
    firings = list(_firings(rules, table, features))
    for rule, rows, _ in firings:
        remaining[rows] *= 1.0 - rule.weight
    return round6(1.0 - remaining), firings


def training_rows(table: pa.Table, features: Mapping[str, np.ndarray],
                  rules: Sequence[Rule]) -> pa.Table:
    """What `train` and `evaluate` learn from: each transaction's label and its model
    input (the rules' noisy-or included)."""
    model_input = model_columns(table, features, rules_score(rules, table, features)[0])
    columns = {name: table[name] for name in FEATURE_TABLE_SCHEMA.names[:5]}
    # Column by column: a whole matrix, then its columns copied out, held it twice more.
    columns.update(zip(MODEL_FEATURES, map(pa.array, model_input), strict=True))
    return pa.table(columns, schema=FEATURE_TABLE_SCHEMA)


def decide(table: pa.Table, features: Mapping[str, np.ndarray], decider: Decider) -> pa.Table:
    """Score, flag and reasons. The score is the rules' noisy-or, or with a model the
    model's probability given the features and that noisy-or; the reasons name every
    rule that fired, and the model's probability."""
    n = table.num_rows
    score, firings = rules_score(decider.rules, table, features)
    reason_rows: list[np.ndarray] = []
    reason_texts: list[str] = []
    for rule, rows, found in firings:
        reason_rows.append(rows)
        reason_texts.extend(hit_text(rule.rule_id, rule.description, field, value)
                            for field, value in found)
    if decider.model is not None and n:
        probabilities = decider.model.predict_proba(model_matrix(table, features, score))[:, 1]
        score = round6(probabilities)
        name = decider.model_version or "score"
        reason_rows.append(np.arange(n))
        reason_texts.extend(f"model {name}: {p:.2f}" for p in probabilities.tolist())
    late = _bools(table, "late")
    late_rows = np.flatnonzero(late)
    reason_rows.append(late_rows)
    reason_texts.extend([LATE_REASON] * len(late_rows))
    rows = np.concatenate(reason_rows) if reason_rows else np.zeros(0, dtype=np.int64)
    in_row_order = np.argsort(rows, kind="stable")  # keeps rule order within a row
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    reasons = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(reason_texts, type=pa.string()).take(in_row_order))
    columns = [table[name] for name in [*TRANSACTION_SCHEMA.names, POSITION]]
    columns += [pa.array(score), pa.array(score >= decider.threshold), reasons,
                pa.array(late), pa.array([decider.model_version] * n, type=pa.string())]
    return pa.Table.from_arrays(columns, schema=SCORED_SCHEMA)


def detect(table: pa.Table, decider: Decider, labels: pa.Table | None = None,
           delay_days: int = DELAY_DAYS, window_days: int = WINDOW_DAYS,
           features_only: bool = False) -> pa.Table:
    """Whole histories from empty state, in one process: both steps in a row."""
    featured, _ = account_step(table, None, keep_state=False)
    scored, _ = counterparty_step(featured, None, decider, labels, delay_days, window_days,
                                  keep_state=False, features_only=features_only)
    return scored


# --- between steps: shards, records, labels ---------------------------------------------

def shard_of(ids: pa.Array | pa.ChunkedArray, shards: int) -> np.ndarray:
    """A stable shard per id (crc32), so an id's rows meet whatever batch they came in."""
    unique = pc.unique(ids)
    shard = np.array([zlib.crc32(a.encode()) % shards for a in unique.to_pylist()],
                     dtype=np.int64)
    return shard[pc.index_in(ids, value_set=unique).to_numpy()] if len(unique) \
        else np.zeros(0, np.int64)


def split_by(table: pa.Table, key: str, shards: int) -> Iterator[tuple[int, pa.Table]]:
    """(shard, rows) per shard of `key`. By counterparty, cash rows (no risk, no state)
    shard by account instead, so the one shared ATM does not load one shard."""
    shard = shard_of(table[key], shards)
    if key == "counterparty_id" and "counterparty_type" in table.column_names:
        cash = ~risky(table)
        if cash.any():
            shard[cash] = shard_of(table["account_id"].filter(pa.array(cash)), shards)
    # One take in shard order, then zero-copy slices: a filter per shard costs a pass each.
    order = np.argsort(shard, kind="stable")
    ordered = table.take(pa.array(order))
    counts = np.bincount(shard, minlength=shards)
    start = 0
    for s, count in enumerate(counts.tolist()):
        if count:
            yield s, ordered.slice(start, count)
        start += count


def labels_table(events: Sequence[Any]) -> pa.Table:
    """LabelEvents -> LABEL_SCHEMA."""
    return pa.table({name: pa.array([getattr(e, name) for e in events], type=field.type)
                     for name, field in zip(LABEL_SCHEMA.names, LABEL_SCHEMA, strict=True)},
                    schema=LABEL_SCHEMA)


def scored_table(scored: Sequence[ScoredTransaction]) -> pa.Table:
    """ScoredTransaction records -> a table of SCORED_SCHEMA (scored_records' inverse)."""
    table = table_of([s.transaction for s in scored])
    columns = {"score": [s.score for s in scored], "flagged": [s.flagged for s in scored],
               "reasons": [list(s.reasons) for s in scored], "late": [s.late for s in scored],
               "model_version": [s.model_version for s in scored]}
    for name, values in columns.items():
        table = table.append_column(SCORED_SCHEMA.field(name), pa.array(
            values, type=SCORED_SCHEMA.field(name).type))
    return table.select(SCORED_SCHEMA.names)


def transactions_of(table: pa.Table) -> Iterator[Transaction]:
    """table_of's inverse."""
    for row, _ in _transactions(table):
        yield row


def _transactions(table: pa.Table) -> Iterator[tuple[Transaction, dict[str, Any]]]:
    names = TRANSACTION_SCHEMA.names
    has_position = POSITION in table.column_names
    for row in table.to_pylist():
        yield Transaction(**{k: row[k] for k in names},
                          position=row[POSITION] if has_position else ""), row


def scored_records(table: pa.Table) -> Iterator[ScoredTransaction]:
    for tx, row in _transactions(table):
        yield ScoredTransaction(tx, row["score"], row["flagged"], tuple(row["reasons"]),
                                row["late"], row["model_version"])


def flagged_records(table: pa.Table) -> Iterator[ScoredTransaction]:
    return scored_records(table.filter(table["flagged"]))


def on_days(table: pa.Table, first_day: int, last_day: int) -> pa.Array:
    """Which rows have an event time (UTC) on an epoch day from first_day to last_day."""
    day = micros(table) // DAY_MICROS
    return pa.array((day >= first_day) & (day <= last_day))

