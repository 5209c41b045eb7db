"""Beam's local runners without downloads at run time: Prism built from Beam's Go module
(with a fix, PRISM_PATCHES) into the cache, and the Flink job server jar staged in
Beam's jar cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
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


BEAM_GO_MODULE = "github.com/apache/beam/sdks/v2"
# Prism's progress loop selects on a bundle's data channel after it is closed, so it
# spins from the bundle's last output until its response (for a stage without outputs,
# the whole bundle): 80% of Prism's CPU in a live stream, about a third of a core here.
# A nil channel never fires in a select; (file, exact text, replacement), each found
# exactly once or the build stops.
PRISM_PATCHES = (
    ("go/pkg/beam/runners/prism/internal/stage.go",
     "\tif b.OutputCount+len(b.HasTimers) == 0 {\n\t\tdataFinished = true\n\t}\n",
     "\tif b.OutputCount+len(b.HasTimers) == 0 {\n\t\tdataFinished = true\n"
     "\t\tdataReady = nil // closed: would spin the select below\n\t}\n"),
    ("go/pkg/beam/runners/prism/internal/stage.go",
     "\t\tcase <-dataReady:\n\t\t\tdataFinished = true\n",
     "\t\tcase <-dataReady:\n\t\t\tdataFinished = true\n"
     "\t\t\tdataReady = nil // closed: would spin until the response\n"),
    # It also asks every running bundle for progress every 100 ms, and the Python SDK
    # answers by walking every operation's metrics: about an eighth of a live stream's
    # CPU (its read bundles run 0.3 s). Once a second still splits a stuck bundle.
    ("go/pkg/beam/runners/prism/internal/stage.go",
     "\tminimumProgTick = 100 * time.Millisecond\n",
     "\tminimumProgTick = 1000 * time.Millisecond\n"),
)


def _prism_stamp() -> str:
    patches = hashlib.sha256(repr(PRISM_PATCHES).encode()).hexdigest()[:12]
    return f"{BEAM_VERSION} patched {patches}"


def _build_prism(binary: Path, log) -> None:
    """Beam's Go module at the Python SDK's version, copied, patched and built."""
    go = _go()
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    found = subprocess.run([go, "mod", "download", "-json", f"{BEAM_GO_MODULE}@v{BEAM_VERSION}"],
                           capture_output=True, text=True, env=env, cwd=binary.parent)
    log.write(found.stdout + found.stderr)
    if found.returncode != 0:
        raise StackError(f"downloading Beam's Go module v{BEAM_VERSION} failed")
    module = Path(json.loads(found.stdout)["Dir"])
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".prism-src-") as tmp:
        source = Path(tmp)
        shutil.copytree(module / "go", source / "go")
        for name in ("go.mod", "go.sum"):
            shutil.copy(module / name, source / name)
        for path, text, replacement in PRISM_PATCHES:
            target = source / path
            target.chmod(0o644)
            code = target.read_text()
            if code.count(text) != 1:
                raise StackError(f"Prism v{BEAM_VERSION}: {path} has changed; the patch "
                                 "in stack/runners.py no longer applies")
            target.write_text(code.replace(text, replacement))
        log.flush()
        # Built beside, then renamed over: a running Prism keeps its own file.
        fresh = binary.with_name(binary.name + ".new")
        built = subprocess.run([go, "build", "-o", str(fresh), "./go/cmd/prism"],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=source)
    if built.returncode != 0 or not fresh.is_file():
        raise StackError(f"building Prism v{BEAM_VERSION} failed; see {log.name}")
    fresh.replace(binary)


def prism_binary(bin_dir: Path | None = None) -> Path:
    """Prism at the Python SDK's version, built once with PRISM_PATCHES."""
    bin_dir = bin_dir or _bin_dir()
    binary, stamp = bin_dir / "prism", bin_dir / "prism.version"
    if binary.is_file() and stamp.is_file() and stamp.read_text() == _prism_stamp():
        return binary
    bin_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(bin_dir / ".prism.lock"):
        if binary.is_file() and stamp.is_file() and stamp.read_text() == _prism_stamp():
            return binary
        stamp.unlink(missing_ok=True)
        with (bin_dir / "prism-build.log").open("w") as log:
            _build_prism(binary, log)
        stamp.write_text(_prism_stamp())
    return binary


def flink_jar_path(flink: str = FLINK_VERSION) -> Path:
    return BEAM_JAR_CACHE / f"beam-runners-flink-{flink}-job-server-{BEAM_VERSION}.jar"


def staged_flink_job_server_jar(flink: str = FLINK_VERSION) -> Path | None:
    """The job server jar if it is in Beam's jar cache already (fetched or supplied)."""
    jar = flink_jar_path(flink)
    return jar if jar.is_file() else None


# A class only Beam's Flink job server jar holds.
_FLINK_DRIVER = "org/apache/beam/runners/flink/FlinkJobServerDriver.class"


def stage_flink_job_server_jar(supplied: Path, flink: str = FLINK_VERSION) -> Path:
    """A job server jar the user supplies (where Maven Central is not reachable), copied
    into Beam's jar cache under the name the Python FlinkRunner looks for."""
    import zipfile

    try:
        with zipfile.ZipFile(supplied) as jar:
            if _FLINK_DRIVER not in jar.namelist():
                raise StackError(f"{supplied}: not a Beam Flink job server jar (no "
                                 f"{_FLINK_DRIVER})")
    except FileNotFoundError:
        raise StackError(f"no such file: {supplied}") from None
    except (zipfile.BadZipFile, IsADirectoryError):
        raise StackError(f"{supplied}: not a jar") from None
    target = flink_jar_path(flink)
    BEAM_JAR_CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(supplied, target)
    return target


def flink_job_server_jar(flink: str = FLINK_VERSION) -> Path:
    """The Flink job server jar under its Maven file name in Beam's jar cache, where the
    Python FlinkRunner looks before it would download."""
    artifact = f"beam-runners-flink-{flink}-job-server"
    jar = flink_jar_path(flink)
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
