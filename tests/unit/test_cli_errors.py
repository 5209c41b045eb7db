"""Every wrong input to `python -m fraud_detection` ends the same way: one line on the
terminal naming the file, option or value, a non-zero exit, and no traceback.

The cases are a table: every subcommand of the argparse parser (nested ones too, such as
`add bank`) gets an unknown option, a bad settings value, its missing required arguments
and a bad value for each typed or choice option, so a new command is covered when it is
added. Hand-written rows add what the parser cannot know: damaged Parquet files, Beam
options, output folders, and services that are not there (port 1, where nothing
listens). Every run is a real subprocess with the settings pointing nowhere real, so a
case that unexpectedly parsed could not touch a running stack or the repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraud_detection.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
BAD = "not-valid"
TIMEOUT = 60  # a case that waits on a service longer than this is a failure itself


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(path, parser) for every command, and for the kinds under a command (add bank)."""
    parser, _handlers = build_parser()
    for name, sub in _subcommands(parser).items():
        yield (name,), sub
        for kind, nested in _subcommands(sub).items():
            yield (name, kind), nested


def _is_required(action: argparse.Action) -> bool:
    if isinstance(action, argparse._SubParsersAction):
        return bool(action.required)
    if not action.option_strings:
        return action.nargs not in ("?", "*", argparse.REMAINDER)
    return bool(action.required)


def _typed(action: argparse.Action) -> bool:
    """An option whose value argparse checks: a converting type or a list of choices."""
    return bool(action.choices) or action.type not in (None, str, Path)


def _required_args(sub: argparse.ArgumentParser) -> list[str]:
    """Values for the required arguments, so the error is about the argument under test."""
    args: list[str] = []
    for action in sub._actions:
        if isinstance(action, argparse._SubParsersAction) or not _is_required(action):
            continue
        value = str(next(iter(action.choices))) if action.choices else "x"
        args += [action.option_strings[-1], value] if action.option_strings else [value]
    return args


def _generated_cases() -> list:
    cases = []
    for path, sub in _commands():
        label = " ".join(path)
        if _subcommands(sub):
            continue  # add: its kinds (add bank, ...) are commands of their own here
        given = [*path, *_required_args(sub)]
        cases.append(pytest.param([*given, "--no-such-option"], ["--no-such-option"],
                                  id=f"{label} unknown option"))
        cases.append(pytest.param([*path, "--cassandra-port", BAD, *given[len(path):]],
                                  ["--cassandra-port", BAD], id=f"{label} bad setting"))
        if any(_is_required(a) for a in sub._actions):
            cases.append(pytest.param(list(path), ["required"], id=f"{label} missing"))
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction) or not _typed(action):
                continue
            if action.option_strings:
                flag = action.option_strings[-1]
                cases.append(pytest.param([*path, flag, BAD], [flag, BAD],
                                          id=f"{label} {flag} {BAD}"))
            else:
                cases.append(pytest.param([*path, BAD], [BAD], id=f"{label} {action.dest} {BAD}"))
    return cases


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dataset with a good day and a day whose file is garbage, and one whose
    accounts file is garbage."""
    root = tmp_path_factory.mktemp("damaged")
    bad_day = root / "day"
    shutil.copytree(SAMPLE / "entities", bad_day / "entities")
    good = bad_day / "transactions" / "date=2024-01-01"
    good.mkdir(parents=True)
    shutil.copy(SAMPLE / "transactions" / "date=2024-01-01" / "part-00000.parquet", good)
    corrupt = bad_day / "transactions" / "date=2024-01-02" / "part-00000.parquet"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PAR1 this is not a Parquet file " * 64)
    bad_entities = root / "entities"
    shutil.copytree(bad_day / "entities", bad_entities / "entities")
    shutil.copytree(bad_day / "transactions" / "date=2024-01-01",
                    bad_entities / "transactions" / "date=2024-01-01")
    accounts = bad_entities / "entities" / "accounts" / "part-00000.parquet"
    accounts.write_bytes(accounts.read_bytes()[:100])  # truncated
    return {"day": bad_day, "corrupt": corrupt, "entities": bad_entities,
            "accounts": accounts}


def _run(args: list[str], workdir: Path, extra_env: dict[str, str] | None = None,
         ) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FRAUD_")}  # the test session's settings, a user's config
    env.update({
        # Settings that point nowhere: a case that parsed by mistake reaches nothing.
        "FRAUD_CASSANDRA_PORT": "1", "FRAUD_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "FRAUD_REDIS_PORT": "1", "FRAUD_STACK_DIR": str(workdir / "stack"),
        "FRAUD_DATA_DIR": str(workdir / "no-data"), "FRAUD_LOG_FILE": str(workdir / "cli.log"),
        **(extra_env or {}),
    })
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "fraud_detection", *args], cwd=workdir,
                            env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return result, time.monotonic() - began


def assert_one_line_error(result: subprocess.CompletedProcess, fragments: list[str]) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert output and "\n" not in output, f"not one line:\n{output}"
    for fragment in fragments:
        assert fragment in output, output


@pytest.mark.parametrize("args, fragments", _generated_cases())
def test_every_command_refuses_bad_arguments_in_one_line(
        args: list[str], fragments: list[str], tmp_path: Path) -> None:
    result, _seconds = _run(args, tmp_path)
    assert_one_line_error(result, fragments)


def test_the_table_covers_every_command() -> None:
    parser, handlers = build_parser()
    ids = {p.id.split(" ")[0] for p in _generated_cases()}
    assert ids == set(handlers) == set(_subcommands(parser))


HAND_WRITTEN = [
    # Damaged Parquet: named, and found before any row is read or written.
    (["validate", "--input", "{day}", "--dead-letters", "dl/v"], ["{corrupt}"]),
    (["batch", "--input", "{day}"], ["{corrupt}"]),
    (["batch", "--input", "{entities}"], ["{accounts}"]),
    (["train", "--input", "{day}", "--model-dir", "model"], ["{corrupt}"]),
    (["evaluate", "--input", "{day}"], ["{corrupt}"]),
    (["validate", "--input", "{corrupt}"], ["{corrupt}"]),
    (["validate", "--input", "no/such/folder"], ["no Parquet files match"]),
    # Beam options after --.
    (["validate", "--input", "{sample}", "--", "--runner=NoSuchRunner"],
     ["--runner", "NoSuchRunner"]),
    (["validate", "--input", "{sample}", "--", "--direct_num_workers=many"],
     ["--direct_num_workers", "many"]),
    (["validate", "--input", "{sample}", "--", "--runner"], ["--runner"]),
    (["batch", "--input", "{sample}", "--", "--no_such_beam_option=1"],
     ["--no_such_beam_option"]),
    # Files and folders.
    (["generate", "--out", "/proc/x"], ["--out /proc/x"]),
    (["import-paysim", "no-such.csv"], ["no-such.csv"]),
    (["rules", "load", "no-such-rules.yaml"], ["no-such-rules.yaml"]),
    (["streamers", "start", "--file", "no-such.yaml"], ["no-such.yaml"]),
    (["config", "--config", "no-such.yaml"], ["no-such.yaml"]),
    # Arguments only the command itself can check.
    ([], ["give a command"]),
    (["backfill"], ["--date"]),
    (["backfill", "--date", "someday"], ["--date", "someday"]),
    (["backfill", "--from", "2024-01-03", "--to", "2024-01-01", "--input", "{sample}"],
     ["--to"]),
    (["schedule", "install", "--print", "--at", "25:00", "--input", "{sample}"],
     ["--at", "25:00"]),
    (["schedule", "install", "--print", "--at", "noon", "--input", "{sample}"],
     ["--at", "noon"]),
    (["rules", "pause"], ["rule id"]),
    (["streamers", "enable"], ["streamer names"]),
    (["logins", "add", "someone", "--role", "admin"], ["FRAUD_LOGIN_PASSWORD"]),
    (["dashboard", "--port", "0"], ["--port"]),
    (["dashboard", "--port", "70000"], ["--port", "70000"]),
    (["config", "--log-level", "LOUD"], ["--log-level", "LOUD"]),
    (["stack"], ["required"]),
    (["stack", "frobnicate"], ["frobnicate"]),
    (["stack", "up", "--cassandra-nodes", "0"], ["--cassandra-nodes"]),
    (["stack", "up", "--services", "postgres"], ["postgres"]),
    (["stack", "logs"], ["required"]),
    (["stack", "up", "--workers", "2"], ["--workers", "--runner-service"]),
    (["stack", "up", "--runner-service", "--workers", "9"], ["--workers"]),
    (["stack", "logs", "worker-x"], ["worker-x"]),
    (["stack", "runners", "--flink-job-server-jar", "/nonexistent/flink.jar"],
     ["no such file", "/nonexistent/flink.jar"]),
    # No runner service in the test's stack folder.
    (["validate", "--input", "{sample}", "--", "--runner_service"],
     ["no runner service", "stack up --runner-service"]),
    (["stream", "--", "--detach"], ["--detach needs --runner_service"]),
    (["add", "bank"], ["required", "--bank-id"]),
    # Services where nothing listens: one line, quickly, naming where it looked.
    (["batch", "--input", "{sample}"], ["127.0.0.1:1"]),
    (["schema", "apply"], ["127.0.0.1:1"]),
    (["rules", "list"], ["127.0.0.1:1"]),
    (["add", "bank", "--bank-id", "b", "--name", "B", "--country", "GB", "--currency", "GBP"],
     ["127.0.0.1:1"]),
    (["entities", "consume", "--idle-seconds", "1"], ["127.0.0.1:1"]),
    (["stream", "--bounded"], ["127.0.0.1:1"]),
    (["streamers", "status"], ["127.0.0.1:1"]),
    (["streamers", "disable", "replay"], ["127.0.0.1:1"]),
]


@pytest.mark.parametrize("args, fragments", HAND_WRITTEN,
                         ids=[" ".join(a) or "(no command)" for a, _f in HAND_WRITTEN])
def test_wrong_input_is_one_line(args: list[str], fragments: list[str],
                                 damaged: dict[str, Path], tmp_path: Path) -> None:
    names = {key: str(value) for key, value in damaged.items()} | {"sample": str(SAMPLE)}
    result, _seconds = _run([a.format(**names) for a in args], tmp_path)
    assert_one_line_error(result, [f.format(**names) for f in fragments])


def test_logins_with_a_password_but_no_cassandra(tmp_path: Path) -> None:
    result, _seconds = _run(["logins", "add", "someone", "--role", "admin"], tmp_path,
                            {"FRAUD_LOGIN_PASSWORD": "a password"})
    assert_one_line_error(result, ["127.0.0.1:1"])


def test_driver_warnings_go_to_the_log_file_and_to_the_terminal_with_verbose(
        tmp_path: Path) -> None:
    quiet, _seconds = _run(["schema", "apply"], tmp_path)
    assert_one_line_error(quiet, ["127.0.0.1:1"])
    log = (tmp_path / "cli.log").read_text()
    assert "cassandra.cluster" in log and "Traceback" in log  # kept, out of the way

    loud, _seconds = _run(["schema", "apply", "--verbose"], tmp_path)
    assert loud.returncode != 0
    assert "cassandra.cluster" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("fraud-detection schema: error: ")


def test_a_damaged_day_fails_its_backfill_by_name_and_loads_nothing(
        damaged: dict[str, Path], tmp_path: Path) -> None:
    # Backfill reports each day on a line of its own; the damaged day's line names the
    # file, and the file is checked before the day's flags are cleared (Cassandra, at
    # port 1 here, is never reached for it).
    result, _seconds = _run(["backfill", "--input", str(damaged["day"]), "--date", "2024-01-02"],
                           tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    day_line = output.splitlines()[0]
    assert day_line.startswith("2024-01-02 FAILED") and str(damaged["corrupt"]) in day_line
    assert "127.0.0.1:1" not in output
