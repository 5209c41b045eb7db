"""Account behaviour features: kernel.account_step, over a whole history at once and over
the same history one transaction at a time with the state carried (streaming)."""

import datetime as dt
import itertools
import random
import statistics
from collections import OrderedDict

import apache_beam as beam
from hypothesis import given, settings
from hypothesis import strategies as st

from fraud_detection.records import TX_TYPES, Transaction
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.kernel import (
    ACCOUNT_FEATURES,
    MAX_COUNTERPARTIES,
    MAX_HOURS,
    RECENT_AMOUNTS,
)
from tests.unit.kernel_rows import collect, featured_rows, table_rows

T0 = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)  # a Monday


def tx(i, minutes, amount=1000, cp="m-1", before=None, after=None, tx_type="PAYMENT",
       account="a"):
    return Transaction(
        transaction_id=f"t-{i:05d}", event_time=T0 + dt.timedelta(minutes=minutes),
        bank_id="b", user_id="u", account_id=account, counterparty_id=cp,
        counterparty_type="merchant", tx_type=tx_type, amount_cents=amount, currency="EUR",
        balance_before_cents=before, balance_after_cents=after)


def _by_id(featured) -> dict[str, dict]:
    return {r["transaction_id"]: r for r in featured.to_pylist()}


def in_batches(batches, states=None) -> tuple[dict[str, dict], dict[str, bytes]]:
    """Each batch (a list of transactions) through account_step, carrying the state."""
    states = dict(states or {})
    rows = {}
    for batch in batches:
        featured, changed = kernel.account_step(kernel.table_of(batch), states)
        states.update(changed)
        rows.update(_by_id(featured))
    return rows, states


def observe(transactions) -> list[dict]:
    """Each transaction's row, in the order given; the whole history at once and one
    transaction at a time (in event order, carrying the state) must agree."""
    whole, _ = kernel.account_step(kernel.table_of(transactions), None, keep_state=False)
    whole = _by_id(whole)
    ordered = sorted(transactions, key=lambda t: (t.event_time, t.transaction_id))
    one_by_one, _ = in_batches([[t] for t in ordered])
    assert whole == one_by_one
    assert not any(r["late"] for r in whole.values())
    return [whole[t.transaction_id] for t in transactions]


def test_windows_count_what_came_before():
    first, second, third, later, month, gone = observe([
        tx(0, 0, 500), tx(1, 10, 700), tx(2, 30, 900, cp="m-2"),
        tx(3, 60 * 24 * 2, 100, cp="m-1"),
        tx(4, 60 * 24 * 32 - 60, 50, cp="m-3"),  # 719 hours after `later`
        tx(5, 60 * 24 * 32, 20, cp="m-3")])  # 720 hours after it
    assert (first["count_1h"], first["count_30d"], first["seconds_since_last"]) == (0, 0, -1.0)
    assert first["new_counterparty"]
    assert second["seconds_since_last"] == 10 * 60 and not second["new_counterparty"]
    assert (third["count_1h"], third["amount_1h"]) == (2, 1200)
    assert third["seconds_since_last"] == 20 * 60
    assert third["new_counterparty"]
    assert (later["count_1h"], later["count_24h"], later["count_7d"]) == (0, 0, 3)
    assert later["amount_7d"] == 2100 and not later["new_counterparty"]
    # 30 days are 720 hour buckets: `later` is still in, the first three are not.
    assert (month["count_30d"], month["amount_30d"], month["count_7d"]) == (1, 100, 0)
    assert month["seconds_since_last"] == (60 * 24 * 30 - 60) * 60
    assert (gone["count_30d"], gone["amount_30d"], gone["count_24h"]) == (1, 50, 1)


def test_amount_against_usual_amounts():
    rows = observe([tx(i, i * 60, 1000 + (i % 5) * 10) for i in range(20)]
                   + [tx(20, 20 * 60, 1010), tx(21, 21 * 60, 8000)])
    assert [r["amount_zscore"] for r in rows[:5]] == [0.0] * 5  # too little history
    assert [r["amount_to_median"] for r in rows[:5]] == [1.0] * 5
    normal, spike = rows[-2:]
    assert abs(normal["amount_zscore"]) < 2
    assert spike["amount_zscore"] > 10 and spike["amount_to_median"] > 7
    # The 21 amounts before the spike: median 1020, MAD 10.
    assert spike["amount_to_median"] == round(8000 / 1020, 6)
    assert spike["amount_zscore"] == round((8000 - 1020) / (1.4826 * 10), 6)


def test_amount_against_usual_amounts_of_its_type():
    # Payments about 10.00 among transfers about 250.00: a payment of 80.00 is within the
    # account's amounts, and eight times its usual payment.
    history = [tx(i, i * 60, 1000 + (i % 5) * 10) if i % 2 else
               tx(i, i * 60, 25_000 + i, tx_type="TRANSFER") for i in range(30)]
    rows = observe([*history, tx(30, 30 * 60, 8000)])
    spike = rows[-1]
    median = statistics.median(t.amount_cents for t in history if t.tx_type == "PAYMENT")
    assert spike["type_amount_to_median"] == round(8000 / median, 6)
    assert spike["type_amount_zscore"] > 10 > spike["amount_zscore"]
    first_transfer = rows[0]  # no history of its type: neutral
    assert (first_transfer["type_amount_zscore"], first_transfer["type_amount_to_median"]) \
        == (0.0, 1.0)


def test_type_baselines_past_the_recent_window_agree_whole_and_streamed():
    # 600 rows of mixed types: each row's type baseline is its type's amounts among the
    # last RECENT_AMOUNTS, whether the history comes at once or a row at a time.
    types = ("PAYMENT", "PAYMENT", "TRANSFER", "PAYMENT", "CASH_OUT")
    history = [tx(i, i * 60, 1000 + (i * 37) % 900, tx_type=types[i % 5] if i < 400
                  else "PAYMENT") for i in range(600)]
    rows = observe(history)  # asserts whole == one at a time
    assert len({r["type_amount_zscore"] for r in rows}) > 100


def test_balance_mismatch_night_weekend():
    rows = observe([
        tx(0, 0, 100, before=1000, after=900),
        tx(1, 1, 100, before=1000, after=1000),
        tx(2, 2, 100, before=0, after=100, tx_type="CASH_IN"),
        tx(3, 3, 100, before=None, after=5),  # unknown balance: no mismatch
        tx(4, 60 * 24 * 4 + 60 * 13),  # Sat 01:00
        tx(5, 60 * 24 * 4 + 60 * 6),  # Fri 18:00
    ])
    assert [r["balance_mismatch"] for r in rows] == [False, True, False, False, False, False]
    assert [(r["night"], r["weekend"]) for r in rows[-2:]] == [(True, True), (False, False)]
    assert not rows[0]["night"] and not rows[0]["weekend"]


def test_state_stays_bounded():
    transactions = [tx(i, i * 30, 1000 + i, cp=f"m-{i}") for i in range(5_000)]
    _, states = in_batches([transactions[i:i + 700] for i in range(0, 5_000, 700)])
    blob = states["a"]
    state = kernel.decode_account(blob)
    assert len(state.hours) <= MAX_HOURS
    assert state.counterparties == [f"m-{i}" for i in range(4_000, 5_000)]
    assert len(state.counterparties) == MAX_COUNTERPARTIES
    assert state.recent.tolist() == [1000 + i for i in range(4_800, 5_000)]
    assert set(state.recent_types.tolist()) == {TX_TYPES.index("PAYMENT")}
    assert len(state.recent) == RECENT_AMOUNTS
    assert len(blob) <= kernel.MAX_ACCOUNT_BYTES


def test_the_thousand_counterparty_memory_is_replayed_exactly():
    # 1,200 distinct counterparties, then the first ones again: forgotten, so new again.
    payees = [f"m{i}" for i in range(1200)] + [f"m{i}" for i in range(5)] + ["m1199"]
    transactions = [tx(i, i, 1000 + i, cp=payee) for i, payee in enumerate(payees)]
    remembered: OrderedDict = OrderedDict()
    expected = []
    for payee in payees:
        expected.append(payee not in remembered)
        remembered[payee] = None
        remembered.move_to_end(payee)
        while len(remembered) > MAX_COUNTERPARTIES:
            remembered.popitem(last=False)
    rows = observe(transactions)
    assert [r["new_counterparty"] for r in rows] == expected
    assert [r["new_counterparty"] for r in rows[-6:]] == [True] * 5 + [False]
    # Cut where the state holds fewer than, exactly and more than it can remember.
    cuts = [0, 600, 1000, 1203, len(transactions)]
    streamed, _ = in_batches([transactions[a:b] for a, b in itertools.pairwise(cuts)])
    assert [streamed[t.transaction_id]["new_counterparty"] for t in transactions] == expected


_EVENTS = st.lists(st.tuples(st.integers(0, 60 * 24 * 40), st.integers(1, 10**6),
                             st.sampled_from(["m-1", "m-2", "m-3", "m-4"]),
                             st.sampled_from(["a", "b", "c"])),
                   min_size=1, max_size=60)


@settings(max_examples=50, deadline=None)
@given(_EVENTS, st.randoms(), st.lists(st.integers(0, 60 * 24 * 40), max_size=4))
def test_same_events_in_any_arrival_order_or_cut_give_the_same_features(events, rnd, cuts):
    txs = [tx(i, m, a, cp, account=acc) for i, (m, a, cp, acc) in enumerate(events)]
    shuffled = txs[:]
    rnd.shuffle(shuffled)

    def run(batch):
        featured, _ = kernel.account_step(kernel.table_of(batch), None, keep_state=False)
        return _by_id(featured)

    whole = run(txs)
    assert run(shuffled) == whole
    # Cut at moments in time, each part in any order: the carried state gives the same.
    bounds = [T0 + dt.timedelta(minutes=c) for c in sorted(set(cuts))]
    parts: list[list[Transaction]] = [[] for _ in range(len(bounds) + 1)]
    for t in shuffled:
        parts[sum(t.event_time >= b for b in bounds)].append(t)
    streamed, _ = in_batches([p for p in parts if p])
    assert streamed == whole


def _sample_transactions(n=300):
    rnd = random.Random(5)
    return [tx(i, rnd.randrange(0, 60 * 24 * 20), rnd.randrange(1, 10**5),
               f"m-{rnd.randrange(9)}", account=f"a-{i % 7}") for i in range(n)]


def test_detect_fraud_on_beam_gives_the_kernels_features(tmp_path):
    transactions = _sample_transactions()
    # The state machine: one transaction at a time, in event order, state carried.
    one_by_one, _ = in_batches(
        [[t] for t in sorted(transactions, key=lambda t: (t.event_time, t.transaction_id))])
    whole = featured_rows(kernel.table_of(transactions))
    tables = collect(lambda p: p | beam.Create(transactions)
                     | DetectFraud([], features_only=True, shards=3), tmp_path / "out")
    piped = table_rows(tables)
    assert len(tables) > 1  # more than one shard ran
    assert set(piped) == set(one_by_one) == {t.transaction_id for t in transactions}
    for tx_id, row in piped.items():
        want = one_by_one[tx_id]
        assert [row[name] for name in ACCOUNT_FEATURES] == \
            [float(want[name]) for name in ACCOUNT_FEATURES], tx_id
        assert row["counterparty_risk"] == whole[tx_id]["counterparty_risk"]
    assert any(row["count_24h"] > 0 for row in piped.values())
