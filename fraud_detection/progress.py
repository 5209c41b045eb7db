"""The streaming pipeline's true progress: the consumer group's committed offsets follow
what is stored (io.kafka.CommitStored), so the lag is messages sent but not yet stored.

`stream` samples it every 10 s, logs a line and keeps the rate in Redis; the
Operations page and `streamers status` read the lag live and the rate from there.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from fraud_detection.config import Settings
from fraud_detection.io.kafka import PartitionLag, consumer_lag

PIPELINE = "stream"
REPORT_SECONDS = 10.0
# A rate older than this comes from a pipeline that stopped reporting.
STALE_SECONDS = 3 * REPORT_SECONDS


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Progress:
    partitions: tuple[PartitionLag, ...]
    stored_per_second: float | None  # None: the pipeline is not reporting
    reported_at: float | None  # unix seconds of the pipeline's last report

    @property
    def sent(self) -> int:
        return sum(p.end for p in self.partitions)

    @property
    def stored(self) -> int:
        return sum(p.stored_through for p in self.partitions)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def lost(self) -> int:
        return sum(p.lost for p in self.partitions)

    def describe(self, no_rate: str = "the pipeline is not reporting") -> str:
        rate = (no_rate if self.stored_per_second is None
                else f"{self.stored_per_second:,.1f} stored/s")
        text = (f"{self.stored:,} of {self.sent:,} messages stored, lag {self.lag:,}, {rate}")
        if self.lost:
            text += f"; {self.lost:,} deleted by the broker before they were stored"
        return text


def read_progress(settings: Settings, group_id: str) -> Progress:
    """The lag now, from Kafka; the stored rate as the running pipeline last reported it."""
    from fraud_detection.store.streamer_state import StreamerState, StreamerStateError

    partitions = tuple(consumer_lag(settings, group_id, settings.topic_transactions))
    rate = reported = None
    try:
        state = StreamerState(settings)
        try:
            report = state.pipeline_report(PIPELINE)
        finally:
            state.close()
    except StreamerStateError:
        report = None
    if report and time.time() - report["at"] <= STALE_SECONDS:
        rate, reported = report["stored_per_second"], report["at"]
    return Progress(partitions, rate, reported)


class ProgressReporter(threading.Thread):
    """Every `every` seconds: the stored count, rate and lag to the log and to Redis, and a
    warning when the broker deleted messages the pipeline had not stored."""

    def __init__(self, settings: Settings, group_id: str, every: float = REPORT_SECONDS) -> None:
        super().__init__(name="stream-progress", daemon=True)
        self.settings = settings
        self.group_id = group_id
        self.every = every
        self.stopped = threading.Event()
        self.warned_lost = 0

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        from fraud_detection.store.streamer_state import StreamerState, StreamerStateError

        state = StreamerState(self.settings)
        before: tuple[float, int] | None = None
        while not self.stopped.wait(0 if before is None else self.every):
            try:
                partitions = tuple(consumer_lag(self.settings, self.group_id,
                                                self.settings.topic_transactions))
            except Exception as exc:  # Kafka restarting: say so, try again next time
                _warn(f"stream: progress: Kafka: {exc}")
                continue
            now = time.time()
            stored = sum(p.stored_through for p in partitions)
            rate = None if before is None else (stored - before[1]) / (now - before[0])
            before = (now, stored)
            progress = Progress(partitions, rate, now)
            print(f"stream: progress: {progress.describe('rate from the next report')}",
                  flush=True)
            if progress.lost > self.warned_lost:
                _warn(f"stream: warning: topic {self.settings.topic_transactions}: the broker "
                      f"deleted {progress.lost:,} messages before they were stored (log start "
                      f"past the committed offset); check the topic's retention")
                self.warned_lost = progress.lost
            if rate is not None:
                try:
                    state.report_pipeline(PIPELINE, stored_per_second=rate, stored=stored,
                                          lag=progress.lag)
                except StreamerStateError as exc:
                    _warn(f"stream: progress: {exc}")
        state.close()
