"""Counterparty risk from delayed labels: kernel.counterparty_features / counterparty_step,
and DetectFraud with analysts' labels on Beam."""

import datetime as dt
import math

import apache_beam as beam
import pyarrow as pa

from fraud_detection.records import LabelEvent, Transaction
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.kernel import PRIOR_FRAUD_RATE, PRIOR_WEIGHT
from tests.unit.kernel_rows import collect, featured_rows, table_rows

T0 = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


_count = iter(range(10**9))


def tx(when: dt.datetime, label: str | None, merchant: str = "m-1",
       cp_type: str = "merchant", amount: int = 1000) -> Transaction:
    i = next(_count)
    return Transaction(f"t-{i:06d}", when, "b", f"u-{i % 7}", f"a-{i % 7}", merchant, cp_type,
                       "PAYMENT", amount, "EUR", label=label)


def _table(transactions, new_payers: frozenset[str] = frozenset()) -> pa.Table:
    """As the counterparty step gets them, with the account step's new_counterparty:
    true for the transaction ids in new_payers."""
    table = kernel.in_order(kernel.table_of(transactions), "counterparty_id")
    ids = table["transaction_id"].to_pylist()
    return table.append_column("new_counterparty",
                               pa.array([i in new_payers for i in ids], type=pa.bool_()))


def smoothed(frauds: int, total: int) -> float:
    """The share the kernel gives frauds of total, with its prior."""
    return round((frauds + PRIOR_WEIGHT * PRIOR_FRAUD_RATE) / (total + PRIOR_WEIGHT), 6)


def usual_ticket(before: list[int], amount: int) -> tuple[float, float]:
    """(mean log amount, this amount's z-score) against the tickets before, with the
    kernel's prior, log amounts in its fixed point."""
    def log(a: int) -> float:
        return round(math.log(a) * kernel.LOG_AMOUNT_UNITS) / kernel.LOG_AMOUNT_UNITS

    weight = len(before) + kernel.AMOUNT_PRIOR_WEIGHT
    prior = kernel.AMOUNT_PRIOR_WEIGHT * kernel.PRIOR_LOG_AMOUNT
    mean = (sum(map(log, before)) + prior) / weight
    square = (sum(log(a) ** 2 for a in before) + kernel.AMOUNT_PRIOR_WEIGHT * (
        kernel.PRIOR_LOG_AMOUNT_VARIANCE + kernel.PRIOR_LOG_AMOUNT ** 2)) / weight
    return round(mean, 6), round((log(amount) - mean) / math.sqrt(square - mean ** 2), 6)


def risk_of(table, labels, states, delay_days, window_days, keep_state=True):
    features, changed = kernel.counterparty_features(table, labels, states, delay_days,
                                                     window_days, keep_state)
    return features["counterparty_risk"], changed


def _labels(events) -> pa.Table | None:
    return kernel.labels_table(events) if events else None


class Counterparty:
    """History (and labels) fed to the kernel in batches, state carried; `risk(at)` is
    what a transaction at `at` would see. Every answer is checked against one call over
    the whole history plus that transaction, from empty state."""

    def __init__(self, delay_days: int, window_days: int) -> None:
        self.delay_days, self.window_days = delay_days, window_days
        self.states: dict[str, bytes] = {}
        self.history: list[Transaction] = []
        self.events: list[LabelEvent] = []

    def add(self, transactions=(), events=()) -> None:
        transactions, events = list(transactions), list(events)
        _, changed = risk_of(
            _table(transactions) if transactions else _table([]), _labels(events),
            self.states, self.delay_days, self.window_days)
        self.states.update(changed)
        self.history += transactions
        self.events += events

    def risk(self, at: dt.datetime, merchant: str = "m-1") -> float:
        probe = tx(at, None, merchant)
        carried, _ = risk_of(_table([probe]), None, self.states,
                                              self.delay_days, self.window_days,
                                              keep_state=False)
        whole = _table([*self.history, probe])
        at_once, _ = risk_of(whole, _labels(self.events), None,
                                              self.delay_days, self.window_days,
                                              keep_state=False)
        row = whole["transaction_id"].to_pylist().index(probe.transaction_id)
        assert carried[0] == at_once[row], at
        return float(carried[0])


def test_labels_count_only_after_the_delay_and_within_the_window():
    history = Counterparty(delay_days=7, window_days=14)
    history.add([tx(day(0), "compromised_merchant" if i < 5 else "legit") for i in range(20)])
    assert history.risk(day(0)) == smoothed(0, 0) == PRIOR_FRAUD_RATE
    assert history.risk(day(6)) == smoothed(0, 0)  # the frauds are not confirmed yet
    assert history.risk(day(7.5)) == smoothed(5, 20)
    assert history.risk(day(20)) == smoothed(5, 20)  # day 0 is still inside [day 6, day 20)
    assert history.risk(day(22)) == smoothed(0, 0)  # and now it has left the window
    assert history.risk(day(7.5), merchant="m-2") == smoothed(0, 0)  # another's


def test_few_transactions_move_the_share_only_a_little():
    history = Counterparty(delay_days=1, window_days=7)
    history.add([tx(day(0), "card_testing")])
    assert history.risk(day(2)) == smoothed(1, 1) < 0.1  # one fraud is not a certainty
    history.add([tx(day(0), "card_testing") for _ in range(8)])
    history.add([tx(day(0), "legit")])
    assert history.risk(day(2)) == smoothed(9, 10) > 0.4


def test_cash_counterparties_carry_no_risk():
    rows = [tx(day(0), "card_testing", "atm", cp_type="cash") for _ in range(20)]
    rows.append(tx(day(3), None, "atm", cp_type="cash"))
    risk, states = risk_of(_table(rows), None, None, 1, 7)
    assert risk.tolist() == [0.0] * len(rows)
    assert states == {}


def test_a_label_event_counts_once_from_when_it_is_given():
    history = Counterparty(delay_days=0, window_days=7)
    live = [tx(day(0), None) for _ in range(10)]  # live transactions carry no label
    history.add(live)
    event = LabelEvent(live[0].transaction_id, "m-1", day(0), "compromised_merchant", day(1))
    assert history.risk(day(1.1)) == smoothed(0, 10)
    history.add(events=[event, event])  # an analyst's verdict delivered twice
    assert history.risk(day(1.1)) == smoothed(1, 10)
    # In one batch, only transactions at or after the verdict see it.
    before, after = tx(day(0.6), None), tx(day(1.1), None)
    both = _table([*live, before, after])
    risk, _ = risk_of(both, _labels([event, event]), None, 0, 7)
    ids = both["transaction_id"].to_pylist()
    assert (risk[ids.index(before.transaction_id)], risk[ids.index(after.transaction_id)]) \
        == (smoothed(0, 10), smoothed(1, 10))  # both on day 1, so both look at day 0's 10
    history.add(events=[event])  # and once more, in a later batch
    assert history.risk(day(1.1)) == smoothed(1, 10)
    state = kernel.decode_counterparty(history.states["m-1"])
    assert state.labelled == [live[0].transaction_id]
    # A verdict of legit, or one on another counterparty's transaction, adds nothing.
    history.add(events=[LabelEvent(live[1].transaction_id, "m-1", day(0), "legit", day(1)),
                        LabelEvent("t-other", "m-2", day(0), "card_testing", day(1))])
    assert history.risk(day(1.1)) == smoothed(1, 10)


def test_a_label_reaches_risk_only_after_the_delay_and_within_the_window():
    history = Counterparty(delay_days=7, window_days=14)
    live = [tx(day(0), None) for _ in range(10)]
    history.add(live)
    history.add(events=[LabelEvent(live[0].transaction_id, "m-1", day(0), "card_testing",
                                   day(1))])
    assert history.risk(day(6)) == smoothed(0, 0)
    assert history.risk(day(7.5)) == smoothed(1, 10)
    assert history.risk(day(22)) == smoothed(0, 0)
    # A verdict on a transaction already out of the window never counts.
    late_verdict = Counterparty(delay_days=7, window_days=14)
    late_verdict.add(live)
    late_verdict.add(events=[LabelEvent(live[0].transaction_id, "m-1", day(0), "card_testing",
                                        day(30))])
    assert late_verdict.risk(day(30)) == smoothed(0, 0)


def test_state_is_pruned_to_the_delay_plus_the_longest_window():
    history = Counterparty(delay_days=7, window_days=28)
    for n in range(200):
        history.add([tx(day(n), "legit")])
    state = kernel.decode_counterparty(history.states["m-1"])
    kept = 7 + max(28, *kernel.COUNTERPARTY_WINDOWS) + 1
    assert len(state.days) <= kept
    assert state.counts.tolist() == [1] * len(state.days)
    # Still counting the last 28 days ending 7 days back.
    assert history.risk(day(200)) == smoothed(0, 28)
    _, at_once = risk_of(_table(history.history), None, None, 7, 28)
    assert len(kernel.decode_counterparty(at_once["m-1"]).days) <= kept


def test_windows_of_one_seven_and_thirty_days_end_the_delay_back():
    rows = [tx(day(n), "card_testing" if n == 20 else "legit") for n in range(30)]
    probe = tx(day(28), None)
    table = _table([*rows, probe])
    features, _ = kernel.counterparty_features(table, None, None, 7, 28, keep_state=False)
    at = table["transaction_id"].to_pylist().index(probe.transaction_id)
    got = {name: float(features[name][at]) for name in kernel.COUNTERPARTY_FEATURES}
    # Day 28 sees the days before day 21: day 20 (the fraud), 14-20, 0-20.
    assert got == {"counterparty_risk": smoothed(1, 21),
                   "counterparty_count_1d": 1, "counterparty_fraud_1d": smoothed(1, 1),
                   "counterparty_count_7d": 7, "counterparty_fraud_7d": smoothed(1, 7),
                   "counterparty_count_30d": 21, "counterparty_fraud_30d": smoothed(1, 21),
                   # _table names no new payer.
                   "counterparty_strangers_1d": strangers(0, 1),
                   "counterparty_strangers_7d": strangers(0, 7),
                   "counterparty_strangers_count_1d": 0,
                   "counterparty_strangers_usual_per_day": 0,
                   # Its usual: days [30, 7) back, days 0-20 here.
                   "counterparty_strangers_usual_share": strangers(0, 21),
                   "counterparty_strangers_excess_1d": 0,
                   "counterparty_strangers_excess_7d": 0,
                   # Its usual ticket: days [30, 0) back, days 0-27 here.
                   **dict(zip(kernel.AMOUNT_FEATURES, usual_ticket([1000] * 28, 1000),
                              strict=True))}


def strangers(new: int, total: int) -> float:
    return round((new + PRIOR_WEIGHT * kernel.PRIOR_STRANGER_SHARE) / (total + PRIOR_WEIGHT), 6)


def test_a_terminal_paid_by_strangers_shows_from_the_next_day_without_any_label():
    def at(n: int, hour: int) -> dt.datetime:  # hour of day n, from midnight
        return dt.datetime(2024, 3, 1, tzinfo=dt.UTC) + dt.timedelta(days=n, hours=hour)

    regulars = [tx(at(n, h), "legit") for n in range(10) for h in (9, 12)]
    stolen = [tx(at(10, h), "compromised_merchant") for h in range(8)]
    same_day, next_day = tx(at(10, 20), None), tx(at(11, 1), None)
    # The account step's verdict: the regulars know the terminal, the stolen cards do not.
    table = _table([*regulars, *stolen, same_day, next_day],
                   frozenset(t.transaction_id for t in [*stolen, same_day, next_day]))
    ids = table["transaction_id"].to_pylist()
    features, _ = kernel.counterparty_features(table, None, None, 7, 28, keep_state=False)
    share = features["counterparty_strangers_1d"]
    today, tomorrow = ids.index(same_day.transaction_id), ids.index(next_day.transaction_id)
    assert share[today] == strangers(0, 2)  # day 9: two regulars
    assert share[tomorrow] == strangers(9, 9)  # day 10: the stolen cards and the probe
    assert features["counterparty_strangers_7d"][tomorrow] == strangers(9, 6 * 2 + 9)
    # Labels count from 7 days back: day 3, two legitimate sales, no fraud known yet.
    assert features["counterparty_fraud_1d"][tomorrow] == smoothed(0, 2)
    assert features["counterparty_strangers_count_1d"][tomorrow] == 9
    assert features["counterparty_strangers_excess_1d"][tomorrow] == 9  # usual: none


def test_a_small_shops_burst_of_new_payers_stands_out_against_its_own_usual():
    def at(n: int, hour: int) -> dt.datetime:
        return dt.datetime(2024, 3, 1, tzinfo=dt.UTC) + dt.timedelta(days=n, hours=hour)

    regulars = [tx(at(n, 9), "legit") for n in range(31)]
    walk_ins = [tx(at(n, 15), "legit") for n in range(30)]  # one new payer a day
    burst = [tx(at(30, h), "compromised_merchant") for h in range(6)]
    probe = tx(at(31, 1), None)
    table = _table([*regulars, *walk_ins, *burst, probe],
                   frozenset(t.transaction_id for t in [*walk_ins, *burst, probe]))
    features, _ = kernel.counterparty_features(table, None, None, 7, 28, keep_state=False)
    at_probe = table["transaction_id"].to_pylist().index(probe.transaction_id)
    got = {name: float(features[name][at_probe]) for name in kernel.STRANGER_COUNT_FEATURES}
    # Days 1-23 (30 to 7 back) held a walk-in a day among two sales.
    assert got == {"counterparty_strangers_count_1d": 6,
                   "counterparty_strangers_usual_per_day": 1,
                   "counterparty_strangers_usual_share": strangers(23, 46),
                   "counterparty_strangers_excess_1d": 5,
                   # Days 24-30: a walk-in a day, and the burst.
                   "counterparty_strangers_excess_7d": round(12 / 7 - 1, 6)}


def _pipeline_tx(i: int, when: dt.datetime, merchant: str, label: str | None) -> Transaction:
    return Transaction(f"t-{i:04d}", when, "b", f"u-{i % 7}", f"a-{i % 7}", merchant,
                       "merchant", "PAYMENT", 1000, "EUR", label=label)


def test_pipeline_gives_a_compromised_merchant_a_risk_after_the_delay(tmp_path):
    txs = [_pipeline_tx(i, day(i / 10), "m-bad" if i % 2 else "m-good",
                        "compromised_merchant" if i % 2 and i < 100 else "legit")
           for i in range(300)]
    tables = collect(lambda p: p | beam.Create(txs)
                     | DetectFraud([], features_only=True, delay_days=7, window_days=28),
                     tmp_path / "out")
    rows = table_rows(tables)
    assert set(rows) == {t.transaction_id for t in txs}
    by_day: dict[tuple, set[float]] = {}
    for t in txs:
        by_day.setdefault((t.counterparty_id, t.event_time.date()), set()).add(
            rows[t.transaction_id]["counterparty_risk"])
    assert by_day[("m-bad", day(2).date())] == {PRIOR_FRAUD_RATE}  # nothing confirmed yet
    assert min(by_day[("m-bad", day(12).date())]) > 0.5
    assert max(max(v) for (m, _), v in by_day.items() if m == "m-good") <= PRIOR_FRAUD_RATE


def test_detect_fraud_with_a_labels_collection_moves_risk_as_the_kernel_does(tmp_path):
    # Live transactions (no labels) at two merchants; analysts confirm frauds at one.
    txs = [_pipeline_tx(i, day(i / 10), "m-bad" if i % 2 else "m-good", None)
           for i in range(300)]
    events = [LabelEvent(t.transaction_id, t.counterparty_id, t.event_time,
                         "compromised_merchant", t.event_time + dt.timedelta(days=2))
              for t in txs[:120] if t.counterparty_id == "m-bad" and int(t.transaction_id[2:]) % 3]
    events.append(events[0])  # delivered twice
    events.append(LabelEvent(txs[0].transaction_id, "m-good", txs[0].event_time, "legit",
                             txs[0].event_time + dt.timedelta(days=1)))

    def run(name, labels):
        tables = collect(lambda p: p | "Transactions" >> beam.Create(txs)
                         | DetectFraud([], features_only=True, delay_days=3, window_days=14,
                                       labels=labels(p)),
                         tmp_path / name)
        return {k: r["counterparty_risk"] for k, r in table_rows(tables).items()}

    with_labels = run("labelled", lambda p: p | "Labels" >> beam.Create(events))
    without = run("unlabelled", lambda p: None)
    table = kernel.table_of(txs)
    kernel_with = featured_rows(table, kernel.labels_table(events), 3, 14)
    kernel_without = featured_rows(table, None, 3, 14)
    assert with_labels == {k: r["counterparty_risk"] for k, r in kernel_with.items()}
    assert without == {k: r["counterparty_risk"] for k, r in kernel_without.items()}
    assert max(without.values()) <= PRIOR_FRAUD_RATE
    moved = {k for k in with_labels if with_labels[k] != without[k]}
    assert moved and all(k in {t.transaction_id for t in txs if t.counterparty_id == "m-bad"}
                         for k in moved)
    assert max(with_labels.values()) > 0.3


def test_a_ticket_unlike_the_counterpartys_usual_stands_out():
    def at(n: int, hour: int) -> dt.datetime:
        return dt.datetime(2024, 3, 1, tzinfo=dt.UTC) + dt.timedelta(days=n, hours=hour)

    usual = [900, 1100, 1000, 1200, 800]
    regulars = [tx(at(n, 9 + k), "legit", amount=a) for n in range(35)
                for k, a in enumerate(usual)]
    same, odd = tx(at(35, 10), None, amount=1000), tx(at(35, 11), None, amount=90_000)
    cash = tx(at(35, 12), None, "atm-1", "cash", amount=90_000)
    table = _table([*regulars, same, odd, cash])
    ids = table["transaction_id"].to_pylist()
    got, _ = kernel.counterparty_features(table, None, None, 7, 28, keep_state=False)
    before = usual * 30  # days 5-34: the 30 days before the probes' own
    for probe in (same, odd):
        row = ids.index(probe.transaction_id)
        expected = usual_ticket(before, probe.amount_cents)
        assert (got["counterparty_log_amount_30d"][row],
                got["counterparty_amount_zscore_30d"][row]) == expected
    assert got["counterparty_amount_zscore_30d"][ids.index(odd.transaction_id)] > 3
    assert abs(got["counterparty_amount_zscore_30d"][ids.index(same.transaction_id)]) < 0.5
    # Cash carries none, as for the other counterparty features.
    assert got["counterparty_amount_zscore_30d"][ids.index(cash.transaction_id)] == 0
    # Cut into batches with the state carried, the features are the same.
    _, state = kernel.counterparty_features(_table(regulars[:100]), None, None, 7, 28)
    _, state = kernel.counterparty_features(_table(regulars[100:]), None, state, 7, 28)
    rest, _ = kernel.counterparty_features(_table([same, odd, cash]), None, state, 7, 28,
                                           keep_state=False)
    rest_ids = _table([same, odd, cash])["transaction_id"].to_pylist()
    for name in kernel.AMOUNT_FEATURES:
        assert [rest[name][rest_ids.index(i)] for i in rest_ids] == \
            [got[name][ids.index(i)] for i in rest_ids]
