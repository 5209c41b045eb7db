"""Beam's local runners without downloads at run time: Prism built from Beam's Go module
into the cache, and the Flink job server jar staged in Beam's jar cache."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from apache_beam.version import __version__ as BEAM_VERSION

from fraud_detection.stack.errors import StackError
from fraud_detection.stack.fetch import (
    DEPENDENCY_PLUGIN,
    _apt_install,
    file_lock,
    java17,
    run_maven,
)

PRISM_MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
# Beam 2.77 supports Flink 1.19 to 2.2; 1.20 is the newest 1.x (Java 17, LOOPBACK works).
FLINK_VERSION = "1.20"
BEAM_JAR_CACHE = Path.home() / ".apache_beam" / "cache" / "jars"


def _bin_dir() -> Path:
    from fraud_detection.stack import default_state_dir

    # Beside the stack's folder, not in it: a Prism job server outlives `stack down`
    # (Beam keeps it for the life of the Python process) and is not a stack service.
    return default_state_dir().parent / "bin"


def _go() -> str:
    # The official Go tarball installs outside PATH.
    found = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if found is None:
        _apt_install("golang-go")
        found = shutil.which("go")
    if found is None:
        raise StackError("no Go toolchain to build Prism; install Go 1.24 or newer")
    return found


def prism_binary(bin_dir: Path | None = None) -> Path:
    """Prism at the Python SDK's version, built once with `go install`."""
    bin_dir = bin_dir or _bin_dir()
    binary, stamp = bin_dir / "prism", bin_dir / "prism.version"
    if binary.is_file() and stamp.is_file() and stamp.read_text() == BEAM_VERSION:
        return binary
    with file_lock(bin_dir / ".prism.lock"):
        if binary.is_file() and stamp.is_file() and stamp.read_text() == BEAM_VERSION:
            return binary
        log = bin_dir / "prism-build.log"
        env = {**os.environ, "GOBIN": str(bin_dir), "GOFLAGS": "-mod=mod"}
        with log.open("w") as out:
            result = subprocess.run([_go(), "install", f"{PRISM_MODULE}@v{BEAM_VERSION}"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=bin_dir)
        if result.returncode != 0 or not binary.is_file():
            raise StackError(f"building Prism v{BEAM_VERSION} failed; see {log}")
        stamp.write_text(BEAM_VERSION)
    return binary


def flink_job_server_jar(flink: str = FLINK_VERSION) -> Path:
    """The Flink job server jar under its Maven file name in Beam's jar cache, where the
    Python FlinkRunner looks before it would download."""
    artifact = f"beam-runners-flink-{flink}-job-server"
    jar = BEAM_JAR_CACHE / f"{artifact}-{BEAM_VERSION}.jar"
    if jar.is_file():
        return jar
    BEAM_JAR_CACHE.mkdir(parents=True, exist_ok=True)
    with file_lock(BEAM_JAR_CACHE / ".flink.lock"):
        if jar.is_file():
            return jar
        log = BEAM_JAR_CACHE / f"{artifact}.mvn.log"
        run_maven([f"{DEPENDENCY_PLUGIN}:copy",
                   f"-Dartifact=org.apache.beam:{artifact}:{BEAM_VERSION}",
                   f"-DoutputDirectory={BEAM_JAR_CACHE}"], log)
        if not jar.is_file():
            raise StackError(f"org.apache.beam:{artifact}:{BEAM_VERSION} could not be fetched "
                             f"from Maven; see {log}")
    return jar


# Beam's portable runner puts this timeout on the job's state stream too, so a Prism job
# running longer than it (300 s by default) fails with DEADLINE_EXCEEDED.
JOB_STREAM_TIMEOUT_SECONDS = 30 * 86_400


# Prism splits a slow bundle, and a split of a bundle holding timers (our event-time
# stages fire one per event) loses elements (apache/beam#35771): we saw 8 of 50,000
# outcomes and 153 of 20,096 rows vanish. This experiment turns Prism's splitting off.
PRISM_NO_SPLIT = "prism_disable_sdf_split"


def prism_args(bin_dir: Path | None = None) -> list[str]:
    return ["--runner=PrismRunner", f"--prism_location={prism_binary(bin_dir)}",
            f"--job_server_timeout={JOB_STREAM_TIMEOUT_SECONDS}",
            f"--experiments={PRISM_NO_SPLIT}"]


def flink_args(flink_master: str = "[local]", parallelism: int = 1) -> list[str]:
    return [
        "--runner=FlinkRunner",
        f"--flink_master={flink_master}",
        f"--flink_version={FLINK_VERSION}",
        f"--flink_job_server_jar={flink_job_server_jar()}",
        f"--job_server_java_launcher={java17()}",
        "--job_server_jvm_property=-Xmx1g",
        "--environment_type=LOOPBACK",
        f"--parallelism={parallelism}",
    ]
