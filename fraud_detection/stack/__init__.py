"""The project's local services on 127.0.0.1: Kafka (KRaft), Cassandra and Redis, run as
plain background processes from jars and packages fetched into a cache."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from fraud_detection.stack import probes, procs
from fraud_detection.stack.errors import StackError
from fraud_detection.stack.fetch import file_lock
from fraud_detection.stack.services import (
    ALL_SERVICES,
    RUNNER_SERVICE,
    SERVICES,
    CassandraNode,
    Ports,
    Service,
    services_for,
)

__all__ = [
    "SERVICES", "JobStatus", "Ports", "ServiceStatus", "StackError", "StackInfo",
    "default_jars_dir", "default_state_dir", "down", "jobs", "log_path", "saved",
    "start_node", "status", "stop", "stop_jobs", "stop_node", "tls_ca_file", "up",
]

Progress = Callable[[str], None]


def default_state_dir() -> Path:
    from fraud_detection.config import load_settings

    return load_settings({}).stack_dir


def default_jars_dir() -> Path:
    """The jars of every stack a user runs, whatever its state dir (tests use their own,
    FRAUD_STACK_DIR may move one): in the default stack's folder, fetched once per user."""
    from fraud_detection.config import Settings

    return Settings().stack_dir / "jars"


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    log: Path


@dataclass(frozen=True)
class StackInfo:
    state_dir: Path
    ports: Ports
    services: tuple[str, ...]
    cassandra_nodes: int
    cassandra_secure: bool = False  # PasswordAuthenticator and client TLS
    workers: int = 0  # worker pools beside the runner service

    @property
    def job_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports.prism_job}"

    def worker_pool(self, index: int) -> str:
        return f"127.0.0.1:{self.ports.worker_pool + index - 1}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def cassandra_hosts(self) -> list[str]:
        return [f"127.0.0.{i}" for i in range(1, self.cassandra_nodes + 1)]

    @property
    def cassandra_port(self) -> int:
        return self.ports.cassandra_native

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"


def _state(state_dir: Path | str | None) -> Path:
    return Path(state_dir).expanduser().resolve() if state_dir else default_state_dir()


def _pidfile(state: Path, name: str) -> Path:
    return state / "run" / f"{name}.pid"


def _saved(state: Path) -> StackInfo | None:
    """The settings of the last `up` in state, kept so down/status/stop_node know them."""
    try:
        saved = json.loads((state / "stack.json").read_text())
        return StackInfo(state, Ports(**saved["ports"]), tuple(saved["services"]),
                         int(saved["cassandra_nodes"]), bool(saved.get("cassandra_secure")),
                         int(saved.get("workers", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(info: StackInfo) -> None:
    info.state_dir.mkdir(parents=True, exist_ok=True)
    (info.state_dir / "stack.json").write_text(json.dumps({
        "ports": asdict(info.ports), "services": list(info.services),
        "cassandra_nodes": info.cassandra_nodes, "cassandra_secure": info.cassandra_secure,
        "workers": info.workers},
        indent=2) + "\n")


def _running(state: Path) -> list[str]:
    return sorted(pf.stem for pf in (state / "run").glob("*.pid")
                  if procs.running_pid(pf) is not None)


def _failure_hint(log: Path) -> str:
    """The last error-looking line of a log, to make a failure message say why."""
    try:
        lines = log.read_text(errors="replace").splitlines()[-400:]
    except OSError:
        return ""
    for line in reversed(lines):
        if re.search(r"ERROR|Exception|FATAL|Fatal|Error:|Caused by", line):
            return ": " + line.strip()[:200]
    return ""


def _start(service: Service, state: Path, progress: Progress) -> None:
    pidfile, log = _pidfile(state, service.name), log_path(service.name, state)
    began = time.monotonic()
    pid = procs.running_pid(pidfile)
    if pid is None:
        for host, port in service.busy_ports():
            if probes.port_open(host, port):
                raise StackError(f"{service.name}: {host}:{port} is already in use by a process "
                                 "this stack did not start")
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = service.prepare(state / service.name, log)
        pid = procs.spawn(argv, log, state / service.name, pidfile)
        note = "started"
    else:
        note = "already running"
    deadline = began + service.startup_timeout
    while not service.ready():
        if procs.running_pid(pidfile) is None:
            code = procs.exit_code(pid)
            how = "exited" if code is None else f"exited with code {code}"
            procs.stop([pidfile])
            raise StackError(f"{service.name} {how} during startup{_failure_hint(log)} "
                             f"(log: {log})")
        if time.monotonic() > deadline:
            procs.stop([pidfile])
            raise StackError(f"{service.name} not ready after {service.startup_timeout:.0f} s "
                             f"(log: {log})")
        time.sleep(0.5)
    if note == "started":
        note = f"started in {time.monotonic() - began:.1f} s"
    progress(f"{service.name:<12} {service.host}:{service.port:<6} pid {pid:<8} {note}")


def up(services: Iterable[str] = SERVICES, cassandra_nodes: int = 1, ports: Ports | None = None,
       state_dir: Path | str | None = None, *, jars_dir: Path | str | None = None,
       progress: Progress | None = None, cassandra_secure: bool = False,
       workers: int = 0) -> StackInfo:
    """Starts the services that are not running, one after another, and waits until each
    answers; a service already running is left as it is. cassandra_secure: password
    authentication and TLS for clients (see tls_ca_file). workers: also the runner
    service, Prism's job service with that many worker pools."""
    wanted = tuple(services) + ((RUNNER_SERVICE,) if workers else ())
    if unknown := sorted(set(wanted) - set(ALL_SERVICES)):
        raise StackError(f"unknown service {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    if not 1 <= cassandra_nodes <= 9:
        raise StackError(f"cassandra_nodes must be 1..9, not {cassandra_nodes}")
    if not 0 <= workers <= 8:
        raise StackError(f"workers must be 0..8, not {workers}")
    state = _state(state_dir)
    jars = Path(jars_dir) if jars_dir else default_jars_dir()
    ports = ports or Ports()
    nodes = cassandra_nodes
    with file_lock(state / ".lock"):
        saved = _saved(state)
        if saved and "cassandra" not in wanted:
            nodes = saved.cassandra_nodes
        if saved and not workers:
            workers = saved.workers
        if saved and (running := _running(state)):
            if saved.ports != ports:
                raise StackError(f"the stack in {state} runs on other ports; run `down` first")
            if saved.cassandra_nodes != nodes and any(n.startswith("cassandra") for n in running):
                raise StackError(f"the stack in {state} runs {saved.cassandra_nodes} Cassandra "
                                 "node(s); run `down` first")
        known = set(saved.services) if saved else set()
        info = StackInfo(state, ports,
                         tuple(s for s in ALL_SERVICES if s in known | set(wanted)),
                         nodes, cassandra_secure, workers)
        _save(info)
        for service in services_for(wanted, nodes, ports, jars, cassandra_secure, state,
                                    workers):
            _start(service, state, progress or (lambda _line: None))
    return info


def saved(state_dir: Path | str | None = None) -> StackInfo | None:
    """What the last `up` in state_dir started (its ports, services, workers)."""
    return _saved(_state(state_dir))


def status(state_dir: Path | str | None = None) -> list[ServiceStatus]:
    """Every process of the last `up` in state_dir, running or not."""
    state = _state(state_dir)
    info = _saved(state)
    if info is None:
        return []
    return [ServiceStatus(s.name, pid is not None, pid, f"{s.host}:{s.port}",
                          log_path(s.name, state))
            for s in services_for(info.services, info.cassandra_nodes, info.ports, Path(),
                                  info.cassandra_secure, state, info.workers)
            for pid in [procs.running_pid(_pidfile(state, s.name))]]


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    name: str
    state: str  # Beam's JobState name: RUNNING, DONE, CANCELLED, ...


# Jobs in these states still hold workers.
_ACTIVE_JOBS = ("STARTING", "RUNNING", "DRAINING", "CANCELLING", "UPDATING", "STOPPED")


def _job_service(info: StackInfo):
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2_grpc

    channel = grpc.insecure_channel(info.job_endpoint)
    return channel, beam_job_api_pb2_grpc.JobServiceStub(channel)


def jobs(state_dir: Path | str | None = None) -> list[JobStatus]:
    """The jobs the runner service holds (none when it is not running)."""
    from apache_beam.portability.api import beam_job_api_pb2

    state = _state(state_dir)
    info = _saved(state)
    if info is None or procs.running_pid(_pidfile(state, "prism")) is None:
        return []
    channel, service = _job_service(info)
    try:
        found = service.GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=10).job_info
        return [JobStatus(j.job_id, j.job_name, beam_job_api_pb2.JobState.Enum.Name(j.state))
                for j in found]
    finally:
        channel.close()


def stop_jobs(state_dir: Path | str | None = None,
              wait_seconds: float = 60.0) -> list[JobStatus]:
    """Cancels the runner service's active jobs and waits until they have ended, so their
    workers finish their bundles before the processes stop; returns those jobs as they
    ended."""
    from apache_beam.portability.api import beam_job_api_pb2

    state = _state(state_dir)
    info = _saved(state)
    active = [j for j in jobs(state) if j.state in _ACTIVE_JOBS]
    if info is None or not active:
        return []
    channel, service = _job_service(info)
    try:
        for job in active:
            service.Cancel(beam_job_api_pb2.CancelJobRequest(job_id=job.job_id), timeout=10)
        ids = {job.job_id for job in active}
        deadline = time.monotonic() + wait_seconds
        while True:
            ended = [j for j in jobs(state) if j.job_id in ids]
            if all(j.state not in _ACTIVE_JOBS for j in ended) or time.monotonic() > deadline:
                return ended
            time.sleep(0.5)
    finally:
        channel.close()


def down(state_dir: Path | str | None = None) -> list[str]:
    """Stops every process this stack started in state_dir (and nothing else), after the
    runner service's jobs are cancelled; returns the names of those that were running."""
    state = _state(state_dir)
    if not state.is_dir():
        return []
    stop_jobs(state)
    with file_lock(state / ".lock"):
        stopped = procs.stop(sorted((state / "run").glob("*.pid")))
    return [pf.stem for pf in stopped]


def stop(name: str, state_dir: Path | str | None = None) -> bool:
    """Stops one process (kafka, redis, cassandra-N); True if it was running."""
    state = _state(state_dir)
    with file_lock(state / ".lock"):
        return bool(procs.stop([_pidfile(state, _canonical(name))]))


def stop_node(node: int, state_dir: Path | str | None = None) -> bool:
    return stop(f"cassandra-{node}", state_dir)


def start_node(node: int, state_dir: Path | str | None = None, *,
               jars_dir: Path | str | None = None, progress: Progress | None = None) -> None:
    """Starts Cassandra node `node` of the cluster last brought up in state_dir."""
    state = _state(state_dir)
    info = _saved(state)
    if info is None or "cassandra" not in info.services or not 1 <= node <= info.cassandra_nodes:
        raise StackError(f"no cassandra node {node} in the stack in {state}")
    jars = Path(jars_dir) if jars_dir else default_jars_dir()
    with file_lock(state / ".lock"):
        _start(CassandraNode(info.ports, jars, node, secure=info.cassandra_secure,
                             state_dir=state), state, progress or (lambda _line: None))


def tls_ca_file(state_dir: Path | str | None = None) -> Path:
    """The certificate (PEM) a client trusts to reach the secure stack's Cassandra."""
    from fraud_detection.stack.services import tls_dir

    return tls_dir(_state(state_dir)) / "node.pem"


def _canonical(name: str) -> str:
    name = "cassandra-1" if name == "cassandra" else name
    if not re.fullmatch(r"kafka|redis|cassandra-[1-9]|prism|worker-[1-9]", name):
        raise StackError(f"unknown service {name!r}; known: kafka, cassandra[-N], redis, "
                         "prism, worker-N")
    return name


def log_path(service: str, state_dir: Path | str | None = None) -> Path:
    return _state(state_dir) / "logs" / f"{_canonical(service)}.log"
