import argparse
from pathlib import Path

import pytest

from fraud_detection.config import ConfigError, Settings, add_settings_arguments, load_settings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    return parser.parse_args(argv)


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(parse(), environ={}) == Settings()


def test_each_layer_overrides_the_one_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fraud-detection.yaml").write_text(
        "cassandra:\n  port: 9100\n  hosts: [a, b]\nredis_port: 6000\ndata_dir: /file\n")
    from_file = load_settings(parse(), environ={})
    assert (from_file.cassandra_port, from_file.cassandra_hosts) == (9100, ("a", "b"))
    env = {"FRAUD_CASSANDRA_PORT": "9200", "FRAUD_CASSANDRA_HOSTS": "c, d",
           "FRAUD_DATA_DIR": "/env"}
    from_env = load_settings(parse(), environ=env)
    assert (from_env.cassandra_port, from_env.cassandra_hosts) == (9200, ("c", "d"))
    assert (from_env.redis_port, from_env.data_dir) == (6000, Path("/env"))
    from_flags = load_settings(parse("--cassandra-port", "9300", "--data-dir", "/flag",
                                     "--cassandra-hosts", "e"), environ=env)
    assert (from_flags.cassandra_port, from_flags.cassandra_hosts) == (9300, ("e",))
    assert from_flags.data_dir == Path("/flag")


def test_config_file_from_flag_or_env(tmp_path):
    named = tmp_path / "named.yaml"
    named.write_text("kafka_bootstrap: k:1\n")
    assert load_settings(parse("--config", str(named)), environ={}).kafka_bootstrap == "k:1"
    assert load_settings(parse(), environ={"FRAUD_CONFIG": str(named)}).kafka_bootstrap == "k:1"


@pytest.mark.parametrize("yaml_text, environ, argv, message", [
    ("", {"FRAUD_CASSANDRA_PORT": "abc"}, (),
     "FRAUD_CASSANDRA_PORT: expected an integer, got 'abc'"),
    ("cassandra:\n  port: x\n", {}, (), "c.yaml: cassandra_port: expected an integer, got 'x'"),
    ("", {}, ("--cassandra-port", "70000"), "--cassandra-port: must be between 1 and 65535"),
    ("kafak:\n  bootstrap: x\n", {}, (), "c.yaml: unknown setting 'kafak.bootstrap'"),
    ("a: [\n", {}, (), "c.yaml: not valid YAML (line 2)"),
    ("", {}, ("--fraud-threshold", "1.5"), "--fraud-threshold: must be at most 1.0"),
    ("", {"FRAUD_CASSANDRA_CONSISTENCY": "most"}, (),
     "FRAUD_CASSANDRA_CONSISTENCY: must be one of"),
    ("- just a list\n", {}, (), "expected a mapping"),
])
def test_wrong_values_fail_with_one_line_naming_the_source(tmp_path, yaml_text, environ, argv,
                                                           message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(parse("--config", str(config), *argv), environ=environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(parse("--config", str(tmp_path / "nope.yaml")), environ={})


def test_mapping_args_and_masked_password(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"cassandra-password": "pw", "cassandra_consistency": "quorum"},
                             environ={})
    assert settings.cassandra_consistency == "QUORUM"
    assert settings.as_dict()["cassandra_password"] == "***"
    assert settings.cassandra_password == "pw"
