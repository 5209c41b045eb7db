"""Data: generate, import-paysim, validate."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from fraud_detection.cli.args import (
    Commands,
    beam_args,
    date,
    output_folder,
    pipeline_values,
    positive_int,
)
from fraud_detection.config import Settings
from fraud_detection.errors import UsageError


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.datagen.world import WorldConfig, generate

    try:
        cfg = WorldConfig(days=args.days, seed=args.seed, rows=args.rows, banks=args.banks,
                          start=args.start, fraud_scale=args.fraud_scale)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = output_folder(args.out or settings.data_dir, "--out")
    report = generate(cfg, out, progress=not args.quiet)
    print(f"{out}: {report.summary()}")
    return 0


def cmd_import_paysim(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.datagen.paysim import import_paysim

    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    start = dt.datetime.combine(args.start, dt.time(), tzinfo=dt.UTC)
    report = import_paysim(args.file, args.out or settings.data_dir, start=start,
                           currency=args.currency, bank_id=args.bank_id,
                           chunk_rows=args.chunk_rows, progress=not args.quiet,
                           country=args.country)
    print(report.summary())
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import validate

    values = {"input": str(settings.data_dir), **pipeline_values(args)}
    print(validate.run(beam_args(args), values))
    return 0


def register(commands: Commands) -> None:
    from fraud_detection.datagen.world import WorldConfig

    world = WorldConfig()
    gen = commands.add("generate", cmd_generate,
                       "write a synthetic bank world with labelled fraud scenarios as Parquet")
    gen.add_argument("--days", type=positive_int, default=world.days,
                     help=f"days of transactions (default {world.days})")
    gen.add_argument("--seed", type=int, default=world.seed,
                     help=f"random seed: the same seed, the same world (default {world.seed})")
    gen.add_argument("--rows", type=positive_int, default=world.rows,
                     help="legitimate transactions to generate, fraud comes on top "
                          f"(default {world.rows})")
    gen.add_argument("--banks", type=positive_int, default=world.banks,
                     help=f"banks in the world (default {world.banks})")
    gen.add_argument("--start", type=date, default=world.start,
                     help=f"first day (default {world.start})")
    gen.add_argument("--fraud-scale", type=float, default=world.fraud_scale,
                     help="multiplies the number of fraud incidents "
                          f"(default {world.fraud_scale})")
    gen.add_argument("--out", type=Path, help="output folder (default: the data_dir setting)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")

    pay = commands.add("import-paysim", cmd_import_paysim,
                       "convert PaySim's CSV into canonical transactions as Parquet")
    pay.add_argument("file", type=Path, help="PaySim CSV file")
    pay.add_argument("--out", type=Path, help="output folder (default: the data_dir setting)")
    pay.add_argument("--start", type=date, default=world.start,
                     help=f"the date PaySim's step 1 falls on (default {world.start})")
    pay.add_argument("--currency", default="USD", help="currency of the amounts (default USD)")
    pay.add_argument("--country", default="US",
                     help="ISO 3166 country of the bank, its users and merchants (PaySim "
                          "names none; default US)")
    pay.add_argument("--bank-id", default="paysim", help="the one bank's id (default paysim)")
    pay.add_argument("--chunk-rows", type=positive_int, default=200_000,
                     help="CSV rows converted at a time (default 200000)")
    pay.add_argument("--quiet", action="store_true", help="no progress bar")

    val = commands.add("validate", cmd_validate,
                       "check a Parquet dataset with a Beam pipeline; bad rows go to dead "
                       "letters")
    commands.pipeline_flags("validate", val, _validate_options)


def _validate_options() -> tuple[type, ...]:
    from fraud_detection.beam_pipelines.options import InputOptions
    from fraud_detection.beam_pipelines.validate import ValidateOptions

    return InputOptions, ValidateOptions
