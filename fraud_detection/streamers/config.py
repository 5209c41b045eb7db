"""Streamer configs: which rows go to which topic at what rate, from a YAML file.

    streamers:
      - name: sample
        source: parquet          # parquet | paysim | generator
        path: data/sample        # a dataset folder (parquet) or a PaySim CSV (paysim)
        topic: transactions
        rate: 200                # transactions per second
      - name: live
        source: generator        # a generated world, the same rows for the same seed
        seed: 7
        days: 30
        rows: 50000
        rate: 100
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from fraud_detection.errors import UsageError

SOURCES = ("parquet", "paysim", "generator")
_KEYS = {"name", "source", "path", "topic", "rate", "seed", "days", "rows"}


@dataclass(frozen=True)
class StreamerConfig:
    name: str
    source: str
    topic: str
    rate: float
    path: str | None = None
    seed: int = 7
    days: int = 30
    rows: int = 50_000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def streamer_config(raw: Mapping[str, Any], default_topic: str, where: str = "") -> StreamerConfig:
    """A checked config, or a UsageError that says what is wrong in one line."""
    at = f"{where}: " if where else ""
    if not isinstance(raw, Mapping):
        raise UsageError(f"{at}a streamer must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        raise UsageError(f"{at}unknown keys {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise UsageError(f"{at}name: a non-empty text without ':' is required")
    at = f"{where}: streamer {name}: " if where else f"streamer {name}: "
    source = raw.get("source")
    if source not in SOURCES:
        raise UsageError(f"{at}source must be one of {', '.join(SOURCES)}, got {source!r}")
    rate = raw.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 100_000:
        raise UsageError(f"{at}rate must be a number of transactions per second in "
                         f"(0, 100000], got {rate!r}")
    topic = raw.get("topic", default_topic)
    if not isinstance(topic, str) or not topic:
        raise UsageError(f"{at}topic must be a topic name, got {topic!r}")
    path = raw.get("path")
    if source in ("parquet", "paysim") and (not isinstance(path, str)
                                            or not Path(path).exists()):
        what = "dataset folder" if source == "parquet" else "file"
        raise UsageError(f"{at}path: no such {what}: {path!r}")
    numbers = {}
    for key, default, least in (("seed", 7, 0), ("days", 30, 3), ("rows", 50_000, 1_000)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UsageError(f"{at}{key} must be a whole number >= {least}, got {value!r}")
        numbers[key] = value
    return StreamerConfig(name=name, source=source, topic=topic, rate=float(rate),
                          path=path, **numbers)


def load_streamer_configs(path: Path, default_topic: str) -> list[StreamerConfig]:
    if not path.is_file():
        raise UsageError(f"no such streamer config file: {path}")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    items = document.get("streamers") if isinstance(document, Mapping) else None
    if not isinstance(items, list) or not items:
        raise UsageError(f"{path}: expected a non-empty list under 'streamers:'")
    configs = [streamer_config(raw, default_topic, str(path)) for raw in items]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: streamer names must be unique")
    return configs
