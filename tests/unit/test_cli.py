import subprocess
import sys

import pytest

from fraud_detection.cli import main

COMMANDS = ("generate", "import-paysim", "validate", "stack", "schema", "add", "config")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fraud_detection", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("args, message", [
    (["import-paysim", "/no/such.csv"], "no such file: /no/such.csv"),
    (["validate", "--input", "/no/such/dir"], "no Parquet files match"),
    (["generate", "--days", "zero"], "not a whole number"),
    (["generate", "--days", "2", "--out", "/tmp/never"], "days must be at least 3"),
    (["config", "--cassandra-port", "99999"], "--cassandra-port"),
    (["config", "--config", "/no/such.yaml"], "/no/such.yaml"),
    (["validate", "--input", "data/sample", "--", "--runnr=x"], "unknown Beam option"),
    (["frobnicate"], "invalid choice"),
    (["schema", "apply", "--cassandra-port", "1"], "cannot reach Cassandra at 127.0.0.1:1"),
    (["schema", "apply", "--cassandra-keyspace", "bad-name"], "not a valid keyspace name"),
    (["add", "bank", "--bank-id", "b", "--name", "B", "--country", "gb", "--currency", "GBP"],
     "country: expected an ISO 3166 two-letter code"),
    (["add", "account", "--account-id", "a"], "required: --user-id"),
])
def test_wrong_input_is_one_line_and_nonzero(args, message):
    result = run_cli(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_generate_then_validate(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["generate", "--days", "3", "--rows", "2000", "--seed", "3", "--quiet",
                 "--out", str(out)]) == 0
    assert "transactions over 3 days" in capsys.readouterr().out
    assert main(["validate", "--input", str(out), "--dead-letters",
                 str(tmp_path / "dl" / "v"), "--", "--runner=FnApiRunner"]) == 0
    printed = capsys.readouterr().out
    assert "dead-lettered 0" in printed and "valid" in printed


def test_config_shows_layered_settings(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("cassandra:\n  port: 9142\nredis_port: 6400\n")
    env = {"PATH": "", "FRAUD_REDIS_PORT": "6500", "FRAUD_CASSANDRA_PASSWORD": "s3cret"}
    result = run_cli("config", "--config", str(config), "--kafka-bootstrap", "h:1", env=env)
    assert result.returncode == 0, result.stderr
    assert "cassandra_port: 9142" in result.stdout
    assert "redis_port: 6500" in result.stdout
    assert "kafka_bootstrap: h:1" in result.stdout
    assert "s3cret" not in result.stdout


def test_console_script_is_installed():
    from pathlib import Path

    script = Path(sys.executable).parent / "fraud-detection"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert all(name in result.stdout for name in COMMANDS)
