"""The test session's own stack, apart from the one a user runs.

`scripts/test.sh` may run while the demo's stack serves the default ports from
~/.cache/fraud-detection/stack. The tests never start, stop or write to it: their stack
lives in its own folder, ~/.cache/fraud-detection/test-stack, on the default ports plus
an offset (10000: Kafka 19092, Cassandra 19042, Redis 16379, ...). Tests that start a
stack of their own (a 3-node cluster, a secured node) take further offsets beside it.

One environment setting moves all of it: FRAUD_TEST_PORT_OFFSET=N puts the ports at the
defaults plus N and the folder at test-stack-N (two checkouts testing at once, or a
port that something else holds). The downloaded jars and the Prism binary stay shared
with the default stack, so nothing is fetched twice.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from fraud_detection.config import Settings
from fraud_detection.stack import Ports

OFFSET_ENV = "FRAUD_TEST_PORT_OFFSET"
DEFAULT_OFFSET = 10_000
# Further offsets, for the tests that start stacks of their own beside the session's.
CLUSTER_OFFSET = 1_000
SECURE_OFFSET = 2_000
RUNNER_OFFSET = 3_000
_HIGHEST_DEFAULT_PORT = max(dataclasses.astuple(Ports()))


def port_offset() -> int:
    raw = os.environ.get(OFFSET_ENV, str(DEFAULT_OFFSET))
    try:
        offset = int(raw)
    except ValueError:
        raise SystemExit(f"{OFFSET_ENV}: expected a whole number, got {raw!r}") from None
    # Away from the defaults (the user's stack), and every port of every test stack valid.
    highest = 65535 - _HIGHEST_DEFAULT_PORT - RUNNER_OFFSET - 10
    if not 100 <= offset <= highest:
        raise SystemExit(f"{OFFSET_ENV}: must be between 100 and {highest}, got {offset}")
    return offset


def stack_ports(extra: int = 0) -> Ports:
    """The default ports moved by the session's offset (plus extra, for a second stack)."""
    shift = port_offset() + extra
    return Ports(**{name: port + shift for name, port in dataclasses.asdict(Ports()).items()})


def stack_dir(kind: str = "stack") -> Path:
    """The session's stack folder, test-stack (or a further stack's: test-cluster, ...),
    beside the default stack's in the user's cache; never the default one itself."""
    offset = port_offset()
    name = f"test-{kind}" + ("" if offset == DEFAULT_OFFSET else f"-{offset}")
    return Settings().stack_dir.with_name(name)


def own_stack_dir(kind: str) -> Iterator[Path]:
    """A further stack's folder for a module fixture (`yield from`): stopped and
    removed before (leftovers of an interrupted run) and after."""
    from fraud_detection.stack import down

    state = stack_dir(kind)
    down(state)
    shutil.rmtree(state, ignore_errors=True)
    yield state
    down(state)
    shutil.rmtree(state, ignore_errors=True)


def session_environ() -> dict[str, str]:
    """FRAUD_* settings for the session, so code and subprocesses that read their settings
    from the environment (the CLI, Streamlit, the stream pipeline) reach the test stack
    and never the default one, whatever the user's shell exports."""
    ports = stack_ports()
    return {
        "FRAUD_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports.kafka}",
        "FRAUD_CASSANDRA_HOSTS": "127.0.0.1",
        "FRAUD_CASSANDRA_PORT": str(ports.cassandra_native),
        "FRAUD_REDIS_HOST": "127.0.0.1",
        "FRAUD_REDIS_PORT": str(ports.redis),
        "FRAUD_STACK_DIR": str(stack_dir()),
        "FRAUD_LOG_FILE": str(stack_dir() / "logs" / "cli.log"),
    }
