import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from fraud_detection.records import (
    TRANSACTION_FIELDS,
    Transaction,
    parse_event_time,
    validate_transaction,
)

UTC = dt.UTC

GOOD = {
    "transaction_id": "t-1",
    "event_time": "2024-01-02T10:00:00Z",
    "bank_id": "bank-01",
    "user_id": "u-1",
    "account_id": "a-1",
    "counterparty_id": "m-1",
    "counterparty_type": "merchant",
    "tx_type": "PAYMENT",
    "amount_cents": 1234,
    "currency": "EUR",
}


def test_good_record_becomes_transaction():
    tx, errors = validate_transaction(GOOD)
    assert errors == []
    assert tx == Transaction(**{**GOOD, "event_time": dt.datetime(2024, 1, 2, 10, tzinfo=UTC)})
    assert tx.is_fraud is None


def test_every_problem_is_reported_at_once():
    bad = {**GOOD, "amount_cents": -5, "currency": "XXX", "event_time": "yesterday"}
    del bad["account_id"]
    tx, errors = validate_transaction(bad)
    assert tx is None
    assert any(e.startswith("account_id: missing") for e in errors)
    assert any(e.startswith("amount_cents: negative") for e in errors)
    assert any(e.startswith("currency: unknown") for e in errors)
    assert any(e.startswith("event_time: not an ISO-8601") for e in errors)


def test_wrong_types_absurd_amounts_and_unknown_fields():
    cases = {
        "amount_cents": ("12.5", "expected an integer"),
        "tx_type": ("WIRE", "is not one of"),
        "bank_id": (7, "expected text"),
    }
    for name, (value, message) in cases.items():
        _, errors = validate_transaction({**GOOD, name: value})
        assert any(e.startswith(name) and message in e for e in errors), errors
    _, errors = validate_transaction({**GOOD, "amount_cents": 10**13})
    assert errors == ["amount_cents: absurdly large (10000000000000)"]
    _, errors = validate_transaction({**GOOD, "amount_cents": True})
    assert errors == ["amount_cents: expected an integer, got bool"]
    _, errors = validate_transaction({**GOOD, "colour": "red"})
    assert errors == ["unknown fields: colour"]


def test_known_accounts_are_checked_when_given():
    _, errors = validate_transaction(GOOD, known_accounts={"a-2"})
    assert errors == ["account_id: unknown account 'a-1'"]
    assert validate_transaction(GOOD, known_accounts={"a-1"})[1] == []


def test_event_time_forms():
    expected = dt.datetime(2024, 1, 2, 10, tzinfo=UTC)
    assert parse_event_time("2024-01-02T11:00:00+01:00") == expected
    assert parse_event_time(int(expected.timestamp() * 1000)) == expected
    for bad in ("2024-01-02T10:00:00", dt.datetime(2024, 1, 2), "1999-12-31T00:00:00Z", 1.5):
        _, errors = validate_transaction({**GOOD, "event_time": bad})
        assert len(errors) == 1 and errors[0].startswith("event_time:"), (bad, errors)


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=10) | st.datetimes(timezones=st.none() | st.just(UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(sorted(GOOD)), value=anything)
def test_mangling_one_field_never_raises(field, value):
    tx, errors = validate_transaction({**GOOD, field: value})
    assert (tx is None) == bool(errors)
    if tx is not None:
        assert getattr(tx, field) is not None


@settings(max_examples=300, deadline=None)
@given(drop=st.sets(st.sampled_from(sorted(GOOD)), min_size=1))
def test_any_missing_required_field_is_an_error(drop):
    tx, errors = validate_transaction({k: v for k, v in GOOD.items() if k not in drop})
    assert tx is None
    assert {e.split(":")[0] for e in errors} >= drop


@settings(max_examples=300, deadline=None)
@given(raw=anything | st.dictionaries(st.sampled_from(TRANSACTION_FIELDS), anything))
def test_arbitrary_input_yields_errors_never_exceptions(raw):
    tx, errors = validate_transaction(raw)
    assert tx is None and errors


@settings(max_examples=200, deadline=None)
@given(amount=st.integers(min_value=-(10**15), max_value=10**15))
def test_amount_range(amount):
    tx, _errors = validate_transaction({**GOOD, "amount_cents": amount})
    assert (tx is not None) == (0 <= amount <= 10**12)


def test_a_label_is_legit_or_any_scenario_name():
    for label in ("legit", "card_testing", "skimming ring-2", "Fraud.v3"):
        tx, errors = validate_transaction({**GOOD, "label": label})
        assert errors == [] and tx.label == label
        assert tx.is_fraud == (label != "legit")
    for label, message in ((7, "got int"), ("", "is not a scenario name"),
                           ("x" * 65, "is not a scenario name"),
                           ("a;drop", "is not a scenario name")):
        _, errors = validate_transaction({**GOOD, "label": label})
        assert len(errors) == 1 and errors[0].startswith("label: ") and message in errors[0]
