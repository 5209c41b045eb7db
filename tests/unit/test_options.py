"""Every pipeline's options parse together, as Beam parses them (one process imports all)."""

from apache_beam.options.pipeline_options import PipelineOptions

from fraud_detection.beam_pipelines import backfill, batch, feature_table, stream, validate
from fraud_detection.beam_pipelines.options import DetectOptions


def test_all_pipeline_options_can_live_in_one_process() -> None:
    assert backfill and batch and validate and feature_table
    options = PipelineOptions(["--rules", "table", "--shards", "3", "--bounded",
                               "--features_out", "x", "--cell_ms", "50"])
    values = options.get_all_options()
    assert (values["rules"], values["shards"], values["bounded"]) == ("table", 3, True)
    assert options.view_as(DetectOptions).shards == 3
    assert options.view_as(stream.StreamOptions).bounded
    assert options.view_as(stream.StreamOptions).cell_ms == 50
