"""The rules table: detection re-reads it while it runs; the CLI and the dashboard edit it."""

from __future__ import annotations

import datetime as dt

import yaml

from fraud_detection.config import Settings
from fraud_detection.store.keyspace import Store, connect_when_up, transient_errors, waiting
from fraud_detection.transforms.rules import Rule, RuleError, RulesSource, parse_rules, rule_to_dict

_SELECT = "SELECT rule_id, definition, paused FROM rules"
_UPSERT = "INSERT INTO rules (rule_id, definition, paused, updated_at) VALUES (?, ?, ?, ?)"
_SELECT_ONE = "SELECT rule_id FROM rules WHERE rule_id = ?"
_DELETE = "DELETE FROM rules WHERE rule_id = ?"


def stored_rules(store: Store) -> list[Rule]:
    entries = []
    for row in store.execute(_SELECT):
        entry = yaml.safe_load(row.definition)
        entry["paused"] = bool(row.paused)
        entries.append(entry)
    return parse_rules({"rules": entries}, "rules table")


def save_rules(store: Store, rules: list[Rule]) -> None:
    now = dt.datetime.now(dt.UTC)
    for rule in rules:
        store.execute(_UPSERT, (rule.rule_id, yaml.safe_dump(rule_to_dict(rule)), rule.paused,
                                now))


def set_paused(store: Store, rule_id: str, paused: bool) -> Rule:
    by_id = {r.rule_id: r for r in stored_rules(store)}
    if rule_id not in by_id:
        raise RuleError(f"no rule {rule_id!r} in the rules table")
    rule = by_id[rule_id]
    changed = Rule(rule.rule_id, rule.description, rule.when, rule.weight, paused)
    save_rules(store, [changed])
    return changed


def delete_rule(store: Store, rule_id: str) -> None:
    """Removes a rule from the table; running detection drops it at its next reload."""
    if store.execute(_SELECT_ONE, (rule_id,)).one() is None:
        raise RuleError(f"no rule {rule_id!r} in the rules table")
    store.execute(_DELETE, (rule_id,))


class StoredRules(RulesSource):
    """The rules table, re-read every refresh_seconds; one connection per worker."""

    def __init__(self, settings: Settings, refresh_seconds: float = 30.0) -> None:
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self._store: Store | None = None

    def load(self) -> list[Rule]:
        if self._store is None:
            # A worker's first load (in its setup) waits for a restarting node; a reload
            # fails at once and the rules in force stay (RulesCache).
            self._store = connect_when_up(self.settings)
            rules = waiting(lambda: stored_rules(self._store), transient_errors())
        else:
            rules = stored_rules(self._store)
        if not rules:
            raise RuleError("the rules table is empty; load rules with "
                            "`python -m fraud_detection rules load FILE`")
        return rules

    def describe(self) -> str:
        return f"the rules table of keyspace {self.settings.cassandra_keyspace}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None}


def rules_command(settings: Settings, action: str, target: str | None) -> list[str]:
    """`rules ACTION [TARGET]`: list, load FILE, pause/resume/delete RULE; lines to show.
    A file is checked whole against the rule schema before connecting: a bad one writes
    nothing."""
    from pathlib import Path

    from fraud_detection.store.keyspace import connect
    from fraud_detection.transforms.rules import load_rules

    loaded = load_rules(Path(target)) if action == "load" else []
    store = connect(settings)
    try:
        if action == "load":
            save_rules(store, loaded)
            return [f"loaded {len(loaded)} rules from {target}"]
        if action in ("pause", "resume"):
            rule = set_paused(store, target, action == "pause")
            return [f"rule {rule.rule_id} {'paused' if rule.paused else 'active'}"]
        if action == "delete":
            delete_rule(store, target)
            return [f"rule {target} deleted"]
        return [f"{r.rule_id:<28} {'paused' if r.paused else 'active':<7} {r.weight:.2f}  "
                f"{r.description}" for r in stored_rules(store)]
    finally:
        store.close()
