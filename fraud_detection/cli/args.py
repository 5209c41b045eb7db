"""What every command module shares: argument types, the settings flags, and pipeline
flags taken from the pipelines' own PipelineOptions (their one definition)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fraud_detection.errors import OneLineErrorParser as Parser
from fraud_detection.errors import UsageError

Handler = Callable[[argparse.Namespace, Any], int]


class Commands:
    """The top-level subcommands, each with the settings flags and its handler."""

    def __init__(self, subparsers: argparse._SubParsersAction,
                 settings_flags: argparse.ArgumentParser,
                 listed_settings_flags: argparse.ArgumentParser) -> None:
        self.subparsers = subparsers
        self.settings_flags = settings_flags  # in --help as one line pointing to `config`
        self.listed_settings_flags = listed_settings_flags  # each in --help
        self.handlers: dict[str, Handler] = {}
        # Flags that need Beam imported (a second or more): added only for the command
        # that runs, or for all when every command's parser is wanted.
        self.deferred: dict[str, list[Callable[[], None]]] = {}

    def pipeline_flags(self, name: str, sub: argparse.ArgumentParser,
                       option_classes: Callable[[], tuple[type, ...]],
                       skip: tuple[str, ...] = ()) -> None:
        """The pipeline's options (from option_classes(), imported late) as flags of
        command `name`; `pipeline_values` gives back the ones the user set."""
        self.deferred.setdefault(name, []).append(
            lambda: _pipeline_flags(sub, option_classes(), skip))

    def finish(self, only: str | None = None) -> None:
        for name, adders in self.deferred.items():
            if only is None or name == only:
                for add in adders:
                    add()

    def add(self, name: str, handler: Handler, help_text: str,
            list_settings: bool = False) -> argparse.ArgumentParser:
        flags = self.listed_settings_flags if list_settings else self.settings_flags
        sub = self.subparsers.add_parser(name, help=help_text, description=help_text,
                                         parents=[flags])
        self.handlers[name] = handler
        return sub


def date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port (1-65535): {value}")
    return value


def output_folder(path: Path, option: str) -> Path:
    """path, created if missing; one line naming the option when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the folder: "
                         f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the folder is not writable")
    return path


class _DashedFlags:
    """Takes a PipelineOptions class's add_argument calls and adds them to a command
    with dashes (--model_dir -> --model-dir), the default left to the options class."""

    def __init__(self, group, skip: frozenset[str]) -> None:
        self.group = group
        self.skip = skip
        self.dests: list[str] = []

    def add_argument(self, flag: str, **kwargs: Any) -> None:
        dest = flag.lstrip("-")
        if dest in self.skip:
            return
        default = kwargs.pop("default", None)
        if default is not None and kwargs.get("action") != "store_true" \
                and "(default" not in kwargs.get("help", ""):
            kwargs["help"] = f"{kwargs.get('help', '')} (default: {default})".lstrip()
        self.group.add_argument("--" + dest.replace("_", "-"), dest=dest,
                                default=argparse.SUPPRESS, **kwargs)
        self.dests.append(dest)


def _pipeline_flags(sub: argparse.ArgumentParser, option_classes: tuple[type, ...],
                    skip: tuple[str, ...]) -> None:
    flags = _DashedFlags(sub, frozenset(skip))
    for cls in option_classes:
        cls._add_argparse_args(flags)
    sub.set_defaults(pipeline_dests=tuple(flags.dests))
    sub.add_argument("beam_args", nargs=argparse.REMAINDER, metavar="-- BEAM_OPTIONS",
                     help="other Beam pipeline options after --, e.g. -- --runner=PrismRunner")


def pipeline_values(args: argparse.Namespace) -> dict[str, Any]:
    dests = getattr(args, "pipeline_dests", ())
    values = {dest: getattr(args, dest) for dest in dests if hasattr(args, dest)}
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def beam_args(args: argparse.Namespace) -> list[str]:
    from fraud_detection.beam_pipelines.options import check_beam_args

    return check_beam_args(args.beam_args)


__all__ = ["Commands", "Parser", "beam_args", "date", "output_folder", "pipeline_values",
           "port", "positive_int"]
