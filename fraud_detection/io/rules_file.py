"""Rules from a YAML file, re-read when the file changes."""

from __future__ import annotations

from pathlib import Path

from fraud_detection.transforms.rules import Rule, RulesSource, load_rules


class FileRules(RulesSource):
    def __init__(self, path: Path, refresh_seconds: float = 10.0) -> None:
        self.path = Path(path)
        self.refresh_seconds = refresh_seconds
        self._seen: tuple[float, int] | None = None
        self._rules: list[Rule] = []

    def load(self) -> list[Rule]:
        stat = self.path.stat()
        if self._seen != (stat.st_mtime, stat.st_size):
            self._rules = load_rules(self.path)
            self._seen = (stat.st_mtime, stat.st_size)
        return self._rules

    def describe(self) -> str:
        return str(self.path)

    def __getstate__(self) -> dict:
        # Workers read the file themselves.
        return {**self.__dict__, "_seen": None, "_rules": []}
