"""Streamers' config, status, control and progress in Redis: one hash per streamer.

The CLI and the dashboard write `command` (run / pause / stop); the running streamer
reads it between sends and reports back `status`, `last_row` (the index of the last
row the broker acknowledged), `sent` and `rate`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fraud_detection.config import Settings
from fraud_detection.errors import UsageError

PREFIX = "fraud-detection:streamer:"
NAMES = "fraud-detection:streamers"
PIPELINE_PREFIX = "fraud-detection:pipeline:"
COMMANDS = ("run", "pause", "stop")
# Status values a streamer reports.
STARTING, RUNNING, PAUSED, STOPPED, FINISHED, FAILED = (
    "starting", "running", "paused", "stopped", "finished", "failed")


class StreamerStateError(UsageError):
    """Redis is unreachable, or a streamer it is asked about does not exist."""


@dataclass(frozen=True)
class StreamerStatus:
    name: str
    config: dict[str, Any]
    status: str
    command: str
    last_row: int  # -1: nothing sent yet
    sent: int
    rate: float  # tx/s over the current run
    updated: float  # unix seconds of the streamer's last report
    error: str

    @property
    def next_row(self) -> int:
        return self.last_row + 1


def redis_client(settings: Settings):
    import redis

    return redis.Redis(host=settings.redis_host, port=settings.redis_port,
                       db=settings.redis_db, socket_timeout=5, socket_connect_timeout=3,
                       decode_responses=True)


class StreamerState:
    """Access to every streamer's hash; one per process is plenty."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.client = client or redis_client(settings)
        self.where = f"{settings.redis_host}:{settings.redis_port}"

    def _call(self, action, *args, **kwargs):
        import redis

        try:
            return action(*args, **kwargs)
        except redis.RedisError as exc:
            raise StreamerStateError(f"Redis at {self.where}: {exc}") from None

    def register(self, name: str, config: Mapping[str, Any]) -> StreamerStatus:
        """Saves the config and asks the streamer to run; progress is kept when the
        config names the same source, and restarted from row 0 when it does not."""
        key = PREFIX + name
        old = self._call(self.client.hget, key, "config")
        fields = {"config": json.dumps(dict(config), sort_keys=True), "command": "run",
                  "status": STARTING, "error": "", "updated": time.time()}
        if old is None or _source_of(json.loads(old)) != _source_of(config):
            fields.update(last_row=-1, sent=0, rate=0.0)
        pipe = self.client.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.sadd(NAMES, name)
        self._call(pipe.execute)
        return self.get(name)

    def names(self) -> list[str]:
        return sorted(self._call(self.client.smembers, NAMES))

    def get(self, name: str) -> StreamerStatus:
        fields = self._call(self.client.hgetall, PREFIX + name)
        if not fields:
            raise StreamerStateError(f"no streamer named {name!r}")
        return StreamerStatus(
            name=name, config=json.loads(fields.get("config", "{}")),
            status=fields.get("status", ""), command=fields.get("command", "run"),
            last_row=int(fields.get("last_row", -1)), sent=int(fields.get("sent", 0)),
            rate=float(fields.get("rate", 0.0)), updated=float(fields.get("updated", 0.0)),
            error=fields.get("error", ""))

    def all(self) -> list[StreamerStatus]:
        return [self.get(name) for name in self.names()]

    def command(self, name: str, command: str) -> StreamerStatus:
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {', '.join(COMMANDS)}: {command!r}")
        self.get(name)  # an unknown name fails here, not silently
        self._call(self.client.hset, PREFIX + name, "command", command)
        return self.get(name)

    def report(self, name: str, *, status: str, last_row: int | None = None,
               sent: int | None = None, rate: float | None = None, error: str = "") -> None:
        fields: dict[str, Any] = {"status": status, "updated": time.time(), "error": error}
        if last_row is not None:
            fields["last_row"] = last_row
        if sent is not None:
            fields["sent"] = sent
        if rate is not None:
            fields["rate"] = round(rate, 2)
        self._call(self.client.hset, PREFIX + name, mapping=fields)

    def report_pipeline(self, name: str, *, stored_per_second: float, stored: int,
                        lag: int) -> None:
        """A streaming pipeline's latest progress, for the dashboard and the CLI."""
        self._call(self.client.hset, PIPELINE_PREFIX + name, mapping={
            "stored_per_second": round(stored_per_second, 2), "stored": stored, "lag": lag,
            "at": time.time()})

    def pipeline_report(self, name: str) -> dict[str, float] | None:
        fields = self._call(self.client.hgetall, PIPELINE_PREFIX + name)
        return {k: float(v) for k, v in fields.items()} if fields else None

    def forget(self, name: str) -> None:
        pipe = self.client.pipeline()
        pipe.delete(PREFIX + name)
        pipe.srem(NAMES, name)
        self._call(pipe.execute)

    def close(self) -> None:
        self.client.close()


def _source_of(config: Mapping[str, Any]) -> tuple:
    return (config.get("source"), config.get("path"), config.get("seed"),
            config.get("rows"), config.get("days"), config.get("topic"))
