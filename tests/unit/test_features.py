import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from fraud_detection.records import Transaction
from fraud_detection.transforms.features import (
    MAX_COUNTERPARTIES,
    MAX_HOURS,
    AccountHistory,
    event_order_key,
)

T0 = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)  # a Monday


def tx(i, minutes, amount=1000, cp="m-1", before=None, after=None, tx_type="PAYMENT"):
    return Transaction(
        transaction_id=f"t-{i:05d}", event_time=T0 + dt.timedelta(minutes=minutes),
        bank_id="b", user_id="u", account_id="a", counterparty_id=cp,
        counterparty_type="merchant", tx_type=tx_type, amount_cents=amount, currency="EUR",
        balance_before_cents=before, balance_after_cents=after)


def test_windows_count_what_came_before():
    history = AccountHistory()
    first = history.observe(tx(0, 0, 500))
    assert (first.count_1h, first.count_30d, first.seconds_since_last) == (0, 0, -1.0)
    assert first.new_counterparty
    history.observe(tx(1, 10, 700))
    third = history.observe(tx(2, 30, 900, cp="m-2"))
    assert (third.count_1h, third.amount_1h) == (2, 1200)
    assert third.seconds_since_last == 20 * 60
    assert third.new_counterparty
    later = history.observe(tx(3, 60 * 24 * 2, 100, cp="m-1"))
    assert (later.count_1h, later.count_24h, later.count_7d) == (0, 0, 3)
    assert later.amount_7d == 2100 and not later.new_counterparty


def test_amount_against_usual_amounts():
    history = AccountHistory()
    for i in range(20):
        history.observe(tx(i, i * 60, 1000 + (i % 5) * 10))
    normal = history.observe(tx(20, 20 * 60, 1010))
    spike = history.observe(tx(21, 21 * 60, 8000))
    assert abs(normal.amount_zscore) < 2
    assert spike.amount_zscore > 10 and spike.amount_to_median > 7


def test_balance_mismatch_night_weekend():
    history = AccountHistory()
    assert not history.observe(tx(0, 0, 100, before=1000, after=900)).balance_mismatch
    assert history.observe(tx(1, 1, 100, before=1000, after=1000)).balance_mismatch
    assert not history.observe(tx(2, 2, 100, before=0, after=100, tx_type="CASH_IN")
                               ).balance_mismatch
    saturday_night = history.observe(tx(3, 60 * 24 * 4 + 60 * 13))  # Sat 01:00
    assert saturday_night.night and saturday_night.weekend


def test_state_stays_bounded():
    history = AccountHistory()
    for i in range(5_000):
        history.observe(tx(i, i * 30, cp=f"m-{i}"))
    assert len(history.buckets) <= MAX_HOURS + 1
    assert len(history.counterparties) == MAX_COUNTERPARTIES
    assert len(history.recent) == history.recent.maxlen


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60 * 24 * 40), st.integers(1, 10**6),
                          st.sampled_from(["m-1", "m-2", "m-3", "m-4"])),
                min_size=1, max_size=60), st.randoms())
def test_same_events_in_any_arrival_order_give_the_same_features(events, rnd):
    txs = [tx(i, m, a, cp) for i, (m, a, cp) in enumerate(events)]
    shuffled = txs[:]
    rnd.shuffle(shuffled)

    def run(batch):
        history = AccountHistory()
        return {t.transaction_id: history.observe(t) for t in sorted(batch, key=event_order_key)}

    assert run(txs) == run(shuffled)


def _sample_transactions(n=300):
    import random

    rnd = random.Random(5)
    out = []
    for i in range(n):
        account = f"a-{i % 7}"
        t = tx(i, rnd.randrange(0, 60 * 24 * 20), rnd.randrange(1, 10**5), f"m-{rnd.randrange(9)}")
        out.append(Transaction(**{**t.to_dict(), "account_id": account}))
    return out


def _expected(transactions):
    histories, result = {}, {}
    for t in sorted(transactions, key=event_order_key):
        history = histories.setdefault(t.account_id, AccountHistory())
        result[t.transaction_id] = history.observe(t)
    return result


def test_stateful_dofn_in_batch_matches_the_state_machine():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.window import TimestampedValue

    from fraud_detection.transforms.features import ComputeAccountFeatures

    transactions = _sample_transactions()
    expected = _expected(transactions)
    with beam.Pipeline("FnApiRunner") as p:
        out = (p | beam.Create(transactions)
               | beam.Map(lambda t: TimestampedValue(t, t.event_time.timestamp()))
               | ComputeAccountFeatures()
               | beam.Map(lambda f: (f.transaction.transaction_id, f.features, f.late)))
        assert_that(out, equal_to([(k, v, False) for k, v in expected.items()]))
