"""The frontier of stored offsets that the stream commits as its group's offset."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from fraud_detection.io.kafka import PartitionLag, advance_frontier, parse_position


def test_frontier_waits_for_a_missing_offset_then_jumps_past_what_was_stored() -> None:
    frontier, pending = advance_frontier(10, (), [12, 13, 15])
    assert (frontier, pending) == (10, ((12, 14), (15, 16)))
    frontier, pending = advance_frontier(frontier, pending, [10, 11])
    assert (frontier, pending) == (14, ((15, 16),))
    frontier, pending = advance_frontier(frontier, pending, [14, 3, 11])  # old ones ignored
    assert (frontier, pending) == (16, ())


@given(st.lists(st.integers(0, 200), max_size=300), st.integers(1, 20), st.randoms())
def test_frontier_is_the_first_offset_not_stored_whatever_the_order(
        stored: list[int], batches: int, rng: random.Random) -> None:
    rng.shuffle(stored)
    frontier, pending = 0, ()
    for i in range(batches):
        frontier, pending = advance_frontier(frontier, pending, stored[i::batches])
    expected = 0
    while expected in set(stored):
        expected += 1
    assert frontier == expected
    after = {o for o in stored if o > expected}
    assert {o for a, b in pending for o in range(a, b)} == after


def test_lag_counts_what_is_not_stored_and_what_retention_deleted() -> None:
    assert PartitionLag(0, start=0, end=500, committed=None).lag == 500
    assert PartitionLag(0, start=0, end=500, committed=480).lag == 20
    deleted = PartitionLag(0, start=300, end=500, committed=100)
    assert (deleted.lag, deleted.lost) == (200, 200)


def test_positions_name_topic_partition_and_offset() -> None:
    assert parse_position("kafka:tx-a/b/3/1234") == ("tx-a/b", 3, 1234)
