"""Rules as data: conditions over a transaction and its features, loaded from YAML.

A rule is `when:` one condition (`{field, op, value}`) or a combination of them
(`all:` / `any:` / `not:`). A hit names the rule and the value that fired it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraud_detection.errors import UsageError

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.yaml")

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
    "in": lambda a, b: a in b,
    "between": lambda a, b: b[0] <= a <= b[1],
    "multiple_of": lambda a, b: a % b == 0,
}


# The rule schema: the keys a rule, a leaf condition and a combination may have.
RULE_FIELDS = ("id", "description", "when", "weight", "paused")
CONDITION_FIELDS = ("field", "op", "value")
COMBINATORS = ("all", "any", "not")


class RuleError(UsageError):
    pass


def _refuse_unknown(mapping: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """A key outside the schema is an error naming it, never silently kept or dropped."""
    allowed = tuple(allowed)
    unknown = [str(key) for key in mapping if key not in allowed]
    if unknown:
        raise RuleError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(allowed)})")


@dataclass(frozen=True)
class RuleHit:
    rule_id: str
    description: str
    field: str
    value: Any
    weight: float


@dataclass(frozen=True)
class Rule:
    rule_id: str
    description: str
    when: Mapping[str, Any]
    weight: float = 0.5
    paused: bool = False

    def evaluate(self, values: Mapping[str, Any]) -> RuleHit | None:
        if self.paused:
            return None
        fired = _check(self.when, values)
        if fired is None:
            return None
        field, value = fired
        return RuleHit(self.rule_id, self.description, field, value, self.weight)


def _check(condition: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(field, value) of the leaf that decided a true condition, or None."""
    if "all" in condition:
        fired = [_check(c, values) for c in condition["all"]]
        return None if any(f is None for f in fired) else fired[-1]
    if "any" in condition:
        return next((f for c in condition["any"] if (f := _check(c, values)) is not None), None)
    if "not" in condition:
        return None if _check(condition["not"], values) is not None else ("not", None)
    field = condition["field"]
    value = values.get(field)
    if value is None:
        return None
    try:
        return (field, value) if _OPS[condition["op"]](value, condition["value"]) else None
    except TypeError:
        return None


def _validate_condition(condition: Any, where: str) -> None:
    if not isinstance(condition, Mapping):
        raise RuleError(f"{where}: a condition must be a mapping")
    combinators = [key for key in COMBINATORS if key in condition]
    if len(combinators) > 1:
        raise RuleError(f"{where}: one of {', '.join(COMBINATORS)} per condition, got "
                        f"{', '.join(combinators)}")
    _refuse_unknown(condition, combinators or CONDITION_FIELDS, where)
    if "all" in condition or "any" in condition:
        parts = condition.get("all", condition.get("any"))
        if not isinstance(parts, list) or not parts:
            raise RuleError(f"{where}: all/any needs a non-empty list")
        for i, part in enumerate(parts):
            _validate_condition(part, f"{where}[{i}]")
    elif "not" in condition:
        _validate_condition(condition["not"], f"{where}.not")
    else:
        missing = {"field", "op", "value"} - set(condition)
        if missing:
            raise RuleError(f"{where}: missing {', '.join(sorted(missing))}")
        if condition["op"] not in _OPS:
            raise RuleError(f"{where}: unknown op {condition['op']!r} "
                            f"(one of {' '.join(_OPS)})")


def parse_rules(data: Any, source: str = "rules") -> list[Rule]:
    """Rules from their YAML form, checked against the schema: an unknown key, a wrong
    type or a bad condition is a one-line RuleError naming where it is."""
    entries = data.get("rules") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise RuleError(f"{source}: expected a top-level 'rules:' list")
    _refuse_unknown(data, ("rules",), source)
    rules, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"{source}: rules[{i}]"
        if not isinstance(entry, Mapping) or "id" not in entry or "when" not in entry:
            raise RuleError(f"{where}: each rule needs an id and a when")
        _refuse_unknown(entry, RULE_FIELDS, f"{where} ({entry['id']})")
        if not isinstance(entry["id"], str) or not entry["id"].strip():
            raise RuleError(f"{where}: id must be non-empty text, got {entry['id']!r}")
        if not isinstance(entry.get("description", ""), str):
            raise RuleError(f"{where} ({entry['id']}): description must be text")
        if not isinstance(entry.get("paused", False), bool):
            raise RuleError(f"{where} ({entry['id']}): paused must be true or false")
        if entry["id"] in seen:
            raise RuleError(f"{where}: duplicate rule id {entry['id']!r}")
        seen.add(entry["id"])
        _validate_condition(entry["when"], f"{where} ({entry['id']})")
        weight = entry.get("weight", 0.5)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise RuleError(f"{where}: weight must be a number in [0, 1]")
        rules.append(Rule(str(entry["id"]), str(entry.get("description", "")), entry["when"],
                          float(weight), bool(entry.get("paused", False))))
    # One order whatever the source (a file, the rules table): reasons list in it, and
    # the noisy-or multiplies in it, so the same rules give the same bits everywhere.
    return sorted(rules, key=lambda rule: rule.rule_id)


def load_rules(path: Path = DEFAULT_RULES_FILE) -> list[Rule]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise RuleError(f"cannot read rules file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise RuleError(f"{path}: not valid YAML") from None
    return parse_rules(data, str(path))


def evaluate(rules: Iterable[Rule], values: Mapping[str, Any]) -> list[RuleHit]:
    return [hit for rule in rules if (hit := rule.evaluate(values)) is not None]


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """The YAML entry of a rule (parse_rules reads it back)."""
    return {"id": rule.rule_id, "description": rule.description, "when": rule.when,
            "weight": rule.weight, "paused": rule.paused}


class RulesSource:
    """Where detection gets its rules while it runs. `load` may be called again every
    `refresh_seconds` (processing time), so rules can be added, changed and paused
    while a stream runs.

    Not a Beam side input on purpose: a triggered global-window side input is not
    supported by Prism (apache/beam#31438), and a windowed one holds every transaction
    until its window closes.
    """

    refresh_seconds: float = 30.0

    def load(self) -> list[Rule]:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class StaticRules(RulesSource):
    refresh_seconds = float("inf")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)

    def load(self) -> list[Rule]:
        return self.rules


class RulesCache:
    """The current rules of a source, reloaded when due. A reload that fails keeps the
    rules in force (a broken edit must not stop detection) and says so once."""

    def __init__(self, source: RulesSource, clock: Callable[[], float] | None = None) -> None:
        import time

        self.source = source
        self.clock = clock or time.monotonic
        self.rules = source.load()
        self.loaded_at = self.clock()
        self.last_error: str | None = None

    def current(self) -> list[Rule]:
        if self.clock() - self.loaded_at >= self.source.refresh_seconds:
            self.loaded_at = self.clock()
            try:
                self.rules = self.source.load()
                self.last_error = None
            except Exception as exc:  # any failure: keep detecting with the old rules
                message = f"reloading rules from {self.source.describe()} failed: {exc}"
                if message != self.last_error:
                    import logging

                    logging.getLogger(__name__).warning("%s; keeping %d rules", message,
                                                        len(self.rules))
                self.last_error = message
        return self.rules
