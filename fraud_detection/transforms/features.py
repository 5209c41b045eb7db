"""Per-account behaviour in event time: one pure state machine with bounded state.

`AccountHistory.observe(tx)` returns the features of `tx` against everything the
account did before it, then adds `tx`. Feed it an account's transactions in
event-time order (the stateful DoFn and the batch path both do) and the result
does not depend on the runner.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import apache_beam as beam

from fraud_detection.records import CREDIT_TX_TYPES, Transaction
from fraud_detection.transforms.benford import MIN_SAMPLE as BENFORD_MIN_SAMPLE
from fraud_detection.transforms.benford import (
    NONCONFORMITY,
    first_digit_counts,
    result_from_counts,
    two_digit_prefix,
    window_index,
)
from fraud_detection.transforms.ordered import EventTimeOrderedFn

HOUR = 3600
WINDOWS_HOURS = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}
MAX_HOURS = max(WINDOWS_HOURS.values())
RECENT_AMOUNTS = 200  # robust z-score over the account's last N amounts
MAX_COUNTERPARTIES = 1_000  # least recently paid forgotten first
MIN_HISTORY_FOR_ZSCORE = 5
BENFORD_WINDOW_DAYS = 30  # as BenfordReports' default, so the verdict matches the report


@dataclass(frozen=True, slots=True)
class Features:
    count_1h: int
    amount_1h: int
    count_24h: int
    amount_24h: int
    count_7d: int
    amount_7d: int
    count_30d: int
    amount_30d: int
    amount_zscore: float  # robust: (amount - median) / (1.4826 * MAD); 0 without history
    amount_to_median: float  # amount / median of recent amounts; 1 without history
    seconds_since_last: float  # -1 for the account's first transaction
    new_counterparty: bool
    balance_mismatch: bool
    night: bool  # 00:00-05:59 UTC
    weekend: bool
    # The account's amounts in the previous Benford window broke Benford's law
    # (first-digit MAD "nonconformity" on at least benford.MIN_SAMPLE amounts).
    benford_nonconforming: bool = False
    # Set by the counterparty stage (transforms/counterparty.py), not by AccountHistory.
    counterparty_risk: float = 0.0

    def as_vector(self) -> list[float]:
        return [float(getattr(self, name)) for name in FEATURE_NAMES]


FEATURE_NAMES = tuple(Features.__dataclass_fields__)


def _hour(t: dt.datetime) -> int:
    return int(t.timestamp()) // HOUR


def balance_mismatch(tx: Transaction) -> bool:
    if tx.balance_before_cents is None or tx.balance_after_cents is None:
        return False
    sign = 1 if tx.tx_type in CREDIT_TX_TYPES else -1
    return tx.balance_before_cents + sign * tx.amount_cents != tx.balance_after_cents


def robust_zscore(amount: int, history: list[int]) -> tuple[float, float]:
    """(z, amount / median) of amount against history, (0, 1) when too little history."""
    if len(history) < MIN_HISTORY_FOR_ZSCORE:
        return 0.0, 1.0
    ordered = sorted(history)
    median = _median(ordered)
    mad = _median(sorted(abs(a - median) for a in ordered))
    # A flat history (MAD 0) still needs a scale: one cent, or a tenth of the median.
    scale = 1.4826 * mad if mad else max(median * 0.1, 1.0)
    ratio = amount / median if median else float(amount > 0) * 1e6
    return (amount - median) / scale, ratio


def _median(ordered: list[int] | list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass
class AccountHistory:
    """What one account did: hour buckets, recent amounts, known counterparties."""

    buckets: dict[int, list[int]] = field(default_factory=dict)  # hour -> [count, amount]
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_AMOUNTS))
    counterparties: OrderedDict = field(default_factory=OrderedDict)
    last_time: dt.datetime | None = None
    # Benford window index -> counts of two-digit prefixes (index 10..99); two windows.
    digits: dict[int, list[int]] = field(default_factory=dict)
    nonconforming: dict[int, bool] = field(default_factory=dict)  # a finished window's verdict

    def features(self, tx: Transaction) -> Features:
        hour = _hour(tx.event_time)
        sums = {name: [0, 0] for name in WINDOWS_HOURS}
        # Few buckets exist per account, so walk them rather than every hour of 30 days.
        for h, (count, amount) in self.buckets.items():
            age = hour - h
            if age < 0:
                continue  # a later event already seen: not "before" this one
            for name, hours in WINDOWS_HOURS.items():
                if age < hours:
                    sums[name][0] += count
                    sums[name][1] += amount
        z, ratio = robust_zscore(tx.amount_cents, list(self.recent))
        previous = window_index(tx.event_time.timestamp(), BENFORD_WINDOW_DAYS) - 1
        # -1 for the first transaction; 0 for a late one (the last was after it).
        since = (max((tx.event_time - self.last_time).total_seconds(), 0.0)
                 if self.last_time else -1.0)
        return Features(
            count_1h=sums["1h"][0], amount_1h=sums["1h"][1],
            count_24h=sums["24h"][0], amount_24h=sums["24h"][1],
            count_7d=sums["7d"][0], amount_7d=sums["7d"][1],
            count_30d=sums["30d"][0], amount_30d=sums["30d"][1],
            amount_zscore=round(z, 6) if math.isfinite(z) else 0.0,
            amount_to_median=round(ratio, 6),
            seconds_since_last=since,
            new_counterparty=tx.counterparty_id not in self.counterparties,
            balance_mismatch=balance_mismatch(tx),
            night=tx.event_time.hour < 6,
            weekend=tx.event_time.weekday() >= 5,
            benford_nonconforming=self._nonconforming(previous),
        )

    def _nonconforming(self, window: int) -> bool:
        if window not in self.nonconforming:
            counts = self.digits.get(window)
            if counts is None or sum(counts) < BENFORD_MIN_SAMPLE:
                return False
            level = result_from_counts(first_digit_counts(counts), 1).level
            self.nonconforming[window] = level == NONCONFORMITY
        return self.nonconforming[window]

    def add(self, tx: Transaction) -> None:
        hour = _hour(tx.event_time)
        bucket = self.buckets.setdefault(hour, [0, 0])
        bucket[0] += 1
        bucket[1] += tx.amount_cents
        # Hour buckets older than the longest window can never count again.
        oldest = hour - MAX_HOURS
        for h in [h for h in self.buckets if h <= oldest]:
            del self.buckets[h]
        self.recent.append(tx.amount_cents)
        window = window_index(tx.event_time.timestamp(), BENFORD_WINDOW_DAYS)
        prefix = two_digit_prefix(tx.amount_cents)
        if prefix is not None:
            self.digits.setdefault(window, [0] * 100)[prefix] += 1
            self.nonconforming.pop(window, None)  # a late amount changes the verdict
        for old in [w for w in self.digits if w < window - 1]:
            del self.digits[old]
            self.nonconforming.pop(old, None)
        self.counterparties[tx.counterparty_id] = None
        self.counterparties.move_to_end(tx.counterparty_id)
        while len(self.counterparties) > MAX_COUNTERPARTIES:
            self.counterparties.popitem(last=False)
        if self.last_time is None or tx.event_time > self.last_time:
            self.last_time = tx.event_time

    def observe(self, tx: Transaction) -> Features:
        result = self.features(tx)
        self.add(tx)
        return result


def event_order_key(tx: Transaction) -> tuple[dt.datetime, str]:
    """The one order every path processes an account's transactions in."""
    return tx.event_time, tx.transaction_id


@dataclass(frozen=True, slots=True)
class FeaturedTransaction:
    transaction: Transaction
    features: Features
    late: bool  # an event of the account that came after it was processed first


class AccountFeaturesFn(EventTimeOrderedFn):
    """An account's transactions through AccountHistory in event-time order."""

    def event_time(self, element: Transaction) -> dt.datetime:
        return element.event_time

    def order_key(self, element: Transaction) -> tuple[dt.datetime, str]:
        return event_order_key(element)

    def new_state(self) -> AccountHistory:
        return AccountHistory()

    def last_time(self, state: AccountHistory) -> dt.datetime | None:
        return state.last_time

    def step(self, state: AccountHistory, element: Transaction, late: bool):
        yield FeaturedTransaction(element, state.observe(element), late)


class ComputeAccountFeatures(beam.PTransform):
    """Transactions (timestamped by event time) -> FeaturedTransaction, per account."""

    def expand(self, transactions):
        return (transactions
                | "KeyByAccount" >> beam.Map(lambda t: (t.account_id, t))
                | "InEventTimeOrder" >> beam.ParDo(AccountFeaturesFn(transactions.is_bounded)))
