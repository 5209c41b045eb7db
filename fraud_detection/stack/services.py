"""Per-service configuration, launch command and readiness probe."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fraud_detection.stack import fetch, probes
from fraud_detection.stack.errors import StackError

SERVICES = ("kafka", "cassandra", "redis")
# Started only when asked for (`stack up --runner-service`): Prism's job service and
# Beam Python worker pools, the shape of a cluster runner on one machine.
RUNNER_SERVICE = "runner"
ALL_SERVICES = (*SERVICES, RUNNER_SERVICE)
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    kafka_controller: int = 9093
    cassandra_native: int = 9042
    cassandra_storage: int = 7000
    cassandra_jmx: int = 7199  # node i uses cassandra_jmx + i - 1: JMX binds 127.0.0.1 only
    redis: int = 6379
    prism_job: int = 8073  # Prism's job service (Beam's Job API)
    worker_pool: int = 50000  # worker pool i listens on worker_pool + i - 1


class Service(Protocol):
    """One OS process of the stack."""

    name: str
    host: str
    port: int
    startup_timeout: float

    def busy_ports(self) -> list[tuple[str, int]]: ...
    def prepare(self, home: Path, log: Path) -> list[str]: ...
    def ready(self) -> bool: ...


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@dataclass(frozen=True)
class Kafka:
    ports: Ports
    jars: Path
    name: str = "kafka"
    host: str = LOCALHOST
    startup_timeout: float = 90.0

    @property
    def port(self) -> int:
        return self.ports.kafka

    def busy_ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.ports.kafka), (self.host, self.ports.kafka_controller)]

    def prepare(self, home: Path, log: Path) -> list[str]:
        lib = fetch.maven_lib(self.jars / "kafka", fetch.KAFKA_ARTIFACTS)
        java = str(fetch.java17())
        data, props, log4j = home / "data", home / "server.properties", home / "log4j.properties"
        p = self.ports
        _write(props, "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{p.kafka_controller}",
            f"listeners=PLAINTEXT://{self.host}:{p.kafka},CONTROLLER://{self.host}:{p.kafka_controller}",
            f"advertised.listeners=PLAINTEXT://{self.host}:{p.kafka}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=true",
            # One broker: internal topics can only have one replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "group.initial.rebalance.delay.ms=0",
            # Retention is enforced within seconds, not the default five minutes, so a
            # topic whose retention would delete unread history shows it in any test.
            "log.retention.check.interval.ms=5000",
            "",
        ]))
        _write(log4j, "\n".join([
            "log4j.rootLogger=INFO, stdout",
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "",
        ]))
        classpath = f"{lib}/*"
        if not (data / "meta.properties").exists():
            # KRaft storage is formatted once; the cluster id is Kafka's url-safe base64 UUID.
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            cluster_id = "A" + cluster_id[1:]  # Kafka never issues ids that start with "-"
            with log.open("ab") as out:
                formatted = subprocess.run(
                    [java, "-Xmx256m", f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath,
                     "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                     "--ignore-formatted"], stdout=out, stderr=subprocess.STDOUT, timeout=180)
            if formatted.returncode != 0:
                raise StackError(f"kafka: formatting {data} failed; see {log}")
        return [java, "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35", "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath, "kafka.Kafka", str(props)]

    def ready(self) -> bool:
        return probes.kafka_metadata(self.host, self.port)


# From Cassandra 5.0's conf/jvm17-server.options.
_CASSANDRA_EXPORTS = (
    "java.base/jdk.internal.misc", "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.rmi/sun.rmi.registry", "java.rmi/sun.rmi.server", "java.sql/java.sql",
    "java.base/java.lang.ref", "jdk.unsupported/sun.misc",
    "jdk.compiler/com.sun.tools.javac.file", "jdk.attach/sun.tools.attach",
)
_CASSANDRA_OPENS = (
    "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
    "java.base/jdk.internal.reflect", "java.base/jdk.internal.math",
    "java.base/jdk.internal.module", "java.base/jdk.internal.util.jar",
    "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch", "java.base/java.io",
    "java.base/java.lang.reflect", "jdk.compiler/com.sun.tools.javac", "java.base/java.lang",
    "java.base/java.util",
)
_LOGBACK = """<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


_KEYSTORE_PASSWORD = "fraud-detection-local"  # guards a throwaway development key only


def tls_dir(state_dir: Path) -> Path:
    return state_dir / "tls"


def _keystore(folder: Path) -> Path:
    """A self-signed key for 127.0.0.1-9 in a PKCS12 keystore, and its certificate as
    PEM for clients; made once with the JDK's keytool."""
    keystore, pem = folder / "keystore.p12", folder / "node.pem"
    if keystore.is_file() and pem.is_file():
        return keystore
    folder.mkdir(parents=True, exist_ok=True)
    keytool = str(fetch.java17().parent / "keytool")
    keystore.unlink(missing_ok=True)
    sans = ",".join(f"ip:127.0.0.{i}" for i in range(1, 10))
    for command in (
        [keytool, "-genkeypair", "-alias", "node", "-keyalg", "RSA", "-keysize", "2048",
         "-validity", "3650", "-dname", "CN=fraud-detection-local", "-ext", f"SAN={sans}",
         "-ext", "bc:c", "-keystore", str(keystore), "-storetype", "PKCS12",
         "-storepass", _KEYSTORE_PASSWORD, "-keypass", _KEYSTORE_PASSWORD],
        [keytool, "-exportcert", "-rfc", "-alias", "node", "-keystore", str(keystore),
         "-storepass", _KEYSTORE_PASSWORD, "-file", str(pem)],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"keytool failed: {(result.stderr or result.stdout).strip()[:200]}")
    return keystore


@dataclass(frozen=True)
class CassandraNode:
    ports: Ports
    jars: Path
    node: int  # 1-based; node i listens on 127.0.0.i, node 1 is the seed
    startup_timeout: float = 180.0
    secure: bool = False  # PasswordAuthenticator (cassandra/cassandra) and client TLS
    state_dir: Path | None = None  # where the secure node's keystore lives

    @property
    def name(self) -> str:
        return f"cassandra-{self.node}"

    @property
    def host(self) -> str:
        return f"127.0.0.{self.node}"

    @property
    def port(self) -> int:
        return self.ports.cassandra_native

    @property
    def jmx_port(self) -> int:
        return self.ports.cassandra_jmx + self.node - 1

    def busy_ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.ports.cassandra_native), (self.host, self.ports.cassandra_storage),
                (LOCALHOST, self.jmx_port)]

    def prepare(self, home: Path, log: Path) -> list[str]:
        lib = fetch.maven_lib(self.jars / "cassandra", fetch.CASSANDRA_ARTIFACTS)
        jamm = next(lib.glob("jamm-*.jar"), None)
        if jamm is None:
            raise StackError(f"cassandra: no jamm jar in {lib}")
        config, logback = home / "cassandra.yaml", home / "logback.xml"
        settings = {
            "cluster_name": "fraud-detection",
            "num_tokens": 16,
            "allocate_tokens_for_local_replication_factor": 3,
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch": "SimpleSnitch",
            "seed_provider": [{
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [{"seeds": f"{LOCALHOST}:{self.ports.cassandra_storage}"}],
            }],
            "listen_address": self.host,
            "rpc_address": self.host,
            "storage_port": self.ports.cassandra_storage,
            "native_transport_port": self.ports.cassandra_native,
            "start_native_transport": True,
            "data_file_directories": [str(home / "data")],
            "commitlog_directory": str(home / "commitlog"),
            "hints_directory": str(home / "hints"),
            "saved_caches_directory": str(home / "saved_caches"),
            "cdc_raw_directory": str(home / "cdc_raw"),
            "commitlog_sync": "periodic",
            "commitlog_sync_period": "10000ms",
            # Small memory: a development node, not a production one.
            "memtable_heap_space": "64MiB",
            "memtable_offheap_space": "64MiB",
            "key_cache_size": "16MiB",
            "counter_cache_size": "0MiB",
            "file_cache_size": "32MiB",
            "concurrent_reads": 8,
            "concurrent_writes": 8,
            "concurrent_counter_writes": 8,
            "concurrent_compactors": 1,
            "auto_snapshot": False,
            # The sink packs consecutive transactions' rows into one unlogged batch of
            # up to 16 KiB and 64 rows (io/cassandra.py, REQUEST_BYTES and REQUEST_ROWS):
            # with the defaults (5 KiB, 10 partitions) nearly every request came back
            # with a warning that the driver logs.
            "batch_size_warn_threshold": "24KiB",
            "unlogged_batch_across_partitions_warn_threshold": 64,
        }
        security: list[str] = []
        if self.secure:
            keystore = _keystore(tls_dir(self.state_dir or home.parent))
            settings["authenticator"] = "PasswordAuthenticator"
            settings["client_encryption_options"] = {
                "enabled": True, "optional": False, "keystore": str(keystore),
                "keystore_password": _KEYSTORE_PASSWORD, "store_type": "PKCS12"}
            # The default superuser (cassandra/cassandra) is created at once, not after 10 s.
            security = ["-Dcassandra.superuser_setup_delay_ms=0"]
        _write(config, json.dumps(settings, indent=2) + "\n")  # JSON is YAML
        _write(logback, _LOGBACK)
        return [
            str(fetch.java17()), "-Xms256m", "-Xmx1g", "-Xss256k", "-XX:+UseG1GC",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
            "-Djava.net.preferIPv4Stack=true", "-Djdk.attach.allowAttachSelf=true",
            *(f"--add-exports={m}=ALL-UNNAMED" for m in _CASSANDRA_EXPORTS),
            *(f"--add-opens={m}=ALL-UNNAMED" for m in _CASSANDRA_OPENS),
            "-Dio.netty.tryReflectionSetAccessible=true",
            "-Dio.netty.allocator.useCacheForAllThreads=true", "-Dio.netty.allocator.maxOrder=11",
            f"-javaagent:{jamm}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.config=file://{config}",
            f"-Dcassandra.storagedir={home}",
            f"-Dcassandra.logdir={home / 'logs'}",
            f"-Dlogback.configurationFile=file://{logback}",
            f"-Dcassandra.jmx.local.port={self.jmx_port}",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            # A fresh local cluster: no need to wait 30 s per joining node for gossip.
            "-Dcassandra.ring_delay_ms=5000",
            "-Dcassandra.consistent.rangemovement=false",
            *security,
            "-cp", f"{lib}/*", "org.apache.cassandra.service.CassandraDaemon",
        ]

    def ready(self) -> bool:
        return probes.cql_query(self.host, self.port, tls=self.secure)


@dataclass(frozen=True)
class Redis:
    ports: Ports
    name: str = "redis"
    host: str = LOCALHOST
    startup_timeout: float = 30.0

    @property
    def port(self) -> int:
        return self.ports.redis

    def busy_ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.ports.redis)]

    def prepare(self, home: Path, log: Path) -> list[str]:
        data = home / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [fetch.redis_server(), "--bind", self.host, "--port", str(self.port),
                "--dir", str(data), "--daemonize", "no", "--save", "", "--appendonly", "yes",
                "--logfile", ""]

    def ready(self) -> bool:
        return probes.redis_ping(self.host, self.port)


@dataclass(frozen=True)
class PrismJobService:
    """Prism as a long-running job service: pipelines are submitted to it over Beam's
    Job API (PortableRunner), as to a cluster's job server."""

    ports: Ports
    name: str = "prism"
    host: str = LOCALHOST
    startup_timeout: float = 900.0  # the first start builds Prism

    @property
    def port(self) -> int:
        return self.ports.prism_job

    def busy_ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    def prepare(self, home: Path, log: Path) -> list[str]:
        from fraud_detection.stack.runners import prism_binary

        home.mkdir(parents=True, exist_ok=True)
        return [str(prism_binary()), "--job_port", str(self.port), "--serve_http=false",
                "--log_kind", "text"]

    def ready(self) -> bool:
        return probes.port_open(self.host, self.port)


@dataclass(frozen=True)
class WorkerPool:
    """A Beam Python worker pool (fraud_detection.stack.worker_pool): the SDK workers
    of jobs whose environment is EXTERNAL with this pool's address."""

    ports: Ports
    index: int
    host: str = LOCALHOST
    startup_timeout: float = 60.0

    @property
    def name(self) -> str:
        return f"worker-{self.index}"

    @property
    def port(self) -> int:
        return self.ports.worker_pool + self.index - 1

    def busy_ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    def prepare(self, home: Path, log: Path) -> list[str]:
        home.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "fraud_detection.stack.worker_pool",
                "--port", str(self.port)]

    def ready(self) -> bool:
        return probes.port_open(self.host, self.port)


def services_for(names: tuple[str, ...], cassandra_nodes: int, ports: Ports,
                 jars: Path, cassandra_secure: bool = False,
                 state_dir: Path | None = None, workers: int = 0) -> list[Service]:
    """The processes of the named services, in start order."""
    chosen: list[Service] = []
    for name in ALL_SERVICES:
        if name not in names:
            continue
        if name == "kafka":
            chosen.append(Kafka(ports, jars))
        elif name == "cassandra":
            chosen.extend(CassandraNode(ports, jars, i, secure=cassandra_secure,
                                        state_dir=state_dir)
                          for i in range(1, cassandra_nodes + 1))
        elif name == RUNNER_SERVICE:
            chosen.append(PrismJobService(ports))
            chosen.extend(WorkerPool(ports, i) for i in range(1, workers + 1))
        else:
            chosen.append(Redis(ports))
    return chosen
