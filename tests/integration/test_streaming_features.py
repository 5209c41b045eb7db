"""The account stage in streaming on Prism: out-of-order arrivals give the features of
the same events in order (the batch path's answer)."""

import pytest

from fraud_detection.stack.runners import prism_args
from fraud_detection.transforms.features import event_order_key
from tests.unit.test_features import _expected, _sample_transactions

pytestmark = pytest.mark.integration


def test_stateful_dofn_in_streaming_matches_batch_even_out_of_order():
    import random

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.window import TimestampedValue

    from fraud_detection.transforms.features import ComputeAccountFeatures

    transactions = _sample_transactions(120)
    expected = _expected(transactions)
    ordered = sorted(transactions, key=event_order_key)
    stream = TestStream()
    rnd = random.Random(3)
    # Arrive in chunks of event time, shuffled inside each chunk; the watermark trails.
    for start in range(0, len(ordered), 20):
        chunk = ordered[start:start + 20]
        rnd.shuffle(chunk)
        stream.add_elements([TimestampedValue(t, t.event_time.timestamp()) for t in chunk])
        stream.advance_watermark_to(min(t.event_time for t in chunk).timestamp())
    stream.advance_watermark_to_infinity()
    options = PipelineOptions(prism_args())
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = (p | stream
               | ComputeAccountFeatures()
               | beam.Map(lambda f: (f.transaction.transaction_id, f.features, f.late)))
        assert_that(out, equal_to([(k, v, False) for k, v in expected.items()]))
