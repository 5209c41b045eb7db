"""A Flink job server jar the user supplies is staged where the Python FlinkRunner
looks for it; anything else is refused in one line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from fraud_detection.stack import StackError, runners


@pytest.fixture
def jar_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setattr(runners, "BEAM_JAR_CACHE", cache)
    return cache


def _jar(path: Path, *entries: str) -> Path:
    with zipfile.ZipFile(path, "w") as jar:
        for entry in entries:
            jar.writestr(entry, b"\xca\xfe\xba\xbe")
    return path


def test_a_supplied_job_server_jar_is_staged_under_its_maven_name(
        jar_cache: Path, tmp_path: Path) -> None:
    assert runners.staged_flink_job_server_jar() is None
    supplied = _jar(tmp_path / "mine.jar", runners._FLINK_DRIVER)
    staged = runners.stage_flink_job_server_jar(supplied)
    assert staged.parent == jar_cache
    assert staged.name == (f"beam-runners-flink-{runners.FLINK_VERSION}-job-server-"
                           f"{runners.BEAM_VERSION}.jar")
    assert staged.read_bytes() == supplied.read_bytes()
    assert runners.staged_flink_job_server_jar() == staged
    assert runners.flink_job_server_jar() == staged  # no Maven once staged


def test_what_is_not_a_job_server_jar_is_refused(jar_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no such file"):
        runners.stage_flink_job_server_jar(tmp_path / "missing.jar")
    (tmp_path / "text.jar").write_text("not a zip")
    with pytest.raises(StackError, match="not a jar"):
        runners.stage_flink_job_server_jar(tmp_path / "text.jar")
    other = _jar(tmp_path / "other.jar", "org/example/Main.class")
    with pytest.raises(StackError, match="not a Beam Flink job server jar"):
        runners.stage_flink_job_server_jar(other)
    assert runners.staged_flink_job_server_jar() is None
