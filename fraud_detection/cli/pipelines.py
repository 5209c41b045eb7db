"""Pipelines: batch, backfill, stream, schedule."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from fraud_detection.cli.args import Commands, beam_args, date, pipeline_values
from fraud_detection.config import Settings
from fraud_detection.errors import UsageError


def cmd_batch(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import batch

    values = {"input": str(settings.data_dir), **pipeline_values(args)}
    summary = batch.run(beam_args(args), settings, values)
    print(summary)
    return 1 if summary.rows_failed else 0


def _backfill_days(args: argparse.Namespace) -> tuple[dt.date, dt.date]:
    if args.date:
        try:
            day = (dt.date.today() - dt.timedelta(days=1) if args.date == "yesterday"
                   else dt.date.fromisoformat(args.date))
        except ValueError:
            raise UsageError(f"--date: not a date (YYYY-MM-DD or yesterday): "
                             f"{args.date!r}") from None
        return day, day
    if not (args.from_day and args.to_day):
        raise UsageError("give --date DAY|yesterday, or --from DAY and --to DAY")
    if args.to_day < args.from_day:
        raise UsageError(f"--to {args.to_day} is before --from {args.from_day}")
    return args.from_day, args.to_day


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import backfill

    first, last = _backfill_days(args)
    values = pipeline_values(args)
    root = Path(values.pop("input", None) or settings.data_dir)
    if not root.is_dir():
        raise UsageError(f"no such dataset folder: {root}")

    def report(result) -> None:
        print(f"{result.day} {'ok    ' if result.ok else 'FAILED'} {result.detail}", flush=True)

    results = backfill.run(root, first, last, settings, beam_args(args), values,
                           progress=report)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} days done"
          + (f"; failed: {', '.join(str(r.day) for r in failed)}" if failed else ""))
    return 1 if failed else 0


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import stream

    summary = stream.run(beam_args(args), settings, pipeline_values(args))
    if summary is None:
        print("stream submitted to the runner service; `stack status` lists its job, "
              "`stack down` ends it")
        return 0
    print(summary)
    return 1 if summary.rows_failed else 0


def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection import schedule

    if args.action == "remove":
        print("removed the nightly backfill" if schedule.remove()
              else "no nightly backfill was scheduled")
        return 0
    hour, minute = schedule.time_of_day(args.at)
    dataset = Path(args.input or settings.data_dir)
    if not dataset.is_dir():
        raise UsageError(f"no such dataset folder: {dataset}")
    log = Path(args.log).resolve()
    line = schedule.cron_line(hour, minute, dataset, log)
    if args.print:
        print(line)
        return 0
    schedule.install(line, log)
    print(f"nightly backfill at {hour:02d}:{minute:02d} installed in the crontab; log: {log}")
    return 0


def _batch_options() -> tuple[type, ...]:
    from fraud_detection.beam_pipelines.options import DetectOptions, InputOptions

    return InputOptions, DetectOptions


def _stream_options() -> tuple[type, ...]:
    from fraud_detection.beam_pipelines.options import DetectOptions
    from fraud_detection.beam_pipelines.stream import StreamOptions

    return DetectOptions, StreamOptions


def register(commands: Commands) -> None:
    bat = commands.add("batch", cmd_batch,
                       "score a Parquet dataset and write everything to Cassandra "
                       "(idempotent)")
    commands.pipeline_flags("batch", bat, _batch_options)

    bfl = commands.add("backfill", cmd_backfill,
                       "re-score day partitions with the batch pipeline, one day at a time")
    bfl.add_argument("--date", help="one day: YYYY-MM-DD or 'yesterday'")
    bfl.add_argument("--from", dest="from_day", type=date, help="first day")
    bfl.add_argument("--to", dest="to_day", type=date, help="last day")
    commands.pipeline_flags("backfill", bfl, _batch_options)

    stre = commands.add("stream", cmd_stream,
                        "score the transactions topic live: Kafka -> DetectFraud -> "
                        "Cassandra + alerts")
    commands.pipeline_flags("stream", stre, _stream_options)

    sch = commands.add("schedule", cmd_schedule,
                       "install (or --print) the crontab entry for the nightly backfill")
    sch.add_argument("action", choices=("install", "remove"))
    sch.add_argument("--print", action="store_true", help="print the entry, change nothing")
    sch.add_argument("--at", default="02:00", help="time of day, HH:MM (default 02:00)")
    sch.add_argument("--input", help="dataset folder whose day partitions arrive nightly "
                                     "(default: the data_dir setting)")
    sch.add_argument("--log", default="out/logs/backfill.log",
                     help="where cron's runs log (default out/logs/backfill.log)")
