"""A streamer: sends its source's rows to Kafka at its rate, obeying the command in
Redis, and records in Redis the last row the broker acknowledged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fraud_detection.config import Settings
from fraud_detection.io.kafka import TRANSACTION_PARTITIONS, KafkaSender, ensure_topics
from fraud_detection.store.streamer_state import (
    FAILED,
    FINISHED,
    PAUSED,
    RUNNING,
    STOPPED,
    StreamerState,
)
from fraud_detection.streamers.config import StreamerConfig
from fraud_detection.streamers.sources import rows_from

REPORTS_PER_SECOND = 10
PAUSE_POLL_SECONDS = 0.2


class Streamer:
    def __init__(self, config: StreamerConfig, settings: Settings,
                 state: StreamerState | None = None,
                 stop_event: threading.Event | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> None:
        self.config = config
        self.settings = settings
        self.state = state or StreamerState(settings)
        self.stop_event = stop_event or threading.Event()
        self.progress = progress

    def run(self) -> str:
        """Streams until the source ends, the command is stop, or stop_event is set;
        returns the final status."""
        name = self.config.name
        try:
            return self._run()
        except Exception as exc:  # reported to Redis, then to the caller's log
            self.state.report(name, status=FAILED, error=f"{type(exc).__name__}: {exc}")
            self.progress(f"{name}: failed: {exc}")
            return FAILED

    def _run(self) -> str:
        name, rate = self.config.name, self.config.rate
        status = self.state.get(name)
        last_row, sent = status.last_row, status.sent
        rows: Iterator[dict[str, Any]] = rows_from(self.config, last_row + 1, self.settings)
        chunk = max(1, int(rate / REPORTS_PER_SECOND))
        # Created here with explicit retention if missing: a topic the broker auto-creates
        # keeps 7 days by record time, and replayed records carry their event times.
        ensure_topics(self.settings, {self.config.topic: TRANSACTION_PARTITIONS})
        sender = KafkaSender(self.settings)
        self.progress(f"{name}: {self.config.source} -> {self.config.topic} at {rate:g} tx/s, "
                      f"from row {last_row + 1}")
        try:
            started, sent_this_run = time.monotonic(), 0
            self.state.report(name, status=RUNNING, last_row=last_row, sent=sent, rate=0.0)
            while True:
                command = "stop" if self.stop_event.is_set() else self.state.get(name).command
                if command == "stop":
                    self.state.report(name, status=STOPPED)
                    self.progress(f"{name}: stopped after row {last_row}")
                    return STOPPED
                if command == "pause":
                    self.state.report(name, status=PAUSED, rate=0.0)
                    while self.state.get(name).command == "pause" \
                            and not self.stop_event.wait(PAUSE_POLL_SECONDS):
                        pass
                    started, sent_this_run = time.monotonic(), 0  # the rate restarts
                    continue
                batch = 0
                for row in rows:
                    due = started + sent_this_run / rate
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    sender.send_record(self.config.topic, row)
                    sent_this_run += 1
                    batch += 1
                    if batch == chunk:
                        break
                if batch:
                    sender.flush()
                    last_row, sent = last_row + batch, sent + batch
                elapsed = time.monotonic() - started
                self.state.report(name, status=RUNNING if batch == chunk else FINISHED,
                                  last_row=last_row, sent=sent,
                                  rate=sent_this_run / elapsed if elapsed > 0 else 0.0)
                if batch < chunk:
                    self.progress(f"{name}: finished, {sent} sent, last row {last_row}")
                    return FINISHED
        finally:
            sender.close()


def run_streamers(configs: list[StreamerConfig], settings: Settings,
                  progress: Callable[[str], None] = print,
                  stop_event: threading.Event | None = None) -> dict[str, str]:
    """Registers and runs every streamer in its own thread until all have ended."""
    stop_event = stop_event or threading.Event()
    state = StreamerState(settings)
    for config in configs:
        state.register(config.name, config.to_dict())
    results: dict[str, str] = {}

    def one(config: StreamerConfig) -> None:
        results[config.name] = Streamer(config, settings, StreamerState(settings), stop_event,
                                        progress).run()

    threads = [threading.Thread(target=one, args=(c,), name=f"streamer-{c.name}", daemon=True)
               for c in configs]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(0.5)
    except KeyboardInterrupt:
        stop_event.set()
        for thread in threads:
            thread.join()
    return results
