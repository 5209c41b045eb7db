"""Settings: defaults < YAML config file < FRAUD_* environment < command-line flags.

The one place that knows hosts, ports, keyspace, topics and paths. Flags, env
names and coercion all come from the Settings fields, so a new setting is one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraud_detection.errors import UsageError

ENV_PREFIX = "FRAUD_"
DEFAULT_CONFIG_FILE = Path("fraud-detection.yaml")
CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM",
                      "LOCAL_ONE")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(UsageError):
    pass


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fraud-detection"


def _setting(default: Any, help_text: str, **checks: Any) -> Any:
    # A secret is left out of repr too: reprs end up in logs and in pipeline graphs.
    return field(default=default, repr=not checks.get("secret"),
                 metadata={"help": help_text, **checks})


# Secrets read in this process, by the rest of their Settings: a pickled Settings (in
# a pipeline graph) carries none, and gets its secrets back only where it is unpickled
# in the process that read them (local runners' workers). A cluster's workers read
# them from the environment or the password file instead (Settings.cassandra_secret).
_SECRETS: dict[str, dict[str, Any]] = {}  # token -> secrets
# One random token per distinct Settings: two differing only in a secret get their own.
_TOKENS: dict[tuple, str] = {}


def _secret_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Settings) if f.metadata.get("secret"))


def _unpickled_settings(public: dict[str, Any], token: str) -> Settings:
    return Settings(**public, **_SECRETS.get(token, {}))


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers, host:port[,...]")
    cassandra_hosts: tuple[str, ...] = _setting(("127.0.0.1",), "Cassandra contact points")
    cassandra_port: int = _setting(9042, "Cassandra native (CQL) port", port=True)
    cassandra_keyspace: str = _setting("fraud", "Cassandra keyspace")
    cassandra_replication_factor: int = _setting(1, "replication factor of the keyspace",
                                                 minimum=1)
    cassandra_consistency: str = _setting("LOCAL_QUORUM", "consistency level of reads and writes",
                                          choices=CONSISTENCY_LEVELS)
    cassandra_datacenter: str = _setting("", "data centre for NetworkTopologyStrategy and "
                                         "local routing; empty: SimpleStrategy, one DC")
    cassandra_tls_ca_file: str = _setting("", "CA certificate (PEM) to connect over TLS; "
                                          "empty: plain connections")
    cassandra_max_in_flight: int = _setting(128, "concurrent async writes per sink worker",
                                            minimum=1)
    cassandra_username: str = _setting("", "Cassandra user (PasswordAuthenticator)")
    cassandra_password: str = _setting("", "Cassandra password", secret=True)
    cassandra_password_file: str = _setting(
        "", "file holding the Cassandra password, read where each connection is made (on "
        "a cluster, by every worker); used when no password is set otherwise")
    redis_host: str = _setting("127.0.0.1", "Redis host")
    redis_port: int = _setting(6379, "Redis port", port=True)
    redis_db: int = _setting(0, "Redis database number", minimum=0)
    topic_transactions: str = _setting("transactions", "Kafka topic of incoming transactions")
    topic_alerts: str = _setting("alerts", "Kafka topic of fraud alerts")
    topic_dead_letters: str = _setting("dead-letters", "Kafka topic of rejected records")
    topic_labels: str = _setting("labels", "Kafka topic of analysts' fraud labels")
    topic_new_bank: str = _setting("new-bank", "Kafka topic of banks to add")
    topic_new_user: str = _setting("new-user", "Kafka topic of users to add")
    topic_new_account: str = _setting("new-account", "Kafka topic of accounts to add")
    kafka_retention_ms: int = _setting(-1, "how long the project's topics keep messages, "
                                       "in ms; -1: unlimited by time", minimum=-1)
    kafka_retention_bytes: int = _setting(-1, "how many bytes a partition of the project's "
                                          "topics keeps; -1: unlimited", minimum=-1)
    data_dir: Path = _setting(Path("data/sample"), "dataset folder the commands read by default")
    stack_dir: Path = _setting(_cache_dir() / "stack", "where the local stack keeps jars and data")
    fraud_threshold: float = _setting(0.5, "score at which a transaction is flagged",
                                      minimum=0.0, maximum=1.0)
    log_level: str = _setting("INFO", "logging level", choices=LOG_LEVELS)
    log_file: Path = _setting(_cache_dir() / "logs" / "fraud-detection.log",
                              "where the commands log (library warnings, tracebacks); "
                              "the terminal shows them with --verbose")

    def __reduce__(self):
        secret = set(_secret_names())
        public = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in secret}
        secrets = {name: getattr(self, name) for name in secret if getattr(self, name)}
        token = ""
        if secrets:
            # Random, not derived from the secret: a hash in the graph could be cracked.
            token = _TOKENS.setdefault((repr(sorted(public.items())),
                                        tuple(sorted(secrets.items()))), uuid.uuid4().hex)
            _SECRETS[token] = secrets
        return _unpickled_settings, (public, token)

    def cassandra_secret(self) -> str:
        """The password: this Settings', else the environment's, else the file's."""
        if self.cassandra_password:
            return self.cassandra_password
        if password := os.environ.get(f"{ENV_PREFIX}CASSANDRA_PASSWORD"):
            return password
        if self.cassandra_password_file:
            path = Path(self.cassandra_password_file)
            try:
                return path.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cassandra_password_file: cannot read {path}: "
                                  f"{exc.strerror}") from None
        return ""

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            result[f.name] = value
        return result


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_TYPES = typing.get_type_hints(Settings)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _TYPES[name]
    meta = _FIELDS[name].metadata
    # Flags and variables name the setting themselves; a file needs the key too.
    names_itself = source.startswith(("--", ENV_PREFIX))
    where = f"{source}: " if names_itself else f"{source}: {name}: "

    def fail(why: str) -> typing.NoReturn:
        raise ConfigError(f"{where}{why}")

    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            fail(f"expected an integer, got {value!r}")
        try:
            result: Any = int(value)
        except ValueError:
            fail(f"expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool):
            fail(f"expected a number, got {value!r}")
        try:
            result = float(value)
        except (TypeError, ValueError):
            fail(f"expected a number, got {value!r}")
    elif kind is Path:
        if not isinstance(value, str | Path) or not str(value):
            fail(f"expected a path, got {value!r}")
        result = Path(value)
    elif kind == tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            fail(f"expected a list of text or a comma-separated text, got {value!r}")
        result = tuple(i.strip() for i in items if i.strip())
        if not result:
            fail("expected at least one value")
    else:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            fail(f"expected text, got {value!r}")
        result = str(value)

    if meta.get("port") and not 1 <= result <= 65535:
        fail(f"must be between 1 and 65535, got {result}")
    if "minimum" in meta and result < meta["minimum"]:
        fail(f"must be at least {meta['minimum']}, got {result}")
    if "maximum" in meta and result > meta["maximum"]:
        fail(f"must be at most {meta['maximum']}, got {result}")
    if "choices" in meta:
        result = result.upper()
        if result not in meta["choices"]:
            fail(f"must be one of {', '.join(meta['choices'])}, got {value!r}")
    return result


def _flatten(data: Mapping[str, Any], source: str, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, source, f"{name}_"))
        elif name in _FIELDS:
            flat[name] = value
        else:
            dotted = name if not prefix else f"{prefix[:-1]}.{key}"
            raise ConfigError(f"{source}: unknown setting {dotted!r}")
    return flat


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return {k: _coerce(k, v, str(path)) for k, v in _flatten(data, str(path)).items()}


def add_settings_arguments(parser: argparse.ArgumentParser, listed: bool = True) -> None:
    """--config and a --name flag per setting, in one "settings" group; listed=False
    keeps the flags but leaves them out of --help (`config --help` lists them). A secret
    has no flag: command lines end up in shell histories and process lists."""
    group = parser.add_argument_group(
        "settings", None if listed else
        "every setting can also be given as --name VALUE: `fraud-detection config --help` "
        "lists them")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help=f"YAML settings file (default: ${ENV_PREFIX}CONFIG or "
                            f"./{DEFAULT_CONFIG_FILE} if present)")
    for name, f in _FIELDS.items():
        if f.metadata.get("secret"):
            continue
        group.add_argument(_flag(name), dest=f"setting_{name}", metavar="VALUE",
                           default=argparse.SUPPRESS,
                           help=f.metadata["help"] if listed else argparse.SUPPRESS)


def load_settings(args: argparse.Namespace | Mapping[str, str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    if isinstance(args, argparse.Namespace):
        given = vars(args)
        flags = {k[len("setting_"):]: v for k, v in given.items() if k.startswith("setting_")}
        config_path = given.get("config")
    else:
        flags = {k.replace("-", "_").lstrip("_"): v for k, v in (args or {}).items()}
        config_path = flags.pop("config", None)

    values: dict[str, Any] = {}
    if config_path:
        values.update(read_config_file(Path(config_path)))
    elif environ.get(f"{ENV_PREFIX}CONFIG"):
        values.update(read_config_file(Path(environ[f"{ENV_PREFIX}CONFIG"])))
    elif DEFAULT_CONFIG_FILE.is_file():
        values.update(read_config_file(DEFAULT_CONFIG_FILE))
    for name in _FIELDS:
        env_name = f"{ENV_PREFIX}{name.upper()}"
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], env_name)
    for name, value in flags.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {_flag(name)}")
        values[name] = _coerce(name, value, _flag(name))
    return Settings(**values)
