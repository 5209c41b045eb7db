"""`streamers ACTION`: start configured streamers here, or steer running ones through
their state in Redis, and show their status with the stream pipeline's progress."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fraud_detection.config import Settings
from fraud_detection.errors import UsageError

# action -> (the command a streamer obeys, what it reports once it has)
STEERING = {"enable": ("run", "resumed"), "disable": ("pause", "paused"),
            "interrupt": ("stop", "stopped")}


def start(settings: Settings, config_file: Path, names: Sequence[str]) -> dict[str, str]:
    """Runs the file's streamers (or the named ones) until they end; name -> outcome."""
    from fraud_detection.streamers.config import load_streamer_configs
    from fraud_detection.streamers.runner import run_streamers

    configs = load_streamer_configs(config_file, settings.topic_transactions)
    unknown = sorted(set(names) - {c.name for c in configs})
    if unknown:
        raise UsageError(f"not in {config_file}: {', '.join(unknown)}")
    return run_streamers([c for c in configs if not names or c.name in names], settings)


def steer(settings: Settings, action: str, names: Sequence[str]) -> Iterator[str]:
    from fraud_detection.store.streamer_state import StreamerState

    if not names:
        raise UsageError(f"streamers {action} needs one or more streamer names")
    command, done = STEERING[action]
    state = StreamerState(settings)
    try:
        for name in names:
            state.command(name, command)
            yield f"{name}: asked to {command}; it will report {done} within a second"
    finally:
        state.close()


def status_lines(settings: Settings, names: Sequence[str]) -> Iterator[str]:
    from fraud_detection.store.streamer_state import StreamerState

    state = StreamerState(settings)
    try:
        statuses = state.all() if not names else [state.get(name) for name in names]
    finally:
        state.close()
    yield (f"{'name':<16} {'status':<9} {'command':<8} {'source':<10} {'topic':<14} "
           f"{'target/s':>8} {'rate/s':>8} {'sent':>9} {'last row':>9}  last report")
    for s in statuses:
        age = time.time() - s.updated
        yield (f"{s.name:<16} {s.status:<9} {s.command:<8} {s.config.get('source', ''):<10} "
               f"{s.config.get('topic', ''):<14} {s.config.get('rate', 0):>8g} {s.rate:>8.1f} "
               f"{s.sent:>9} {s.last_row:>9}  {age:.0f}s ago"
               + (f"  error: {s.error}" if s.error else ""))
    if not statuses:
        yield "no streamers registered (start some with `streamers start`)"
    yield pipeline_progress_line(settings)


def pipeline_progress_line(settings: Settings) -> str:
    from fraud_detection.beam_pipelines.stream import GROUP_ID
    from fraud_detection.progress import read_progress

    try:
        progress = read_progress(settings, GROUP_ID)
    except Exception as exc:  # Kafka down: the streamers' table still stands
        return (f"stream pipeline: progress unknown: Kafka at {settings.kafka_bootstrap}: "
                f"{type(exc).__name__}")
    return f"stream pipeline ({settings.topic_transactions}): {progress.describe()}"
