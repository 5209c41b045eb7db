"""Decision: a score in [0, 1], a flag, and reasons in plain words."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fraud_detection.records import ScoredTransaction
from fraud_detection.transforms.features import FeaturedTransaction
from fraud_detection.transforms.rules import Rule, RuleHit, evaluate

LATE_REASON = "arrived late: scored against a history that already held later events"


def rule_values(featured: FeaturedTransaction) -> dict[str, Any]:
    """What a rule can look at: the transaction's fields and its features."""
    values = featured.transaction.to_dict()
    values.update({name: getattr(featured.features, name)
                   for name in featured.features.__dataclass_fields__})
    return values


def combine(weights: Sequence[float]) -> float:
    """Noisy-or: independent pieces of evidence, each with its own strength."""
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - weight
    return 1.0 - remaining


def describe(hit: RuleHit) -> str:
    return hit_text(hit.rule_id, hit.description, hit.field, hit.value)


def hit_text(rule_id: str, description: str, field: str, value: Any) -> str:
    shown = f"{value:.2f}" if isinstance(value, float) else value
    return f"{description or rule_id} [{rule_id}: {field} = {shown}]"


def decide(featured: FeaturedTransaction, rules: Sequence[Rule], threshold: float,
           model_probability: float | None = None, model_version: str = "") -> ScoredTransaction:
    hits = evaluate(rules, rule_values(featured))
    evidence = [h.weight for h in hits]
    reasons = [describe(h) for h in hits]
    if model_probability is not None:
        evidence.append(model_probability)
        reasons.append(f"model {model_version or 'score'}: {model_probability:.2f}")
    if featured.late:
        reasons.append(LATE_REASON)
    score = round(combine(evidence), 6)
    return ScoredTransaction(
        transaction=featured.transaction, score=score, flagged=score >= threshold,
        reasons=tuple(reasons), late=featured.late, model_version=model_version)
