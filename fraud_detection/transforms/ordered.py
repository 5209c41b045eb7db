"""Run each key's elements through a state machine in event-time order, in batch and in
streaming alike: buffer them until the watermark passes, then process them sorted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from fraud_detection.records import epoch_micros


def _at(moment: dt.datetime) -> Timestamp:
    # Timers carry milliseconds: compare at that precision, or an event with
    # microseconds would never be "due" and its timer would re-fire forever.
    return Timestamp(micros=epoch_micros(moment) // 1000 * 1000)


class EventTimeOrderedFn(beam.DoFn):
    """Buffers a key's elements until the watermark passes them, then feeds them to
    `step` in `order_key` order with the key's state. In batch the watermark jumps to
    the end, so each key's whole history runs in order; in streaming it runs as the
    watermark moves. An element behind one already processed still runs, marked late.

    Subclasses say when an element happened, how to order ties, what a fresh state is,
    and what one step outputs.
    """

    STATE = ReadModifyWriteStateSpec("state", PickleCoder())
    BUFFER = BagStateSpec("buffer", PickleCoder())
    NEXT_FLUSH = ReadModifyWriteStateSpec("next_flush", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def event_time(self, element: Any) -> dt.datetime:
        raise NotImplementedError

    def order_key(self, element: Any) -> Any:
        return self.event_time(element)

    def new_state(self) -> Any:
        raise NotImplementedError

    def last_time(self, state: Any) -> dt.datetime | None:
        raise NotImplementedError

    def step(self, state: Any, element: Any, late: bool) -> Iterator[Any]:
        raise NotImplementedError

    def process(self, element: tuple[Any, Any],
                buffer=beam.DoFn.StateParam(BUFFER),
                next_flush=beam.DoFn.StateParam(NEXT_FLUSH),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, value = element
        buffer.add(value)
        at = _at(self.event_time(value))
        pending = next_flush.read()
        if pending is None or at < pending:
            # One timer per key: keep it at the earliest buffered element.
            flush.set(at)
            next_flush.write(at)

    @on_timer(FLUSH)
    def on_flush(self, fired_at=beam.DoFn.TimestampParam,
                 state_cell=beam.DoFn.StateParam(STATE),
                 buffer=beam.DoFn.StateParam(BUFFER),
                 next_flush=beam.DoFn.StateParam(NEXT_FLUSH),
                 flush=beam.DoFn.TimerParam(FLUSH)):
        pending = sorted(buffer.read(), key=self.order_key)
        ready = [e for e in pending if _at(self.event_time(e)) <= fired_at]
        waiting = pending[len(ready):]
        buffer.clear()
        for e in waiting:
            buffer.add(e)
        if waiting:
            # The watermark may already be far past fired_at (in batch it is at the
            # end): aim at the latest waiting element so one more firing can take them
            # all, and an earlier arrival in process() pulls the timer back.
            at = _at(self.event_time(waiting[-1]))
            flush.set(at)
            next_flush.write(at)
        else:
            next_flush.clear()
        state = state_cell.read()
        if state is None:
            state = self.new_state()
        for e in ready:
            when = self.event_time(e)
            last = self.last_time(state)
            late = last is not None and when < last
            for output in self.step(state, e, late):
                yield TimestampedValue(output, Timestamp(micros=epoch_micros(when)))
        state_cell.write(state)
