"""Model: features, train, evaluate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fraud_detection.cli.args import (
    Commands,
    beam_args,
    date,
    pipeline_values,
    positive_int,
)
from fraud_detection.config import Settings
from fraud_detection.errors import UsageError


def _values(args: argparse.Namespace, settings: Settings) -> dict:
    return {"input": str(settings.data_dir), **pipeline_values(args)}


def _feature_table(args: argparse.Namespace, settings: Settings):
    from fraud_detection.beam_pipelines.feature_table import feature_table

    return feature_table(beam_args(args), _values(args, settings), args.features,
                         progress=lambda summary: print(summary, flush=True))


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import feature_table

    print(feature_table.run(beam_args(args), {**_values(args, settings),
                                              "features_out": args.out}), flush=True)
    print(f"feature table -> {args.out}*.parquet (read it with train or evaluate "
          f"--features {args.out})")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection import model
    from fraud_detection.beam_pipelines.feature_table import feature_options

    if args.since and args.until and args.until < args.since:
        raise UsageError(f"--until {args.until} is before --from {args.since}")
    table, used = _feature_table(args, settings)
    info, chosen, grid = model.train_on_table(
        table, args.model_dir, args.since, args.until, args.select,
        used.label_delay_days if used
        else feature_options(_values(args, settings)).label_delay_days, used)
    for result in sorted(grid or [], key=lambda r: -r["mean_ap"]):
        print(f"  prequential AP {result['mean_ap']:.3f}  {result['model']}")
    print(f"model {info.version} ({chosen.describe()}): {info.train_rows} transactions, "
          f"{info.train_frauds} frauds, {len(info.features)} features -> {args.model_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection import evaluation, model
    from fraud_detection.beam_pipelines.validate import input_pattern

    windows = evaluation.Windows(args.train_from, args.train_to, args.test_from, args.test_to)
    spans = (args.train_days, args.delay_days, args.test_days)
    values = _values(args, settings)
    if args.ablate_rules:
        if args.features:
            raise UsageError("--ablate-rules recomputes the features for each rule set: "
                             "give --input, not --features")
        text = evaluation.ablate_rules(input_pattern(values["input"]), values, *spans,
                                       settings.fraud_threshold, args.k, windows,
                                       progress=print)
        _print_report(text, args.report)
        return 0
    saved = info = None
    if args.model_dir:
        trained, info = model.load(args.model_dir)
        saved = (trained, info.version)
    if not args.features:
        # Labels and days are checked first: computing the features takes minutes.
        evaluation.check_input(input_pattern(values["input"]), *spans, windows)
    table, used = _feature_table(args, settings)
    if info and used and (warning := info.check_settings(used, "the feature table")):
        print(f"warning: {warning}", file=sys.stderr)
    report = evaluation.evaluate_table(
        table, *spans, settings.fraud_threshold, k=args.k, windows=windows, saved=saved,
        exclude_known_frauds=args.exclude_known_frauds, select=args.select)
    _print_report(f"{report.summary()}\n\n{report.table()}\n\n{report.budget_table()}",
                  args.report)
    return 0


def _print_report(text: str, report: Path | None) -> None:
    print(text)
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(text + "\n")


def _feature_options() -> tuple[type, ...]:
    from fraud_detection.beam_pipelines.feature_table import FeatureOptions
    from fraud_detection.beam_pipelines.options import DetectOptions, InputOptions

    return InputOptions, DetectOptions, FeatureOptions


def _feature_flags(commands: Commands, name: str, sub: argparse.ArgumentParser,
                   reads: bool = True) -> None:
    if reads:
        sub.add_argument("--features", metavar="PREFIX",
                         help="read the table `features --out PREFIX` wrote instead of "
                              "computing it from --input")
    commands.pipeline_flags(name, sub, _feature_options, skip=("model_dir", "features_out"))


def register(commands: Commands) -> None:
    fea = commands.add("features", cmd_features,
                       "compute the feature table once (detection's own kernel, labels and "
                       "rules' score included) for train and evaluate to read")
    fea.add_argument("--out", required=True, metavar="PREFIX",
                     help="path prefix of the Parquet files, e.g. data/features/world")
    _feature_flags(commands, "features", fea, reads=False)

    trn = commands.add("train", cmd_train, "train the fraud model on labelled history, "
                                           "with the pipeline's features")
    trn.add_argument("--model-dir", type=Path, default=Path("models/current"),
                     help="where model.pkl and model.json go (default models/current)")
    trn.add_argument("--from", dest="since", type=date, metavar="YYYY-MM-DD",
                     help="first day to train on (default: the first; earlier days still "
                          "feed the features)")
    trn.add_argument("--until", type=date, metavar="YYYY-MM-DD",
                     help="last day to train on (default: all)")
    trn.add_argument("--select", action="store_true",
                     help="compare the model families and settings of model.GRID by "
                          "prequential average precision (weeks stepping back from the "
                          "window's end, each fitted on the days before it less the label "
                          "delay) and keep the best; the figures go to grid.json beside it")
    _feature_flags(commands, "train", trn)

    evl = commands.add("evaluate", cmd_evaluate,
                       "time-split evaluation: the model, the rules and the seed rule side "
                       "by side, each figure with its bootstrap interval over the test days")
    evl.add_argument("--train-days", type=positive_int, default=30,
                     help="training window length, from --train-from (default 30 from the "
                          "input's first day); --train-to sets its end instead")
    evl.add_argument("--delay-days", type=int, default=7,
                     help="days between training and testing, as labels arrive late "
                          "(default 7); --test-from sets the test start instead")
    evl.add_argument("--test-days", type=positive_int, default=21,
                     help="test window length (default 21); --test-to sets its end instead")
    for flag, what in (("--train-from", "first training day"),
                       ("--train-to", "last training day"),
                       ("--test-from", "first test day"), ("--test-to", "last test day")):
        evl.add_argument(flag, type=date, metavar="YYYY-MM-DD",
                         help=f"{what}; every input day before the test window's end "
                              "feeds the features, only the windows feed the model and "
                              "the metrics" if flag == "--test-to" else what)
    evl.add_argument("--k", type=positive_int, default=100,
                     help="accounts an analyst reviews per day, for precision@k "
                          "(default 100)")
    evl.add_argument("--report", type=Path, help="also write the table to this file")
    evl.add_argument("--model-dir", type=Path,
                     help="score the test window with this model from `train` instead of "
                          "training one on the training window")
    evl.add_argument("--select", action="store_true",
                     help="pick the model as `train --select` does, inside the training "
                          "window, and show each family's best beside it")
    evl.add_argument("--ablate-rules", action="store_true",
                     help="what each rule earns: the model with every rule, none, and "
                          "each rule left out in turn (AP, and recall at 1%% of legit "
                          "flagged)")
    evl.add_argument("--exclude-known-frauds", action="store_true",
                     help="leave out of the test metrics the accounts with a fraud "
                          "labelled before the test window (already known compromised)")
    _feature_flags(commands, "evaluate", evl)
