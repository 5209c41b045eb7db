"""Options shared by every pipeline."""

from __future__ import annotations

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


class DetectOptions(PipelineOptions):
    """--rules and --model_dir, shared by every pipeline that detects. Defined once:
    Beam parses every options class together and refuses two differing definitions."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        from fraud_detection.transforms.rules import DEFAULT_RULES_FILE

        parser.add_argument("--rules", default=str(DEFAULT_RULES_FILE),
                            help="rules YAML; `stream` also takes 'table': the rules "
                                 "table, re-read while it runs")
        parser.add_argument("--model_dir", help="a model folder written by `train`; "
                                                "without it detection runs on rules alone")


class InputOptions(PipelineOptions):
    """--input, shared by every pipeline that reads Parquet (one definition: Beam parses
    all options classes together)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--input", help="Parquet file glob, or a dataset folder (its transactions/ are read)")


def with_local_runner(options: PipelineOptions) -> PipelineOptions:
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = LOCAL_RUNNER
    prism = options.view_as(PrismRunnerOptions)
    if standard.runner in ("PrismRunner", "prism") and not prism.prism_location:
        # Our own build, so Beam never tries to download a release binary.
        from fraud_detection.stack.runners import prism_binary

        standard.runner = "PrismRunner"
        prism.prism_location = str(prism_binary())
    if standard.runner == "PrismRunner":
        debug = options.view_as(DebugOptions)
        if PRISM_NO_SPLIT not in (debug.experiments or []):
            debug.add_experiment(PRISM_NO_SPLIT)
        portable = options.view_as(PortableOptions)
        if portable.job_server_timeout == PORTABLE_DEFAULT_TIMEOUT:
            portable.job_server_timeout = JOB_STREAM_TIMEOUT_SECONDS
    return options


def counter_value(result, name: str) -> int:
    """The committed value of a pipeline counter by name (0 when it never ran)."""
    counters = result.metrics().query()["counters"]
    return sum(c.committed or 0 for c in counters if c.key.metric.name == name)


def check_beam_args(args: list[str]) -> list[str]:
    """Fail with one line on a Beam option Beam does not know (it would only log it)."""
    import argparse

    args = [a for a in args if a != "--"]
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in _all_subclasses(PipelineOptions):
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(args)
    flags = [a for a in unknown if a.startswith("-")]
    if flags or unknown:
        from fraud_detection.errors import UsageError

        raise UsageError(f"unknown Beam option: {(flags or unknown)[0]}")
    return args


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
