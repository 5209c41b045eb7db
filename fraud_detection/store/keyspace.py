"""Connections to Cassandra from settings, and the versioned schema in schema.cql."""

from __future__ import annotations

import datetime as dt
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraud_detection.config import Settings
from fraud_detection.errors import UsageError

SCHEMA_FILE = Path(__file__).with_name("schema.cql")
_MIGRATION_HEADER = re.compile(r"^-- migration (\d+): (.+)$", re.MULTILINE)
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


class SchemaError(UsageError):
    pass


class CassandraUnreachable(SchemaError):
    """No node answered: may pass (a node restarting), unlike a missing keyspace."""


def transient_errors() -> tuple[type[BaseException], ...]:
    """What a restarting or overloaded node raises: worth trying again."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    return (OperationTimedOut, WriteTimeout, ReadTimeout, Unavailable, NoHostAvailable,
            ConnectionError, CassandraUnreachable)


# A worker waits for a restarting node, in setup and in lookups, as writes do: Prism
# ends the job when a DoFn raises. 40 tries back off for about 15 minutes.
WAIT_ATTEMPTS = 40
# The execution profile whose rows are plain tuples (cluster()).
TUPLE_ROWS = "tuple_rows"


def backoff(attempt: int, base_seconds: float = 0.25) -> float:
    return min(base_seconds * 2 ** (attempt - 1), 30.0)


def waiting(call: Callable[[], Any], retryable: tuple[type[BaseException], ...],
            attempts: int = WAIT_ATTEMPTS) -> Any:
    """call(), tried again after a backoff while it raises one of `retryable`."""
    for attempt in range(1, attempts):
        try:
            return call()
        except retryable:
            time.sleep(backoff(attempt))
    return call()


def connect_when_up(settings: Settings) -> Store:
    """connect(), waiting for a node that does not answer yet (a missing keyspace fails
    at once)."""
    return waiting(lambda: connect(settings), (CassandraUnreachable,))


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations(text: str | None = None) -> list[Migration]:
    """The migrations of schema.cql in order; each is the statements after its header."""
    text = SCHEMA_FILE.read_text() if text is None else text
    headers = list(_MIGRATION_HEADER.finditer(text))
    found = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = "\n".join(line for line in text[header.end():end].splitlines()
                         if not line.lstrip().startswith("--"))
        statements = tuple(s.strip() for s in body.split(";") if s.strip())
        found.append(Migration(int(header.group(1)), header.group(2).strip(), statements))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"{SCHEMA_FILE.name}: migrations must be numbered 1, 2, ... in "
                          f"order, found {versions}")
    return found


def _keyspace_name(settings: Settings) -> str:
    name = settings.cassandra_keyspace
    if not _IDENTIFIER.match(name):
        raise SchemaError(f"cassandra_keyspace: {name!r} is not a valid keyspace name")
    return name


def replication(settings: Settings) -> dict[str, str]:
    factor = str(settings.cassandra_replication_factor)
    if settings.cassandra_datacenter:
        return {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
                settings.cassandra_datacenter: factor}
    return {"class": "org.apache.cassandra.locator.SimpleStrategy",
            "replication_factor": factor}


def cluster(settings: Settings, **overrides: Any):
    """A driver Cluster: consistency, auth, TLS and routing from settings."""
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import (
        DCAwareRoundRobinPolicy,
        ExponentialReconnectionPolicy,
        TokenAwarePolicy,
    )
    from cassandra.query import tuple_factory

    def profile(**extra: Any) -> ExecutionProfile:
        return ExecutionProfile(
            consistency_level=ConsistencyLevel.name_to_value[settings.cassandra_consistency],
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=settings.cassandra_datacenter or None)),
            request_timeout=20.0, **extra)

    options: dict[str, Any] = {
        "contact_points": list(settings.cassandra_hosts),
        "port": settings.cassandra_port,
        # The default makes a namedtuple class per result: fine for the dashboard's
        # reads, not for a pipeline's lookups (a class per lookup, cyclic garbage).
        "execution_profiles": {EXEC_PROFILE_DEFAULT: profile(),
                               TUPLE_ROWS: profile(row_factory=tuple_factory)},
        "protocol_version": 5,
        "connect_timeout": 10,
        # Connecting reads the whole schema; the default 2 s timed out on a loaded
        # 2-core node holding many keyspaces, and the connection was refused.
        "control_connection_timeout": 10.0,
        # A node back from a restart is noticed within seconds, not the driver's default
        # of up to ten minutes between attempts.
        "reconnection_policy": ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
    }
    if settings.cassandra_username:
        options["auth_provider"] = PlainTextAuthProvider(settings.cassandra_username,
                                                         settings.cassandra_secret())
    if settings.cassandra_tls_ca_file:
        context = ssl.create_default_context(cafile=settings.cassandra_tls_ca_file)
        # Nodes are usually addressed by IP, which certificates rarely name; the chain
        # is still verified against the CA.
        context.check_hostname = False
        options["ssl_context"] = context
    options.update(overrides)
    return Cluster(**options)


_TABLE_REFERENCE = re.compile(r"\b(FROM|INTO|UPDATE)\s+(\w+)\b(?!\.)", re.IGNORECASE)


def qualify(cql: str, keyspace: str) -> str:
    """Table names prefixed with the keyspace (system tables already name theirs)."""
    return _TABLE_REFERENCE.sub(lambda m: f"{m.group(1)} {keyspace}.{m.group(2)}", cql)


class Store:
    """A session and our keyspace. Statements are qualified with the keyspace when they
    are prepared: Cassandra 5 warns on every prepared statement that relies on `USE`."""

    def __init__(self, session: Any, keyspace: str) -> None:
        self.session = session
        self.keyspace = keyspace
        self._prepared: dict[str, Any] = {}

    def prepare(self, cql: str):
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self._prepared[cql] = self.session.prepare(qualify(cql, self.keyspace))
        return statement

    def execute(self, cql: str, values: Sequence[Any] = (), fetch_size: int | None = None):
        bound = self.prepare(cql).bind(values)
        if fetch_size:
            bound.fetch_size = fetch_size
        return self.session.execute(bound)

    def close(self) -> None:
        self.session.cluster.shutdown()


def connect(settings: Settings) -> Store:
    """Our keyspace's store; a missing keyspace or unreachable cluster is a one-line
    SchemaError."""
    from cassandra import OperationTimedOut
    from cassandra.cluster import NoHostAvailable

    keyspace = _keyspace_name(settings)
    session = _session(settings)
    try:
        found = session.execute(
            session.prepare("SELECT keyspace_name FROM system_schema.keyspaces "
                            "WHERE keyspace_name = ?"), (keyspace,)).one()
    except (NoHostAvailable, OperationTimedOut) as exc:  # the node went down meanwhile
        session.cluster.shutdown()
        raise CassandraUnreachable(f"Cassandra stopped answering: {_first_error(exc)}") from None
    if found is None:
        session.cluster.shutdown()
        raise SchemaError(f"keyspace {keyspace!r} does not exist; run "
                          "`python -m fraud_detection schema apply`")
    return Store(session, keyspace)


def _session(settings: Settings):
    from cassandra.cluster import NoHostAvailable

    driver = cluster(settings)
    try:
        return driver.connect()
    except NoHostAvailable as exc:
        driver.shutdown()
        hosts = ", ".join(f"{h}:{settings.cassandra_port}" for h in settings.cassandra_hosts)
        raise CassandraUnreachable(
            f"cannot reach Cassandra at {hosts}: {_first_error(exc)}") from None


def _first_error(exc: Exception) -> str:
    # NoHostAvailable.errors: host -> error, or (a new session's pool) the hosts tried.
    errors = getattr(exc, "errors", None)
    first = next(iter(errors.values()), exc) if isinstance(errors, dict) else exc
    return str(first).splitlines()[0][:200]


@dataclass(frozen=True)
class SchemaReport:
    keyspace: str
    applied: tuple[int, ...]
    version: int
    replication_changed: bool


def apply_schema(settings: Settings,
                 progress: Callable[[str], None] = lambda line: None) -> SchemaReport:
    """Creates the keyspace and runs the migrations not yet recorded; a second call
    changes nothing."""
    keyspace = _keyspace_name(settings)
    wanted = replication(settings)
    session = _session(settings)
    try:
        changed = _ensure_keyspace(session, keyspace, wanted, progress)
        store = Store(session, keyspace)
        session.execute(f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations ("
                        "version int PRIMARY KEY, name text, applied_at timestamp)")
        done = {row.version for row in store.execute("SELECT version FROM schema_migrations")}
        record = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
        applied = []
        every = migrations()
        for migration in every:
            if migration.version in done:
                continue
            for statement in migration.statements:
                # DDL cannot be prepared; the keyspace goes in as the statement's default.
                session.execute(_in_keyspace(statement, keyspace))
            store.execute(record, (migration.version, migration.name, dt.datetime.now(dt.UTC)))
            applied.append(migration.version)
            progress(f"applied migration {migration.version}: {migration.name}")
        return SchemaReport(keyspace, tuple(applied), every[-1].version if every else 0, changed)
    finally:
        session.cluster.shutdown()


_CREATE_TABLE = re.compile(r"^(CREATE TABLE IF NOT EXISTS|ALTER TABLE|CREATE INDEX IF NOT EXISTS "
                           r"\w+ ON)\s+(\w+)", re.IGNORECASE)


def _in_keyspace(statement: str, keyspace: str) -> str:
    match = _CREATE_TABLE.match(statement)
    if match is None:
        raise SchemaError(f"{SCHEMA_FILE.name}: unsupported statement: {statement[:60]!r}")
    return f"{statement[:match.start(2)]}{keyspace}.{statement[match.start(2):]}"


def _ensure_keyspace(session, keyspace: str, wanted: dict[str, str],
                     progress: Callable[[str], None]) -> bool:
    row = session.execute(
        session.prepare("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?"),
        (keyspace,)).one()
    options = ", ".join(f"'{k}': '{v}'" for k, v in wanted.items())
    if row is None:
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} "
                        f"WITH replication = {{{options}}}")
        progress(f"created keyspace {keyspace} ({_describe(wanted)})")
        return False
    if dict(row.replication) == wanted:
        return False
    session.execute(f"ALTER KEYSPACE {keyspace} WITH replication = {{{options}}}")
    progress(f"changed the replication of {keyspace} to {_describe(wanted)}; "
             "run `nodetool repair` on each node so existing rows reach their new replicas")
    return True


def _describe(wanted: dict[str, str]) -> str:
    strategy = wanted["class"].rsplit(".", 1)[-1]
    rest = ", ".join(f"{k}={v}" for k, v in wanted.items() if k != "class")
    return f"{strategy} {rest}"


def drop_keyspace(settings: Settings) -> None:
    """Removes the keyspace and every row in it (tests and `schema drop` only)."""
    keyspace = _keyspace_name(settings)
    session = _session(settings)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        session.cluster.shutdown()
