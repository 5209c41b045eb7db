import pytest

from fraud_detection.transforms.rules import RuleError, evaluate, load_rules, parse_rules


def test_default_rules_load_and_include_the_seed_rule():
    rules = {r.rule_id: r for r in load_rules()}
    assert "seed_large_amount" in rules
    assert rules["seed_large_amount"].evaluate({"amount_cents": 500001}).value == 500001
    assert rules["seed_large_amount"].evaluate({"amount_cents": 500000}) is None


def test_combinations_report_the_value_that_fired():
    rules = parse_rules({"rules": [
        {"id": "r1", "when": {"all": [{"field": "new_counterparty", "op": "==", "value": True},
                                      {"field": "amount_to_median", "op": ">", "value": 10}]}},
        {"id": "r2", "when": {"any": [{"field": "count_1h", "op": ">=", "value": 8},
                                      {"field": "night", "op": "==", "value": True}]}},
        {"id": "r3", "when": {"not": {"field": "tx_type", "op": "in", "value": ["PAYMENT"]}}},
        {"id": "r4", "paused": True, "when": {"field": "count_1h", "op": ">", "value": 0}},
    ]})
    hits = evaluate(rules, {"new_counterparty": True, "amount_to_median": 12.5,
                            "count_1h": 9, "night": False, "tx_type": "PAYMENT"})
    assert [(h.rule_id, h.field, h.value) for h in hits] == [
        ("r1", "amount_to_median", 12.5), ("r2", "count_1h", 9)]
    assert evaluate(rules, {"tx_type": "CASH_OUT"})[0].rule_id == "r3"


def test_structuring_rule_fires_on_round_deposits_only():
    rules = [r for r in load_rules() if r.rule_id == "structuring_round_deposit"]
    assert evaluate(rules, {"tx_type": "CASH_IN", "amount_cents": 950000})
    assert not evaluate(rules, {"tx_type": "CASH_IN", "amount_cents": 950123})
    assert not evaluate(rules, {"tx_type": "PAYMENT", "amount_cents": 950000})


@pytest.mark.parametrize("data, message", [
    ({}, "expected a top-level 'rules:' list"),
    ({"rules": [{"id": "a"}]}, "needs an id and a when"),
    ({"rules": [{"id": "a", "when": {"field": "x", "op": "~", "value": 1}}]}, "unknown op"),
    ({"rules": [{"id": "a", "when": {"field": "x", "op": ">"}}]}, "missing value"),
    ({"rules": [{"id": "a", "when": {"all": []}}]}, "non-empty list"),
    ({"rules": [{"id": "a", "weight": 3, "when": {"field": "x", "op": ">", "value": 1}}]},
     "weight"),
    ({"rules": [{"id": "a", "when": {"field": "x", "op": ">", "value": 1}},
                {"id": "a", "when": {"field": "x", "op": ">", "value": 1}}]}, "duplicate"),
])
def test_bad_rules_are_refused_with_a_reason(data, message):
    with pytest.raises(RuleError, match=message):
        parse_rules(data)


def test_missing_or_wrongly_typed_fields_do_not_fire():
    rules = parse_rules({"rules": [{"id": "a", "when": {"field": "x", "op": ">", "value": 1}}]})
    assert evaluate(rules, {}) == []
    assert evaluate(rules, {"x": "text"}) == []


def test_a_rule_change_takes_effect_on_the_next_batch(tmp_path):
    import datetime as dt

    import yaml

    from fraud_detection.io.rules_file import FileRules
    from fraud_detection.records import Transaction
    from fraud_detection.transforms import kernel
    from fraud_detection.transforms.detect import _Step

    path = tmp_path / "rules.yaml"

    def write(threshold_cents: int, paused: bool = False) -> None:
        path.write_text(yaml.safe_dump({"rules": [{
            "id": "big", "when": {"field": "amount_cents", "op": ">", "value": threshold_cents},
            "weight": 0.9, "paused": paused}]}))

    tx = Transaction("t-1", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "b", "u", "a", "m",
                     "merchant", "PAYMENT", 50_000, "EUR")
    featured, _ = kernel.account_step(kernel.table_of([tx]), None, keep_state=False)
    write(100_000)
    # The counterparty step as DetectFraud runs it: rules from the source at each batch.
    step = _Step(False, FileRules(path, refresh_seconds=0), 0.5, None, kernel.DELAY_DAYS,
                 kernel.WINDOW_DAYS, False)
    step.setup()

    def flagged() -> bool:
        scored, _ = step.run(featured, None, None, keep_state=False)
        (flag,) = scored["flagged"].to_pylist()
        return flag

    assert not flagged()
    write(10_000)  # lowered while running: the next batch sees it
    assert flagged()
    write(10_000, paused=True)
    assert not flagged()
    path.write_text("rules: [oops")  # a broken edit keeps the rules in force
    assert not flagged()


@pytest.mark.parametrize("data, field", [
    ({"rules": [{"id": "a", "severity": "high",
                 "when": {"field": "x", "op": ">", "value": 1}}]}, "severity"),
    ({"rules": [{"id": "a", "when": {"field": "x", "op": ">", "value": 1, "unit": "EUR"}}]},
     "unit"),
    ({"rules": [{"id": "a", "when": {"all": [{"field": "x", "op": ">", "value": 1}],
                                     "label": "z"}}]}, "label"),
    ({"rules": [{"id": "a", "when": {"field": "x", "op": ">", "value": 1}}], "version": 2},
     "version"),
])
def test_unknown_fields_are_refused_by_name(data, field):
    with pytest.raises(RuleError, match=f"unknown field '{field}'") as caught:
        parse_rules(data, "r.yaml")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("entry, message", [
    ({"id": 7}, "id must be non-empty text"),
    ({"id": "a", "paused": "yes"}, "paused must be true or false"),
    ({"id": "a", "description": ["x"]}, "description must be text"),
    ({"id": "a", "weight": True}, "weight must be a number"),
    ({"id": "a", "when": {"all": [{"field": "x", "op": ">", "value": 1}],
                          "any": [{"field": "x", "op": ">", "value": 1}]}}, "one of all, any"),
])
def test_wrongly_typed_rule_fields_are_refused(entry, message):
    rule = {"when": {"field": "x", "op": ">", "value": 1}, **entry}
    with pytest.raises(RuleError, match=message):
        parse_rules({"rules": [rule]})
