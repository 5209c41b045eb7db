"""No secret in a pipeline's graph: the Cassandra password set in Settings appears
nowhere in the pipeline's proto, not even inside its pickled DoFns, while workers in
the submitting process still connect with it and other processes read it from the
environment or the password file. Connectors show where they connect (display data),
never the secret. Building a graph touches no network."""

from __future__ import annotations

import base64
import bz2
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms.display import DisplayData

from fraud_detection.config import ConfigError, Settings
from fraud_detection.io.cassandra import KnownAccounts, WriteToCassandra
from fraud_detection.io.kafka import ReadFromKafka, WriteToKafka
from fraud_detection.store.rules import StoredRules
from fraud_detection.store.tables import scored_table_rows
from fraud_detection.transforms.detect import DetectFraud

PASSWORD = "pw-5d0c9e1f-never-in-a-graph"


def _blobs(proto: beam_runner_api_pb2.Pipeline) -> list[bytes]:
    """The proto's bytes, and each transform payload's pickled DoFn decompressed (Beam's
    pickler stores base64 of the compressed pickle: bz2 or zlib)."""
    blobs = [proto.SerializeToString()]
    for transform in proto.components.transforms.values():
        if transform.spec.urn != "beam:transform:pardo:v1":
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        blob = payload.do_fn.payload
        blobs.append(blob)
        for decompress in (bz2.decompress, zlib.decompress):
            try:
                blobs.append(decompress(base64.b64decode(blob)))
            except (OSError, ValueError, zlib.error):
                continue
    return blobs


def test_no_secret_in_the_pipeline_graph() -> None:
    settings = Settings(cassandra_username="fraud", cassandra_password=PASSWORD)
    assert PASSWORD not in repr(settings)
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    transactions = pipeline | beam.Create([])
    known = transactions | KnownAccounts(settings, "test")
    scored = known["known"] | DetectFraud(StoredRules(settings), as_tables=True)
    _ = scored | WriteToCassandra(settings, scored_table_rows, batched=True)
    _ = scored | WriteToKafka(settings, "alerts", lambda t: (None, {}))
    blobs = _blobs(pipeline.to_runner_api())
    decompressed = [b for b in blobs[1:] if b.startswith(b"\x80")]
    assert decompressed, "no pickled DoFn found: the search would prove nothing"
    assert any(b"fraud" in b for b in decompressed)  # the username is there, in the clear
    assert not any(PASSWORD.encode() in b for b in blobs)


def test_a_pickled_settings_gets_its_password_back_only_in_this_process(
        tmp_path: Path) -> None:
    settings = Settings(cassandra_username="fraud", cassandra_password=PASSWORD)
    blob = pickle.dumps(settings)
    assert PASSWORD.encode() not in blob
    assert pickle.loads(blob) == settings
    other = Settings(cassandra_username="fraud", cassandra_password="another")
    assert pickle.loads(pickle.dumps(other)) == other  # its own password, not the first's
    assert pickle.loads(blob) == settings
    (tmp_path / "settings.pickle").write_bytes(blob)
    elsewhere = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; s = pickle.load(open(sys.argv[1], 'rb'));"
         "print(s.cassandra_username, repr(s.cassandra_password), repr(s.cassandra_secret()))",
         str(tmp_path / "settings.pickle")],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2])
    assert elsewhere.stdout.split() == ["fraud", "''", "''"]


def test_workers_read_the_password_from_the_environment_or_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    on_worker = Settings(cassandra_password_file=str(secret_file))
    monkeypatch.delenv("FRAUD_CASSANDRA_PASSWORD", raising=False)
    assert on_worker.cassandra_secret() == PASSWORD
    monkeypatch.setenv("FRAUD_CASSANDRA_PASSWORD", "from-the-environment")
    assert on_worker.cassandra_secret() == "from-the-environment"
    monkeypatch.delenv("FRAUD_CASSANDRA_PASSWORD")
    with pytest.raises(ConfigError, match="cassandra_password_file: cannot read"):
        Settings(cassandra_password_file=str(tmp_path / "missing")).cassandra_secret()


def test_connectors_show_where_they_connect_and_no_secret() -> None:
    settings = Settings(cassandra_keyspace="fraud_x", cassandra_username="fraud",
                        cassandra_password=PASSWORD)
    shown = {}
    for connector in (WriteToCassandra(settings, scored_table_rows, batched=True),
                      KnownAccounts(settings, "kafka:transactions"),
                      WriteToKafka(settings, "alerts", lambda t: (None, {})),
                      ReadFromKafka("127.0.0.1:9092", ["transactions"], "group")):
        items = DisplayData.create_from(connector).items
        shown[type(connector).__name__] = {item.key: item.value for item in items}
        assert not any(PASSWORD in str(item.value) for item in items)
    assert shown["WriteToCassandra"]["keyspace"] == "fraud_x"
    assert "transactions" in shown["WriteToCassandra"]["tables"]
    assert shown["KnownAccounts"]["table"] == "accounts"
    assert shown["WriteToKafka"]["topic"] == "alerts"
    assert shown["ReadFromKafka"]["topics"] == "transactions"


def test_a_kafka_read_is_built_without_reaching_the_broker() -> None:
    # Nothing listens on port 9: building the graph failed when it looked for the topic.
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = pipeline | ReadFromKafka("127.0.0.1:9", ["transactions"], "group", bounded=True)
    proto = pipeline.to_runner_api()
    assert any("ReadFromKafka" in t.unique_name for t in proto.components.transforms.values())
