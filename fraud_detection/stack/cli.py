"""`stack up | down | status | logs`: the local services, one line per process."""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from fraud_detection import stack
from fraud_detection.errors import OneLineErrorParser as _Parser
from fraud_detection.errors import UsageError
from fraud_detection.stack import SERVICES, Ports, StackError

DESCRIPTION = ("Local Kafka, Cassandra and Redis on 127.0.0.1, and optionally a runner "
               "service (Prism and worker pools).")


def add_commands(parser: argparse.ArgumentParser,
                 parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """up, down, status, runners and logs as parser's subcommands (dest stack_command)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None,
                        help="where data, logs and pid files live "
                             f"(default {stack.default_state_dir()})")
    commands = parser.add_subparsers(dest="stack_command", required=True, metavar="ACTION",
                                     parser_class=_Parser)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common, *parents], help=help_text,
                                   description=help_text)

    up = action("up", "start what is not running")
    up.add_argument("--services", nargs="+", choices=SERVICES, default=list(SERVICES))
    up.add_argument("--cassandra-nodes", type=int, default=1, choices=range(1, 10),
                    metavar="N", help="Cassandra nodes on 127.0.0.1..N (default 1)")
    up.add_argument("--cassandra-secure", action="store_true",
                    help="password authentication (cassandra/cassandra) and TLS for clients")
    up.add_argument("--runner-service", action="store_true",
                    help="also Prism as a job service and Beam worker pools, where pipelines "
                         "run with `-- --runner_service`")
    up.add_argument("--workers", type=int, default=None, choices=range(1, 9), metavar="N",
                    help="worker pools of the runner service (default 1)")
    action("down", "stop every process the stack started")
    action("status", "one line per process, and the runner service's jobs")
    runners = action("runners", "build Prism and stage the Flink job server")
    runners.add_argument("--only", choices=("prism", "flink"), default=None)
    runners.add_argument("--flink-job-server-jar", type=Path, default=None, metavar="PATH",
                         help="a beam-runners-flink-1.20-job-server jar you supply, staged "
                              "instead of fetched from Maven Central")
    logs = action("logs", "the end of a service's log")
    logs.add_argument("service", help="kafka, redis, cassandra[-N], prism or worker-N")
    logs.add_argument("-n", "--lines", type=int, default=40)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fraud-detection stack", description=DESCRIPTION)
    add_commands(parser)
    return parser


def ports_from_settings(kafka_bootstrap: str, cassandra_port: int, redis_port: int) -> Ports:
    """The stack's ports where the project's settings expect the services."""
    first = kafka_bootstrap.split(",")[0]
    try:
        kafka_port = int(first.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise UsageError(f"kafka_bootstrap: expected host:port, got {first!r}") from None
    return Ports(kafka=kafka_port, kafka_controller=kafka_port + 1,
                 cassandra_native=cassandra_port, redis=redis_port)


def _prepare_runners(only: str | None) -> None:
    from fraud_detection.stack import runners

    failed = []
    for name, prepare in (("prism", runners.prism_binary), ("flink", runners.flink_job_server_jar)):
        if only in (None, name):
            began = time.monotonic()
            try:
                print(f"{name:<6} {prepare()} ({time.monotonic() - began:.1f} s)", flush=True)
            except StackError as exc:
                failed.append(f"{name}: {exc}")
    if failed:
        raise StackError("; ".join(failed))


def main(argv: list[str] | None = None, *, ports: Ports | None = None,
         state_dir: Path | None = None) -> int:
    """ports and state_dir come from the project's settings; --state-dir wins over them."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    return run(args, ports, state_dir)


def run(args: argparse.Namespace, ports: Ports | None, state_dir: Path | None) -> int:
    """One parsed stack action."""
    state = args.state_dir or state_dir
    try:
        if args.stack_command == "up":
            began = time.monotonic()
            if args.workers and not args.runner_service:
                raise StackError("--workers needs --runner-service")
            workers = (args.workers or 1) if args.runner_service else 0
            info = stack.up(args.services, args.cassandra_nodes, ports, state,
                            progress=lambda line: print(line, flush=True),
                            cassandra_secure=args.cassandra_secure, workers=workers)
            if info.cassandra_secure:
                print(f"cassandra: TLS with {stack.tls_ca_file(info.state_dir)} as the CA; "
                      "user cassandra, password cassandra")
            print(f"stack up in {time.monotonic() - began:.1f} s ({info.state_dir})")
        elif args.stack_command == "down":
            stopped = stack.down(state)
            print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.stack_command == "status":
            rows = stack.status(state)
            if not rows:
                print(f"no stack in {state or stack.default_state_dir()}")
            for row in rows:
                pid = f"pid {row.pid}" if row.running else "stopped"
                print(f"{row.name:<12} {row.address:<16} {pid:<12} {row.log}")
            for job in stack.jobs(state):
                print(f"job {job.job_id:<20} {job.state:<10} {job.name}")
        elif args.stack_command == "runners":
            if args.flink_job_server_jar is not None:
                from fraud_detection.stack import runners

                print(f"flink  {runners.stage_flink_job_server_jar(args.flink_job_server_jar)}"
                      " (supplied)", flush=True)
                if args.only == "flink":
                    return 0
                args.only = args.only or "prism"
            _prepare_runners(args.only)
        else:
            log = stack.log_path(args.service, state)
            if not log.is_file():
                raise StackError(f"no log yet: {log}")
            with log.open(errors="replace") as lines:
                sys.stdout.writelines(deque(lines, maxlen=max(args.lines, 0)))
    except (StackError, OSError) as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0
