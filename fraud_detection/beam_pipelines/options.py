"""Options shared by every pipeline."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from fraud_detection.stack.runners import JOB_STREAM_TIMEOUT_SECONDS, PRISM_NO_SPLIT

PORTABLE_DEFAULT_TIMEOUT = 300

# Beam's DirectRunner tries to download Prism first; the Python FnApiRunner never
# reaches the network, so it is the local default.
LOCAL_RUNNER = "FnApiRunner"
# Runners whose workers run on this machine, so they reach the same hosts it does.
_LOCAL_RUNNERS = ("fnapi", "prism", "direct", "switchingdirect", "bundlebaseddirect",
                  "testdirect")


STORED_RULES = "table"  # --rules: the rules table, not a file


class DetectOptions(PipelineOptions):
    """--rules, --model_dir and --shards, shared by every pipeline that detects. Defined
    once: Beam parses every options class together and refuses two differing definitions."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        from fraud_detection.transforms.detect import DEFAULT_SHARDS
        from fraud_detection.transforms.rules import DEFAULT_RULES_FILE

        # No default here: each pipeline has its own (rules_source).
        parser.add_argument("--rules",
                            help="rules YAML, or 'table' for `stream`: the rules table, "
                                 "re-read while it runs (default: the rules table for "
                                 "stream, the built-in "
                                 f"{DEFAULT_RULES_FILE.name} for the others)")
        parser.add_argument("--model_dir", help="a model folder written by `train`; "
                                                "without it detection runs on rules alone")
        parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS,
                            help="groups of accounts (and of counterparties) run through "
                                 "the kernel together; a few per worker")

    def rules_source(self, streaming: bool = False) -> str:
        """--rules, or its default: the rules table when streaming, else the built-in
        file."""
        from fraud_detection.transforms.rules import DEFAULT_RULES_FILE

        return self.rules or (STORED_RULES if streaming else str(DEFAULT_RULES_FILE))

    def checked_model_dir(self):
        """--model_dir as a Path (None without one); one line if it is no folder."""
        from pathlib import Path

        from fraud_detection.errors import UsageError

        if not self.model_dir:
            return None
        if "://" not in self.model_dir and not Path(self.model_dir).is_dir():
            raise UsageError(f"--model-dir: no such folder: {self.model_dir}")
        return Path(self.model_dir)

    def checked_shards(self) -> int:
        from fraud_detection.errors import UsageError

        if self.shards < 1:
            raise UsageError(f"--shards must be at least 1, got {self.shards}")
        return self.shards


class InputOptions(PipelineOptions):
    """--input, shared by every pipeline that reads Parquet (one definition: Beam parses
    all options classes together)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--input", help="Parquet file glob, or a dataset folder (its transactions/ are "
                            "read); the commands default to the data_dir setting")


class RunnerServiceOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--runner_service", nargs="?", const="", default=None, metavar="STACK_DIR",
            help="submit to the runner service of `stack up --runner-service` (in "
                 "STACK_DIR, default the settings' stack_dir): PortableRunner to Prism's "
                 "job service, the SDK workers in one of its worker pools")
        parser.add_argument("--worker_pool", type=int, default=1,
                            help="which of the runner service's worker pools (default 1)")


def _fill_runner_service(options: PipelineOptions) -> None:
    """Fills in what `--runner_service` stands for: the options a cluster's job server
    and its worker pool sidecars take."""
    from fraud_detection import stack
    from fraud_detection.errors import UsageError

    wanted = options.view_as(RunnerServiceOptions)
    state = wanted.runner_service or stack.default_state_dir()
    info = stack.saved(state)
    running = {s.name for s in stack.status(state) if s.running}
    if info is None or "prism" not in running:
        raise UsageError(f"no runner service is running in {state}; start it with "
                         "`python -m fraud_detection stack up --runner-service`")
    pool = f"worker-{wanted.worker_pool}"
    if pool not in running:
        raise UsageError(f"--worker_pool {wanted.worker_pool}: the runner service in {state} "
                         f"runs worker pools {', '.join(sorted(running - {'prism'}))}")
    options.view_as(StandardOptions).runner = "PortableRunner"
    portable = options.view_as(PortableOptions)
    portable.job_endpoint = info.job_endpoint
    portable.environment_type = "EXTERNAL"
    portable.environment_config = info.worker_pool(wanted.worker_pool)


def with_local_runner(options: PipelineOptions) -> PipelineOptions:
    standard = options.view_as(StandardOptions)
    if on_runner_service(options):
        _fill_runner_service(options)
    if not standard.runner:
        standard.runner = LOCAL_RUNNER
    prism = options.view_as(PrismRunnerOptions)
    if standard.runner in ("PrismRunner", "prism") and not prism.prism_location:
        # Our own build, so Beam never tries to download a release binary.
        from fraud_detection.stack.runners import prism_binary

        standard.runner = "PrismRunner"
        prism.prism_location = str(prism_binary())
    if standard.runner == "PrismRunner" or on_runner_service(options):
        debug = options.view_as(DebugOptions)
        if PRISM_NO_SPLIT not in (debug.experiments or []):
            debug.add_experiment(PRISM_NO_SPLIT)
        portable = options.view_as(PortableOptions)
        if portable.job_server_timeout == PORTABLE_DEFAULT_TIMEOUT:
            portable.job_server_timeout = JOB_STREAM_TIMEOUT_SECONDS
    return options


def on_runner_service(options: PipelineOptions) -> bool:
    """Whether --runner_service was given (with or without a stack folder)."""
    return options.view_as(RunnerServiceOptions).runner_service is not None


def for_workers(path: str) -> str:
    """A path as workers must see it: absolute, since a worker pool's or a cluster's
    workers run in other working directories (a URL stays as it is)."""
    from pathlib import Path

    return path if "://" in path else str(Path(path).absolute())


def runs_here(options: PipelineOptions) -> bool:
    """Whether the pipeline's workers run on this machine (a local runner, or the stack's
    runner service)."""
    if on_runner_service(options):
        return True
    runner = options.view_as(StandardOptions).runner or LOCAL_RUNNER
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower().removesuffix("runner") in _LOCAL_RUNNERS


def counter_value(result, name: str) -> int:
    """The committed value of a pipeline counter by name (0 when it never ran)."""
    counters = result.metrics().query()["counters"]
    return sum(c.committed or 0 for c in counters if c.key.metric.name == name)


def check_beam_args(args: list[str]) -> list[str]:
    """Fail with one line on a Beam option Beam does not know (it would only log it)."""
    import argparse

    from fraud_detection.errors import UsageError

    class OneLineParser(argparse.ArgumentParser):
        # A bad value (`--direct_num_workers=x`) is one line, not Beam's usage dump.
        def error(self, message: str) -> typing.NoReturn:
            raise UsageError(f"Beam options: {message}")

    args = [a for a in args if a != "--"]
    parser = OneLineParser(add_help=False, allow_abbrev=False)
    for cls in _all_subclasses(PipelineOptions):
        cls._add_argparse_args(parser)
    known, unknown = parser.parse_known_args(args)
    flags = [a for a in unknown if a.startswith("-")]
    if flags or unknown:
        raise UsageError(f"unknown Beam option: {(flags or unknown)[0]}")
    if known.runner is not None:
        check_runner(known.runner)
    return args


def check_runner(name: str) -> None:
    """Fail with one line on a --runner Beam cannot create (it would raise while the
    pipeline is built, with a traceback)."""
    import importlib

    from fraud_detection.errors import UsageError

    # Beam's own lookup (apache_beam.runners.runner.create_runner): a known name, with or
    # without "Runner", in any case, or a dotted path to a PipelineRunner class.
    known = {path.rsplit(".", 1)[-1].lower() for path in StandardOptions.ALL_KNOWN_RUNNERS}
    if name.lower() in known or name.lower() + "runner" in known:
        return
    if "." in name:
        module, _, attribute = name.rpartition(".")
        try:
            if hasattr(importlib.import_module(module), attribute):
                return
        except ImportError:
            pass
    raise UsageError(f"--runner: no such Beam runner: {name!r} (known: "
                     f"{', '.join(StandardOptions.KNOWN_RUNNER_NAMES)}, or a runner's "
                     "module.Class)")


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


@dataclass(frozen=True)
class DetectSummary:
    """What a detecting pipeline (batch, stream) did, from its counters."""

    read: int
    scored: int
    flagged: int
    dead_lettered: int
    rows_written: int
    rows_failed: int
    seconds: float
    entities_read: int = 0  # batch: the dataset's banks, users, accounts and merchants
    entities_dead_lettered: int = 0

    @classmethod
    def of(cls, result, seconds: float) -> DetectSummary:
        return cls(**{name: counter_value(result, name)
                      for name in ("read", "scored", "flagged", "dead_lettered",
                                   "rows_written", "rows_failed", "entities_read",
                                   "entities_dead_lettered")}, seconds=seconds)

    def __str__(self) -> str:
        entities = (f"; entities read {self.entities_read}, dead-lettered "
                    f"{self.entities_dead_lettered}" if self.entities_read else "")
        return (f"read {self.read}, scored {self.scored}, flagged {self.flagged}, "
                f"dead-lettered {self.dead_lettered}{entities}; Cassandra rows written "
                f"{self.rows_written}, failed {self.rows_failed}; {self.seconds:.1f}s")
