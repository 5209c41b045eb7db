"""The detection kernel: exact rounding, rules over columns as rules over records, compact
state, and the property both modes rest on: a history scored at once, or cut in time into
batches with the state carried, gives the same rows."""

import datetime as dt
import itertools
import math
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraud_detection import model
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import COUNTERPARTY_TYPES, LEGIT, TX_TYPES, LabelEvent, Transaction
from fraud_detection.transforms import kernel
from fraud_detection.transforms.detect import DetectFraud
from fraud_detection.transforms.kernel import FEATURE_NAMES, MODEL_FEATURES
from fraud_detection.transforms.rules import evaluate, load_rules, parse_rules
from tests.unit.kernel_rows import collect, expected_decision, featured_rows

SAMPLE = Path(__file__).parents[2] / "data" / "sample"
TRANSACTION_FIELDS = kernel.TRANSACTION_SCHEMA.names


@pytest.fixture(scope="module")
def table() -> pa.Table:
    sample = read_transactions(SAMPLE)
    return sample.filter(np.array([t.day <= 12 for t in sample["event_time"].to_pylist()]))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> pa.Table:
    folder = tmp_path_factory.mktemp("world")
    generate(WorldConfig(days=20, seed=5, rows=3000), folder)
    return read_transactions(folder)


def _train(table: pa.Table, folder: Path) -> Path:
    training = kernel.detect(table, kernel.Decider(load_rules()), features_only=True)
    matrix = np.column_stack([training[name].to_numpy() for name in MODEL_FEATURES])
    fraud = np.array([label != LEGIT for label in training["label"].to_pylist()], dtype=int)
    model.save(model.train(matrix, fraud), folder, len(fraud), int(fraud.sum()))
    return folder


@pytest.fixture(scope="module")
def model_dir(table, tmp_path_factory) -> Path:
    return _train(table, tmp_path_factory.mktemp("model"))


def _values(row: dict) -> dict:
    """What a rule can look at: the transaction's fields and its features."""
    return {name: row[name] for name in (*TRANSACTION_FIELDS, *FEATURE_NAMES)}


# --- rounding ------------------------------------------------------------------------------

@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e3, max_value=1e3),
    st.integers(-10**9, 10**9).map(lambda n: (n + 0.5) / 1e6),  # halves of the 6th decimal
    st.integers(-10**12, 10**12).map(lambda n: n / 7)), min_size=1, max_size=50))
def test_round6_is_pythons_round(values: list[float]) -> None:
    assert kernel.round6(np.array(values)).tolist() == [round(v, 6) for v in values]


# --- rules ---------------------------------------------------------------------------------

def test_rules_over_columns_equal_rules_over_records(table) -> None:
    rules = parse_rules({"rules": [
        {"id": "any_not", "when": {"any": [
            {"field": "tx_type", "op": "in", "value": ["CASH_OUT", "TRANSFER"]},
            {"not": {"field": "night", "op": "==", "value": True}}]}},
        {"id": "nullable", "when": {"field": "balance_after_cents", "op": "between",
                                    "value": [0, 50_000]}},
        {"id": "string_vs_number", "when": {"field": "tx_type", "op": ">", "value": 3}},
        {"id": "number_vs_string", "when": {"field": "amount_cents", "op": "==",
                                            "value": "PAYMENT"}},
        {"id": "not_equal", "when": {"field": "counterparty_type", "op": "!=",
                                     "value": "merchant"}},
        {"id": "round", "when": {"all": [
            {"field": "amount_cents", "op": "multiple_of", "value": 1000},
            {"field": "amount_zscore", "op": "<=", "value": 1.5}]}},
        {"id": "risky", "when": {"field": "counterparty_risk", "op": ">", "value": 0}},
        {"id": "missing_field", "when": {"field": "no_such_field", "op": ">", "value": 0}},
        {"id": "paused", "when": {"field": "amount_cents", "op": ">", "value": 0},
         "paused": True},
    ]}) + load_rules()
    featured, _ = kernel.account_step(table, None, keep_state=False)
    ordered = kernel.in_order(featured, "counterparty_id")
    features = kernel.features_of(ordered)
    features.update(kernel.counterparty_features(ordered, None, None, keep_state=False)[0])
    by_column = kernel.rule_hits(rules, ordered, features)
    fired = set()
    for row, record in enumerate(ordered.to_pylist()):
        values = {**{k: record[k] for k in TRANSACTION_FIELDS},
                  **{name: features[name][row].item() for name in FEATURE_NAMES}}
        expected = evaluate(rules, values)
        assert by_column.get(row, []) == expected, record["transaction_id"]
        fired.update(hit.rule_id for hit in expected)
    assert {"any_not", "nullable", "not_equal", "round", "risky"} <= fired
    assert not fired & {"missing_field", "paused", "string_vs_number", "number_vs_string"}


# --- state ---------------------------------------------------------------------------------

def test_account_and_counterparty_states_round_trip(world) -> None:
    featured, accounts = kernel.account_step(world, None)
    _, counterparties = kernel.counterparty_step(featured, None, kernel.Decider([]))
    assert len(accounts) == len(set(world["account_id"].to_pylist()))
    assert counterparties
    for blob in accounts.values():
        state = kernel.decode_account(blob)
        assert kernel.encode_account(state) == blob
        assert len(state.hours) == len(state.counts) == len(state.amounts)
        assert state.counts.sum() > 0
    for blob in counterparties.values():
        state = kernel.decode_counterparty(blob)
        assert kernel.encode_counterparty(state) == blob
    wrong = bytes([kernel.ACCOUNT_STATE_VERSION + 1]) + next(iter(accounts.values()))[1:]
    with pytest.raises(ValueError, match="version"):
        kernel.decode_account(wrong)
    wrong = bytes([kernel.COUNTERPARTY_STATE_VERSION + 1]) \
        + next(iter(counterparties.values()))[1:]
    with pytest.raises(ValueError, match="version"):
        kernel.decode_counterparty(wrong)


def test_a_state_decoded_then_encoded_keeps_every_field() -> None:
    state = kernel.AccountState(
        last_micros=1_700_000_000_000_000, hours=np.array([472_000, 472_005]),
        counts=np.array([1, 3]), amounts=np.array([10, 2**40]),
        recent=np.array([5, 7, 2**40]), recent_types=np.array([0, 4, 1]),
        counterparties=["m-1", "", "é-x"],
        benford_windows=np.array([655, -1]), benford_counts=np.arange(18).reshape(2, 9))
    back = kernel.decode_account(kernel.encode_account(state))
    assert back.last_micros == state.last_micros
    for name in ("hours", "counts", "amounts", "recent", "recent_types", "benford_windows",
                 "benford_counts"):
        assert getattr(back, name).tolist() == getattr(state, name).tolist(), name
    assert back.counterparties == state.counterparties
    cp = kernel.CounterpartyState(1_700_000_000_000_000, np.array([19_700, 19_702]),
                                  np.array([4, 12]), np.array([0, 2]), ["t-1", "t-2"],
                                  np.array([19_700, 19_702]), np.array([1, 9]),
                                  np.array([38_000, 2**40]), np.array([2**50, 3]))
    back_cp = kernel.decode_counterparty(kernel.encode_counterparty(cp))
    assert (back_cp.last_micros, back_cp.labelled) == (cp.last_micros, cp.labelled)
    for name in ("days", "counts", "frauds", "labelled_days", "strangers", "log_amounts",
                 "log_squares"):
        assert getattr(back_cp, name).tolist() == getattr(cp, name).tolist(), name
    # Version 1 had no strangers and version 2 no amounts: they read as none.
    blob = kernel.encode_counterparty(cp)
    head = kernel._COUNTERPARTY_HEADER
    days = len(cp.days)
    rest = blob[head.size + 32 * days:]  # labelled days and ids
    v2 = head.pack(2, *head.unpack_from(blob)[1:]) + blob[head.size:head.size + 16 * days] + rest
    v1 = head.pack(1, *head.unpack_from(blob)[1:]) + blob[head.size:head.size + 12 * days] + rest
    for old_blob, strangers in ((v1, [0, 0]), (v2, [1, 9])):
        old = kernel.decode_counterparty(old_blob)
        assert old.counts.tolist() == [4, 12] and old.labelled == cp.labelled
        assert old.labelled_days.tolist() == [19_700, 19_702]
        assert old.strangers.tolist() == strangers
        assert old.log_amounts.tolist() == old.log_squares.tolist() == [0, 0]


def test_an_account_at_every_bound_stays_within_max_account_bytes() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    # Every hour of the longest window busy, more than 1,000 payees of 64-byte ids,
    # amounts over many digits so both Benford windows hold counts.
    transactions = [Transaction(
        f"t{i:05d}", start + dt.timedelta(minutes=25 * i), "b", "u", "a", f"{i:064d}",
        "merchant", "PAYMENT", 10 ** (i % 9) + i, "EUR") for i in range(2_400)]
    _, states = kernel.account_step(kernel.table_of(transactions), None)
    blob = states["a"]
    state = kernel.decode_account(blob)
    assert len(state.hours) == kernel.MAX_HOURS
    assert len(state.recent) == kernel.RECENT_AMOUNTS
    assert len(state.counterparties) == kernel.MAX_COUNTERPARTIES
    assert (state.benford_windows >= 0).all()
    assert kernel.MAX_ACCOUNT_BYTES - 8 <= len(blob) <= kernel.MAX_ACCOUNT_BYTES


def test_a_history_cut_into_many_batches_keeps_the_whole_historys_state(world) -> None:
    """Every account's state after 60 firings is byte for byte the state after one batch;
    one account pays more than MAX_COUNTERPARTIES payees, so its remembered payees are
    cut between firings. (Rows arriving out of order legitimately change the state:
    recent amounts and payees are kept in arrival order.)"""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    heavy = kernel.table_of([Transaction(
        f"h{i:05d}", start + dt.timedelta(minutes=25 * i), "b", "u", "heavy",
        f"p{i % 1_300}", "merchant", "PAYMENT", 10 ** (i % 9) + i, "EUR")
        for i in range(2_400)]).drop_columns([kernel.POSITION])
    rows = pa.concat_tables([world.select(heavy.column_names).cast(heavy.schema), heavy])
    arriving = rows.sort_by([("event_time", "ascending"), ("transaction_id", "ascending")])
    _, whole = kernel.account_step(rows, None)
    states: dict[str, bytes] = {}
    cuts = np.sort(np.random.default_rng(3).choice(arriving.num_rows, 60, replace=False))
    for lo, hi in itertools.pairwise([0, *cuts.tolist(), arriving.num_rows]):
        featured, changed = kernel.account_step(arriving.slice(lo, hi - lo), states)
        states.update(changed)
        assert not featured["late"].combine_chunks().true_count
    assert len(kernel.decode_account(whole["heavy"]).counterparties) \
        == kernel.MAX_COUNTERPARTIES
    assert states == whole


# --- batches cut in time -------------------------------------------------------------------

def _analyst_labels(table: pa.Table) -> list[LabelEvent]:
    """Verdicts on some legit merchant transactions, given one to four days later; one
    delivered twice."""
    rng = np.random.default_rng(11)
    rows = [r for r in table.to_pylist()
            if r["counterparty_type"] == "merchant" and r["label"] == LEGIT]
    picked = rng.choice(len(rows), size=80, replace=False)
    events = [LabelEvent(rows[i]["transaction_id"], rows[i]["counterparty_id"],
                         rows[i]["event_time"], "analyst_confirmed",
                         rows[i]["event_time"] + dt.timedelta(hours=float(rng.uniform(24, 96))))
              for i in picked.tolist()]
    return [*events, events[0]]


def _cut(table: pa.Table, events: list[LabelEvent], bounds: list[dt.datetime]):
    """(rows, labels) per interval between the bounds: rows by event time, labels by when
    they were given, as a stream's watermark would release them."""
    times = table["event_time"].to_pylist()
    edges = [dt.datetime.min.replace(tzinfo=dt.UTC), *bounds,
             dt.datetime.max.replace(tzinfo=dt.UTC)]
    for lo, hi in itertools.pairwise(edges):
        rows = table.filter(pa.array([lo <= t < hi for t in times]))
        given = [e for e in events if lo <= e.labelled_at < hi]
        yield rows, (kernel.labels_table(given) if given else None)


def _streamed(table, events, bounds, decider, features_only=False) -> pa.Table:
    accounts: dict[str, bytes] = {}
    counterparties: dict[str, bytes] = {}
    outs = []
    for rows, labels in _cut(table, events, bounds):
        featured, changed = kernel.account_step(rows, accounts)
        accounts.update(changed)
        out, changed = kernel.counterparty_step(featured, counterparties, decider, labels,
                                                features_only=features_only)
        counterparties.update(changed)
        outs.append(out)
    return pa.concat_tables(outs)


def _sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["transaction_id"])


@pytest.fixture(scope="module")
def world_decider(world, tmp_path_factory) -> kernel.Decider:
    trained, info = model.load(_train(world, tmp_path_factory.mktemp("world_model")))
    return kernel.Decider(load_rules(), 0.5, trained, info.version)


def test_a_history_cut_in_time_scores_as_it_does_whole(world, world_decider) -> None:
    events = _analyst_labels(world)
    labels = kernel.labels_table(events)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    bounds = [start + dt.timedelta(days=d) for d in (2, 2.5, 7.25, 7.3, 11, 16)]
    whole = kernel.detect(world, world_decider, labels)
    streamed = _streamed(world, events, bounds, world_decider)
    assert streamed.schema == whole.schema == kernel.SCORED_SCHEMA
    assert streamed.num_rows == whole.num_rows == world.num_rows
    assert _sorted_rows(streamed) == _sorted_rows(whole)
    scored = _sorted_rows(whole)
    assert any(r["flagged"] for r in scored)
    assert not any(r["late"] for r in scored)
    assert all(any(x.startswith(f"model {world_decider.model_version}") for x in r["reasons"])
               for r in scored)
    # The labels mattered: without them some scores differ.
    unlabelled = _sorted_rows(kernel.detect(world, world_decider))
    assert any(a["score"] != b["score"] for a, b in zip(scored, unlabelled, strict=True))


def test_a_history_cut_in_time_gives_the_whole_training_table(world) -> None:
    events = _analyst_labels(world)
    decider = kernel.Decider(load_rules())
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    bounds = [start + dt.timedelta(days=d, hours=h) for d, h in ((1, 3), (9, 0), (9, 1),
                                                                 (14, 12))]
    whole = kernel.detect(world, decider, kernel.labels_table(events), features_only=True)
    streamed = _streamed(world, events, bounds, decider, features_only=True)
    assert streamed.schema == whole.schema == kernel.FEATURE_TABLE_SCHEMA
    rows = _sorted_rows(whole)
    assert _sorted_rows(streamed) == rows
    assert any(r["counterparty_risk"] > kernel.PRIOR_FRAUD_RATE for r in rows)
    assert any(r["count_24h"] > 0 for r in rows)


def test_an_earlier_event_delivered_after_a_later_one_is_late() -> None:
    start = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)

    def tx(i: int, minutes: int, account: str = "a") -> Transaction:
        return Transaction(f"t-{i}", start + dt.timedelta(minutes=minutes), "b", "u", account,
                           "m-1", "merchant", "PAYMENT", 1000 + i, "EUR")

    decider = kernel.Decider(parse_rules({"rules": [
        {"id": "big", "when": {"field": "amount_cents", "op": ">", "value": 1001},
         "weight": 0.9}]}))
    accounts: dict[str, bytes] = {}
    counterparties: dict[str, bytes] = {}
    featured_rows_, scored = {}, {}
    # t-2 (10:30) arrives after account a's t-1 (11:00); b's first event is not late.
    for batch in ([tx(0, 0), tx(1, 60)], [tx(2, 30), tx(3, 90), tx(4, 10, account="b")]):
        featured, changed = kernel.account_step(kernel.table_of(batch), accounts)
        accounts.update(changed)
        featured_rows_.update((r["transaction_id"], r) for r in featured.to_pylist())
        out, changed = kernel.counterparty_step(featured, counterparties, decider)
        counterparties.update(changed)
        scored.update((r["transaction_id"], r) for r in out.to_pylist())
    assert {k: r["late"] for k, r in featured_rows_.items()} == \
        {"t-0": False, "t-1": False, "t-2": True, "t-3": False, "t-4": False}
    late = featured_rows_["t-2"]
    # Scored against what the account held up to its hour (t-0, not t-1 of the hour
    # after), while its latest event is after it.
    assert (late["seconds_since_last"], late["count_1h"], late["count_24h"]) == (0.0, 1, 1)
    assert featured_rows_["t-3"]["seconds_since_last"] == 30 * 60  # after t-1, not t-2
    assert scored["t-2"]["late"] and scored["t-2"]["flagged"]
    assert scored["t-2"]["reasons"] == [
        "big [big: amount_cents = 1002]", kernel.LATE_REASON]  # the rule's, then lateness
    assert [scored[k]["late"] for k in ("t-0", "t-1", "t-3", "t-4")] == [False] * 4
    assert not any(kernel.LATE_REASON in r["reasons"] for k, r in scored.items() if k != "t-2")
    record = next(kernel.scored_records(pa.Table.from_pylist(
        [scored["t-2"]], schema=kernel.SCORED_SCHEMA)))
    assert record.late and record.reasons[-1] == kernel.LATE_REASON
    # The same rows in one batch, in event order, are not late.
    whole, _ = kernel.account_step(kernel.table_of(
        [tx(0, 0), tx(1, 60), tx(2, 30), tx(3, 90), tx(4, 10, account="b")]), None)
    assert not any(whole["late"].to_pylist())


# --- records and the training table --------------------------------------------------------

def test_scored_records_round_trip_the_transaction(table) -> None:
    part = table.slice(0, 3000)
    scored = kernel.detect(part, kernel.Decider(load_rules(), 0.5))
    records = sorted(kernel.scored_records(scored), key=lambda r: r.transaction.transaction_id)
    assert [r.transaction.to_dict() for r in records] == \
        sorted(part.to_pylist(), key=lambda r: r["transaction_id"])
    assert all(0 <= r.score <= 1 and r.flagged == (r.score >= 0.5) for r in records)
    assert any(r.score > 0 for r in records)


def test_the_decision_is_the_per_row_rules_and_model(table, model_dir) -> None:
    rules = load_rules()
    trained, info = model.load(model_dir)
    part = table.slice(0, 3000)
    rows = featured_rows(part)
    scored = kernel.detect(part, kernel.Decider(rules, 0.5, trained, info.version))
    training = kernel.detect(part, kernel.Decider(rules), features_only=True)
    matrix = np.column_stack([training[name].to_numpy() for name in MODEL_FEATURES])
    probabilities = dict(zip(training["transaction_id"].to_pylist(),
                             trained.predict_proba(matrix)[:, 1].tolist(), strict=True))
    for row in scored.to_pylist():
        values = rows[row["transaction_id"]]
        score, flagged, reasons = expected_decision(
            _values(values), rules, 0.5, probabilities[row["transaction_id"]], info.version)
        assert row["score"] == pytest.approx(score, abs=1e-9), row["transaction_id"]
        assert (row["flagged"], tuple(row["reasons"])) == (flagged, reasons)
        assert row["model_version"] == info.version


def test_the_training_table_is_the_per_row_features(table) -> None:
    rules = load_rules()
    part = table.slice(0, 3000)
    rows = featured_rows(part)
    training = kernel.detect(part, kernel.Decider(rules), features_only=True)
    assert training.schema == kernel.FEATURE_TABLE_SCHEMA
    assert training.num_rows == part.num_rows
    for out in training.to_pylist():
        row = rows[out["transaction_id"]]
        assert (out["label"], out["amount_cents"], out["account_id"], out["event_time"]) == \
            (row["label"], row["amount_cents"], row["account_id"], row["event_time"])
        score, _, _ = expected_decision(_values(row), rules, 0.5)
        assert out["rules_score"] == pytest.approx(score, abs=1e-9)
        want = {name: float(row[name]) for name in FEATURE_NAMES}
        want["rules_score"] = score
        want["log_amount"] = math.log1p(row["amount_cents"])
        want["hour"] = float(row["event_time"].hour)
        want.update((f"tx_type_{t}", float(row["tx_type"] == t)) for t in TX_TYPES)
        want.update((f"counterparty_type_{t}", float(row["counterparty_type"] == t))
                    for t in COUNTERPARTY_TYPES)
        assert {name: out[name] for name in MODEL_FEATURES} == want, \
            out["transaction_id"]
    assert any(r["rules_score"] > 0 for r in training.to_pylist())


# --- on Beam -------------------------------------------------------------------------------

def _outcome(row: dict) -> tuple:
    return (row["transaction_id"], row["score"], row["flagged"], tuple(row["reasons"]),
            row["late"], row["model_version"])


def _record_outcome(scored) -> tuple:
    return (scored.transaction.transaction_id, scored.score, scored.flagged, scored.reasons,
            scored.late, scored.model_version)


def test_detect_fraud_on_beam_is_the_kernel(table, model_dir, tmp_path) -> None:
    rules = load_rules()
    trained, info = model.load(model_dir)
    expected = sorted(map(_outcome, kernel.detect(
        table, kernel.Decider(rules, 0.5, trained, info.version)).to_pylist()))
    transactions = [Transaction(**r) for r in table.to_pylist()]
    records = sorted(collect(lambda p: p | beam.Create(transactions)
                             | DetectFraud(rules, 0.5, model_dir=model_dir)
                             | beam.Map(_record_outcome), tmp_path / "records"))
    # Tables cut across accounts and days, as Parquet row groups are.
    parts = [table.slice(i, 3000) for i in range(0, table.num_rows, 3000)]
    tables = collect(lambda p: p | beam.Create(parts)
                     | DetectFraud(rules, 0.5, model_dir=model_dir, shards=3, as_tables=True),
                     tmp_path / "tables")
    from_tables = sorted(_outcome(r) for t in tables for r in t.to_pylist())
    assert len(expected) == table.num_rows
    assert records == expected
    assert from_tables == expected
    assert any(outcome[2] for outcome in expected)  # something was flagged
