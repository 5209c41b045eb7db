"""python -m fraud_detection <command>: the one entry point for every user-facing task.
One module per noun: data, pipelines, model, store, ops."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fraud_detection import __version__, logs
from fraud_detection.cli import data, model, ops, pipelines, store
from fraud_detection.cli.args import Commands, Handler, Parser
from fraud_detection.config import ConfigError, add_settings_arguments, load_settings
from fraud_detection.errors import UsageError

NOUNS = (data, pipelines, model, store, ops)


def _settings_flags(listed: bool) -> argparse.ArgumentParser:
    flags = Parser(add_help=False)
    add_settings_arguments(flags, listed=listed)
    # SUPPRESS: `add --verbose bank` is not undone by the kind's own default.
    flags.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="libraries' warnings and tracebacks on the terminal too, not "
                            "only in the log file (the log_file setting)")
    return flags


def build_parser(command: str | None = None,
                 ) -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """Every command's parser; with command, the pipeline flags (which import Beam) of
    that command only, since argparse parses no other."""
    parser = Parser(prog="fraud-detection",
                    description="Fraud detection for banks on Apache Beam.",
                    epilog="Settings: defaults < --config YAML < FRAUD_* environment < "
                           "flags; `config --help` lists them.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands = Commands(subparsers, _settings_flags(listed=False),
                        _settings_flags(listed=True))
    for noun in NOUNS:
        noun.register(commands)
    commands.finish(command)
    return parser, commands.handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. Every failure is one line on stderr and a non-zero exit; the
    details (library warnings, tracebacks) go to the log file, and with --verbose to the
    terminal too."""
    given = sys.argv[1:] if argv is None else list(argv)
    parser, handlers = build_parser(next((a for a in given if not a.startswith("-")), ""))
    args = parser.parse_args(given)
    if not args.command:
        parser.error(f"give a command: {', '.join(handlers)}")
    name = f"fraud-detection {args.command}"
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    log_file = logs.setup(settings.log_file, settings.log_level,
                          verbose=getattr(args, "verbose", False), prefix=f"{name}: ")
    try:
        return handlers[args.command](args, settings)
    except (UsageError, ConfigError) as exc:
        print(f"{name}: error: {logs.one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unforeseen: one line here, the traceback in the log
        logging.getLogger(__name__).error("%s failed", name, exc_info=True,
                                          extra={"terminal": False})
        if isinstance(exc, OSError) and exc.filename:  # a file it could not read or write
            what = f"{exc.filename}: {exc.strerror or exc}"
        else:
            what = f"{type(exc).__name__}: {logs.one_line(str(exc))}"
        details = f" (traceback in {log_file})" if log_file else ""
        print(f"{name}: error: {what}{details}", file=sys.stderr)
        return 1
