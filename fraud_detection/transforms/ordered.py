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
    OrderedListStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Duration, Timestamp

from fraud_detection.records import epoch_micros


def at_event_time(element: Any) -> TimestampedValue:
    """The record stamped with its own event time (records with an `event_time`)."""
    return TimestampedValue(element, Timestamp(micros=epoch_micros(element.event_time)))


def _at(moment: dt.datetime) -> Timestamp:
    # Timers carry milliseconds: compare at that precision, or an event with
    # microseconds would never be "due" and its timer would re-fire forever.
    return Timestamp(micros=epoch_micros(moment) // 1000 * 1000)


class _Entry:
    """A buffered element with its order key; compares by the key alone, so elements
    never need to be comparable themselves."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key = key
        self.value = value

    def __lt__(self, other: _Entry) -> bool:
        return self.key < other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Entry) and self.key == other.key

    def __getstate__(self) -> tuple:
        return self.key, self.value

    def __setstate__(self, state: tuple) -> None:
        self.key, self.value = state


_ONE_MS = Duration(micros=1000)


class EventTimeOrderedFn(beam.DoFn):
    """Buffers a key's elements until the watermark passes them, then feeds them to
    `step` in `order_key` order with the key's state. In batch the watermark jumps to
    the end, so each key's whole history runs in order; in streaming it runs as the
    watermark moves. An element behind one already processed still runs, marked late.

    The buffer is an ordered list by event time, so a firing reads and clears only the
    elements it takes. The timer is also the output watermark hold, so it stays at the
    earliest buffered element: nothing emitted later is behind the watermark downstream.

    Subclasses say when an element happened, how to order ties, what a fresh state is,
    and what one step outputs. `bounded`: the input is bounded (batch), where the
    watermark is already at the end when a timer fires, so one firing takes everything.
    """

    STATE = ReadModifyWriteStateSpec("state", PickleCoder())
    BUFFER = OrderedListStateSpec("buffer", PickleCoder())
    NEXT_FLUSH = ReadModifyWriteStateSpec("next_flush", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, bounded: bool = False) -> None:
        super().__init__()
        self.bounded = bounded

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
        at = _at(self.event_time(value))
        buffer.add((at, _Entry(self.order_key(value), value)))
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
        limit = MAX_TIMESTAMP if self.bounded else fired_at + _ONE_MS
        ready = sorted(entry for _, entry in buffer.read_range(MIN_TIMESTAMP, limit))
        buffer.clear_range(MIN_TIMESTAMP, limit)
        following = next(iter(buffer.read_range(limit, MAX_TIMESTAMP)), None)
        if following is None:
            next_flush.clear()
        else:
            flush.set(following[0])
            next_flush.write(following[0])
        state = state_cell.read()
        if state is None:
            state = self.new_state()
        for entry in ready:
            when = self.event_time(entry.value)
            last = self.last_time(state)
            late = last is not None and when < last
            for output in self.step(state, entry.value, late):
                yield TimestampedValue(output, Timestamp(micros=epoch_micros(when)))
        state_cell.write(state)
