"""A tiny windowed pipeline with a stateful DoFn and an event-time timer, on each local
runner: what the real pipelines rely on, checked where they will run."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from fraud_detection.stack.runners import prism_args

pytestmark = pytest.mark.integration

EVENTS = [("a", 1, 1), ("b", 5, 2), ("a", 3, 4), ("a", 7, 12), ("b", 2, 15), ("a", 1, 19)]
# Per key and 10 s window: the timer's sum, then the window's count.
EXPECTED = [("a", 0, 4, 2), ("b", 0, 5, 1), ("a", 10, 8, 2), ("b", 10, 2, 1)]


class SumAtWindowEnd(beam.DoFn):
    """Buffers a key's amounts and emits their sum when the watermark passes the window."""

    BUFFER = BagStateSpec("buffer", VarIntCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, element, window=beam.DoFn.WindowParam,
                buffer=beam.DoFn.StateParam(BUFFER), flush=beam.DoFn.TimerParam(FLUSH)):
        buffer.add(element[1])
        # Beam forbids timers past the window's last instant; Prism then drops the state.
        flush.set(window.max_timestamp())

    @on_timer(FLUSH)
    def emit(self, key=beam.DoFn.KeyParam, window=beam.DoFn.WindowParam,
             buffer=beam.DoFn.StateParam(BUFFER)):
        amounts = list(buffer.read())
        buffer.clear()
        yield key, int(window.start), sum(amounts), len(amounts)


def _windowed(events):
    return (events
            | beam.WindowInto(FixedWindows(10))
            | beam.ParDo(SumAtWindowEnd()))


def _runner_args(runner: str) -> list[str]:
    return prism_args() if runner == "prism" else ["--runner=FnApiRunner"]


@pytest.mark.parametrize("runner", ["prism", "fnapi"])
def test_windowed_timer_pipeline_in_batch(runner):
    with test_pipeline.TestPipeline(options=PipelineOptions(_runner_args(runner))) as p:
        events = (p | beam.Create(EVENTS)
                  | beam.Map(lambda e: TimestampedValue((e[0], e[1]), e[2])))
        assert_that(_windowed(events), equal_to(EXPECTED))


def test_windows_fire_as_the_watermark_advances_in_streaming_on_prism():
    options = PipelineOptions(prism_args())
    options.view_as(StandardOptions).streaming = True
    stream = test_stream.TestStream()
    for second in (0, 10):
        batch = [TimestampedValue((k, amount), ts) for k, amount, ts in EVENTS
                 if second <= ts < second + 10]
        stream = stream.add_elements(batch).advance_watermark_to(second + 10)
    stream = stream.advance_watermark_to_infinity()
    with test_pipeline.TestPipeline(options=options) as p:
        assert_that(_windowed(p | stream), equal_to(EXPECTED))
