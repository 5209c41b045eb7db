"""Operations: stack, streamers, dashboard, config."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from fraud_detection.cli.args import Commands, port
from fraud_detection.config import Settings


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.stack import cli as stack_cli

    ports = stack_cli.ports_from_settings(settings.kafka_bootstrap, settings.cassandra_port,
                                          settings.redis_port)
    return stack_cli.run(args, ports, settings.stack_dir)


def cmd_streamers(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.streamers import control

    if args.action == "start":
        results = control.start(settings, args.file, args.names)
        print(", ".join(f"{name} {status}" for name, status in sorted(results.items())))
        return 1 if "failed" in results.values() else 0
    lines = (control.status_lines(settings, args.names) if args.action == "status"
             else control.steer(settings, args.action, args.names))
    for line in lines:
        print(line, flush=True)
    return 0


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.dashboard import streamlit_command

    return subprocess.call(streamlit_command(args.port, args.address))


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    import yaml

    print(yaml.safe_dump(settings.as_dict(), sort_keys=False).rstrip())
    return 0


def register(commands: Commands) -> None:
    from fraud_detection.stack.cli import DESCRIPTION, add_commands

    stk = commands.add("stack", cmd_stack, DESCRIPTION)
    add_commands(stk, parents=[commands.settings_flags])

    stm = commands.add("streamers", cmd_streamers,
                       "replay transaction sources into Kafka at a rate; pause, resume, "
                       "stop, status")
    stm.add_argument("action", choices=("start", "enable", "disable", "interrupt", "status"),
                     help="start: run the configured streamers here until they end or ^C; "
                          "enable / disable / interrupt: resume / pause / stop running ones")
    stm.add_argument("names", nargs="*", help="streamer names (start: a subset of the config)")
    stm.add_argument("--file", type=Path, default=Path("streamers.yaml"),
                     help="streamer config YAML for start (default: streamers.yaml)")

    dash = commands.add("dashboard", cmd_dashboard,
                        "run the Streamlit dashboard (customers, banks, analysts, operators)")
    dash.add_argument("--port", type=port, default=8501, help="port (default 8501)")
    dash.add_argument("--address", default="127.0.0.1",
                      help="address the server binds (default 127.0.0.1: this machine only)")

    commands.add("config", cmd_config,
                  "print the effective settings (every one can be set in the --config "
                  "file, as FRAUD_NAME in the environment, or as --name VALUE)", list_settings=True)
