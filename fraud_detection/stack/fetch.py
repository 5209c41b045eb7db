"""Fetches what the services run on into a cache: Java 17, Maven jars, redis-server."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fraud_detection.stack.errors import StackError

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# The published kafka_2.13 pom leaves out a logging backend; reload4j is the one Kafka ships.
KAFKA_ARTIFACTS = (
    "org.apache.kafka:kafka_2.13:3.9.1",
    "ch.qos.reload4j:reload4j:1.2.25",
    "org.slf4j:slf4j-reload4j:1.7.36",
)
CASSANDRA_ARTIFACTS = ("org.apache.cassandra:cassandra-all:5.0.8",)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    run = functools.partial(subprocess.run, env=env, capture_output=True, text=True)
    try:
        result = run(install)
        if result.returncode != 0:  # stale or missing package lists
            run(["apt-get", "update", "-q"])
            result = run(install)
    except OSError as exc:
        raise StackError(f"cannot install {package} with apt-get: {exc}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise StackError(f"apt-get install {package} failed: {last}")


@functools.cache
def java17() -> Path:
    """Debian's OpenJDK 17: Cassandra 5.0 and Kafka 3.9 do not run on the newer JDKs
    that may come first on PATH."""
    def find() -> Path | None:
        try:
            listed = subprocess.run(["update-alternatives", "--list", "java"],
                                    capture_output=True, text=True).stdout.split()
        except OSError:
            listed = []
        candidates = [*listed, *map(str, Path("/usr/lib/jvm").glob("java-17-openjdk*/bin/java"))]
        return next((Path(c) for c in candidates if "java-17-openjdk" in c and Path(c).exists()),
                    None)

    java = find()
    if java is None:
        _apt_install("openjdk-17-jre-headless")
        java = find()
    if java is None:
        raise StackError("no Java 17 (java-17-openjdk) found; "
                         "apt-get install openjdk-17-jre-headless")
    return java


def _pom(name: str, artifacts: tuple[str, ...]) -> str:
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>\n    "
        for g, a, v in (artifact.split(":") for artifact in artifacts))
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fraud-detection.stack</groupId>
  <artifactId>{name}-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    {deps}</dependencies>
</project>
"""


def run_maven(args: list[str], log: Path) -> int:
    """`mvn -B -q ARGS` on Java 17 (installing Maven if missing), output to log."""
    mvn = shutil.which("mvn")
    if mvn is None:
        _apt_install("maven")
        mvn = shutil.which("mvn") or "mvn"
    env = {**os.environ, "JAVA_HOME": str(java17().parent.parent)}
    with log.open("w") as out:
        return subprocess.run([mvn, "-B", "-q", *args], stdout=out, stderr=subprocess.STDOUT,
                              env=env).returncode


def maven_lib(folder: Path, artifacts: tuple[str, ...]) -> Path:
    """folder/lib holding the runtime classpath of artifacts; Maven runs only when the
    artifact list changed or an earlier copy did not finish."""
    lib, done = folder / "lib", folder / "complete"
    wanted = "\n".join(artifacts) + "\n"
    if done.is_file() and done.read_text() == wanted:
        return lib
    with file_lock(folder / ".lock"):
        if done.is_file() and done.read_text() == wanted:
            return lib
        done.unlink(missing_ok=True)
        shutil.rmtree(lib, ignore_errors=True)
        pom, log = folder / "pom.xml", folder / "mvn.log"
        pom.write_text(_pom(folder.name, artifacts))
        returncode = run_maven(["-f", str(pom), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                                "-DincludeScope=runtime", f"-DoutputDirectory={lib}"], log)
        if returncode != 0 or not any(lib.glob("*.jar")):
            raise StackError(f"fetching {', '.join(artifacts)} with Maven failed; see {log}")
        done.write_text(wanted)
    return lib


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        _apt_install("redis-server")
        found = shutil.which("redis-server")
    if found is None:
        raise StackError("redis-server not found after apt-get install redis-server")
    return found
