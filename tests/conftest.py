"""Fixtures for the tests against the real local services of fraud_detection.stack.

The session brings its own stack up once (tests/stack_env.py: its own folder and ports,
never the user's default stack), or reuses it if it is already running, and takes it
down at the end only if it started it. A service that cannot start fails the tests
loudly: it never skips them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fraud_detection.config import Settings, load_settings
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.stack import StackError, StackInfo, down, status, up
from fraud_detection.store.keyspace import apply_schema, drop_keyspace
from tests import stack_env
from tests.integration.worlds import World, load_world

# Before any test runs: settings read from the environment (load_settings, the CLI and
# Streamlit in subprocesses) reach the test stack, whatever the user's shell exports.
os.environ.update(stack_env.session_environ())

# These take the session's stack down, so they run after every other test.
RUN_LAST = ("test_stack_lifecycle.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name in RUN_LAST)  # stable: order kept otherwise


def _up_or_fail(**up_args: Any) -> StackInfo:
    """up(**up_args), or a test failure (never a skip) that says in one line why not.
    Without ports and state_dir: the session's stack."""
    up_args.setdefault("ports", stack_env.stack_ports())
    up_args.setdefault("state_dir", stack_env.stack_dir())
    try:
        return up(**up_args)
    except StackError as exc:
        problem = str(exc)
    pytest.fail(f"the stack did not start: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def up_or_fail() -> Callable[..., StackInfo]:
    return _up_or_fail


@pytest.fixture(scope="session")
def stack_was_running() -> bool:
    return any(s.running for s in status(stack_env.stack_dir()))


@pytest.fixture(scope="session")
def stack(stack_was_running: bool) -> Iterator[StackInfo]:
    """The session's stack (never the default one a user may be running)."""
    yield _up_or_fail()
    if not stack_was_running:
        down(stack_env.stack_dir())


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A generated 10-day world, scored from its labels so store tests need no model."""
    out = tmp_path_factory.mktemp("world")
    generate(WorldConfig(days=10, seed=11, rows=3000, banks=2), out, progress=False)
    return load_world(out)


@pytest.fixture(scope="session")
def keyspace_for(stack: StackInfo) -> Callable[..., Settings]:
    """Settings for a fresh keyspace with the schema applied (dropped first if left over)."""

    def make(name: str, **overrides: Any) -> Settings:
        settings = load_settings({"cassandra_hosts": stack.cassandra_hosts,
                                  "cassandra_port": stack.ports.cassandra_native,
                                  "cassandra_keyspace": name, **overrides})
        drop_keyspace(settings)
        apply_schema(settings)
        return settings

    return make
