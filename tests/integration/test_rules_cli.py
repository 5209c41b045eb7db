"""`rules load` and `rules delete` as a user runs them, against the real rules table: a
file with a field outside the rule schema is refused in one line naming it and writes
nothing; delete removes a rule and refuses an unknown id in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from fraud_detection.store.keyspace import connect
from fraud_detection.store.rules import stored_rules

pytestmark = pytest.mark.integration

GOOD = {"rules": [
    {"id": "big", "description": "large", "weight": 0.6,
     "when": {"field": "amount_cents", "op": ">", "value": 100_000}},
    {"id": "burst", "when": {"field": "count_1h", "op": ">=", "value": 8}},
]}


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    flags = ["--cassandra-hosts", ",".join(settings.cassandra_hosts),
             "--cassandra-port", str(settings.cassandra_port),
             "--cassandra-keyspace", settings.cassandra_keyspace]
    return subprocess.run([sys.executable, "-m", "fraud_detection", "rules", *args, *flags],
                          capture_output=True, text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_rules_load_refuses_unknown_fields_and_delete_removes_a_rule(keyspace_for,
                                                                   tmp_path) -> None:
    settings = keyspace_for("test_rules_cli")
    store = connect(settings)
    try:
        bad = tmp_path / "bad.yaml"
        with_severity = yaml.safe_load(yaml.safe_dump(GOOD))
        with_severity["rules"][1]["severity"] = "high"
        bad.write_text(yaml.safe_dump(with_severity))
        _one_line_error(_cli(settings, "load", str(bad)), "unknown field 'severity'", "burst")
        assert stored_rules(store) == []  # not even the valid first rule was written

        nested = tmp_path / "nested.yaml"
        in_condition = yaml.safe_load(yaml.safe_dump(GOOD))
        in_condition["rules"][0]["when"]["unit"] = "EUR"
        nested.write_text(yaml.safe_dump(in_condition))
        _one_line_error(_cli(settings, "load", str(nested)), "unknown field 'unit'")
        assert stored_rules(store) == []

        good = tmp_path / "good.yaml"
        good.write_text(yaml.safe_dump(GOOD))
        loaded = _cli(settings, "load", str(good))
        assert loaded.returncode == 0, loaded.stderr
        assert [r.rule_id for r in stored_rules(store)] == ["big", "burst"]

        deleted = _cli(settings, "delete", "big")
        assert deleted.returncode == 0, deleted.stderr
        assert "rule big deleted" in deleted.stdout
        assert [r.rule_id for r in stored_rules(store)] == ["burst"]

        _one_line_error(_cli(settings, "delete", "big"), "no rule 'big'")
        _one_line_error(_cli(settings, "delete", "no-such-rule"), "no rule 'no-such-rule'")
        _one_line_error(_cli(settings, "delete"), "needs a rule id")
        assert [r.rule_id for r in stored_rules(store)] == ["burst"]
        listed = _cli(settings, "list")
        assert listed.returncode == 0 and "burst" in listed.stdout and "big" not in listed.stdout
    finally:
        store.close()
