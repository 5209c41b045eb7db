"""The pure parts of streaming: the topic restriction tracker, message and label
validation, streamer configs."""

from __future__ import annotations

import pyarrow as pa
import pytest
from apache_beam.pvalue import TaggedOutput

from fraud_detection.errors import UsageError
from fraud_detection.io.kafka import (
    UNBOUNDED,
    PartitionRange,
    TopicRestriction,
    TopicTracker,
    encode_record,
)
from fraud_detection.records import validate_transaction
from fraud_detection.streamers.config import streamer_config
from fraud_detection.transforms import kernel
from fraud_detection.transforms.parse import ValidateMessageFn, decode_json, validate_label


def test_tracker_checkpoints_every_partition_and_never_halves_one() -> None:
    tracker = TopicTracker(TopicRestriction((PartitionRange(0, 5, UNBOUNDED),
                                             PartitionRange(1, 0, UNBOUNDED))))
    assert tracker.try_claim((0, 5, 1_000)) and tracker.try_claim((1, 0, 900))
    assert tracker.try_claim((0, 6, 1_100))
    assert tracker.try_split(0.5) is None  # no dynamic split of live offsets
    primary, residual = tracker.try_split(0)
    assert [(r.start, r.stop) for r in primary.ranges] == [(5, 7), (0, 1)]
    assert [(r.start, r.stop, r.newest_ms) for r in residual.ranges] == \
        [(7, UNBOUNDED, 1_100), (1, UNBOUNDED, 900)]
    assert not tracker.try_claim((0, 7, 1_200))  # after the checkpoint: the residual's
    tracker.check_done()


def test_bounded_tracker_is_done_at_every_stop_even_with_offset_gaps() -> None:
    tracker = TopicTracker(TopicRestriction((PartitionRange(0, 0, 4), PartitionRange(1, 2, 2))))
    assert tracker.try_claim((0, 0, 1)) and tracker.try_claim((0, 2, 2))  # 1, 3: markers
    with pytest.raises(ValueError, match="were not read"):
        tracker.check_done()
    assert not tracker.try_claim((0, -1, 0))  # END: nothing more before the stop
    tracker.check_done()
    backwards = TopicTracker(TopicRestriction((PartitionRange(0, 0, 9),)))
    backwards.try_claim((0, 3, 0))
    with pytest.raises(ValueError, match="claimed after"):
        backwards.try_claim((0, 2, 0))


def test_messages_that_are_not_json_say_why() -> None:
    assert decode_json(b'{"a": 1}') == ({"a": 1}, None)
    value, problem = decode_json(b'{"a": ')
    assert value is None and problem.startswith("message: not JSON")
    assert decode_json(b"\xff\xfe\xfa")[1].startswith("message:")


def test_a_poll_of_messages_validates_to_one_table_as_each_message_would() -> None:
    good = {"transaction_id": "t-1", "event_time": "2024-01-02T10:00:00Z",
            "bank_id": "bank-01", "user_id": "u-1", "account_id": "a-1",
            "counterparty_id": "m-1", "counterparty_type": "merchant",
            "tx_type": "PAYMENT", "amount_cents": 1234, "currency": "EUR"}
    poll = [("kafka:t/0/4", 1, encode_record(good)),
            ("kafka:t/0/5", 2, b"{not json"),
            ("kafka:t/1/9", 3, encode_record({**good, "transaction_id": "t-2"})),
            ("kafka:t/1/10", 4, encode_record({**good, "amount_cents": -1}))]
    batched = list(ValidateMessageFn("kafka:t", validate_transaction, counted=False,
                                     batched=True).process(poll))
    one_by_one = [out for message in poll for out in ValidateMessageFn(
        "kafka:t", validate_transaction, counted=False).process(message)]

    tables = [out for out in batched if isinstance(out, pa.Table)]
    assert len(tables) == 1
    valid = [out for out in one_by_one if not isinstance(out, TaggedOutput)]
    assert tables[0].equals(kernel.table_of(valid))
    assert tables[0][kernel.POSITION].to_pylist() == ["kafka:t/0/4", "kafka:t/1/9"]
    letters = [(out.value.position, out.value.reason) for out in batched
               if isinstance(out, TaggedOutput)]
    assert letters == [(out.value.position, out.value.reason) for out in one_by_one
                       if isinstance(out, TaggedOutput)]
    assert [p for p, _ in letters] == ["kafka:t/0/5", "kafka:t/1/10"]
    assert "not JSON" in letters[0][1] and "amount_cents: negative" in letters[1][1]


def test_labels_are_checked_field_by_field() -> None:
    good = {"transaction_id": "t1", "counterparty_id": "m-1", "label": "analyst_confirmed",
            "transaction_time": "2024-01-02T03:04:05Z", "labelled_at": "2024-01-03T00:00:00Z"}
    event, errors = validate_label(good)
    assert errors == [] and event.transaction_id == "t1"
    _, errors = validate_label({**good, "label": "<script>", "labelled_at": "soon"})
    assert any(e.startswith("label: '<script>'") for e in errors)
    assert any(e.startswith("labelled_at:") for e in errors)
    assert validate_label([1])[1] == ["label: expected an object, got list"]
    # Any scenario name is a fraud label: an imported dataset keeps its own.
    event, errors = validate_label({**good, "label": "skimming ring-2"})
    assert errors == [] and event.label == "skimming ring-2"
    assert validate_label({**good, "label": None})[1] == [
        "label: expected a scenario name or 'legit', got nothing"]


def test_streamer_configs_reject_bad_values_in_one_line(tmp_path) -> None:
    config = streamer_config({"name": "g", "source": "generator", "rate": 50, "rows": 2000},
                             "transactions")
    assert config.topic == "transactions" and config.rate == 50.0
    for raw, words in (({"name": "x", "source": "csv", "rate": 1}, "source must be"),
                       ({"name": "x", "source": "generator", "rate": True}, "rate must be"),
                       ({"name": "a:b", "source": "generator", "rate": 1}, "name:"),
                       ({"name": "x", "source": "generator", "rate": 1, "speed": 2},
                        "unknown keys speed"),
                       ({"name": "x", "source": "paysim", "path": str(tmp_path / "no.csv"),
                         "rate": 1}, "no such file")):
        with pytest.raises(UsageError, match=words):
            streamer_config(raw, "t")
