"""python -m fraud_detection <command>: the one entry point for every user-facing task."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fraud_detection import __version__, logs
from fraud_detection.config import ConfigError, Settings, add_settings_arguments, load_settings
from fraud_detection.errors import OneLineErrorParser as _Parser
from fraud_detection.errors import UsageError


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port (1-65535): {value}")
    return value


def _output_folder(path: Path, option: str) -> Path:
    """path, created if missing; one line naming the option when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the folder: "
                         f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the folder is not writable")
    return path


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.datagen.world import WorldConfig, generate

    try:
        cfg = WorldConfig(days=args.days, seed=args.seed, rows=args.rows, banks=args.banks,
                          start=args.start, fraud_scale=args.fraud_scale)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = _output_folder(args.out or settings.data_dir, "--out")
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
    from fraud_detection.beam_pipelines.options import check_beam_args

    argv = ["--input", str(args.input or settings.data_dir),
            "--dead_letters", args.dead_letters, *check_beam_args(args.beam_args)]
    summary = validate.run(argv)
    print(summary)
    return 0


def cmd_batch(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import batch
    from fraud_detection.beam_pipelines.options import check_beam_args
    from fraud_detection.transforms.rules import DEFAULT_RULES_FILE

    argv = ["--input", str(args.input or settings.data_dir),
            "--rules", str(args.rules or DEFAULT_RULES_FILE),
            *(["--model_dir", str(args.model_dir)] if args.model_dir else []),
            *check_beam_args(args.beam_args)]
    summary = batch.run(argv, settings)
    print(summary)
    return 1 if summary.rows_failed else 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import backfill
    from fraud_detection.beam_pipelines.options import check_beam_args

    if args.date:
        try:
            first = last = (dt.date.today() - dt.timedelta(days=1) if args.date == "yesterday"
                            else dt.date.fromisoformat(args.date))
        except ValueError:
            raise UsageError(f"--date: not a date (YYYY-MM-DD or yesterday): "
                             f"{args.date!r}") from None
    elif args.from_day and args.to_day:
        first, last = args.from_day, args.to_day
    else:
        raise UsageError("give --date DAY|yesterday, or --from DAY and --to DAY")
    if last < first:
        raise UsageError(f"--to {last} is before --from {first}")
    root = Path(args.input or settings.data_dir)
    if not root.is_dir():
        raise UsageError(f"no such dataset folder: {root}")
    beam_args = [*(["--rules", str(args.rules)] if args.rules else []),
                 *(["--model_dir", str(args.model_dir)] if args.model_dir else []),
                 *check_beam_args(args.beam_args)]

    def report(result) -> None:
        print(f"{result.day} {'ok    ' if result.ok else 'FAILED'} {result.detail}", flush=True)

    results = backfill.run(root, first, last, settings, beam_args, progress=report)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} days done"
          + (f"; failed: {', '.join(str(r.day) for r in failed)}" if failed else ""))
    return 1 if failed else 0


def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection import schedule

    if args.action == "remove":
        print("removed the nightly backfill" if schedule.remove()
              else "no nightly backfill was scheduled")
        return 0
    try:
        hour, minute = (int(part) for part in args.at.split(":"))
    except ValueError:
        raise UsageError(f"--at: expected HH:MM, got {args.at!r}") from None
    dataset = Path(args.input or settings.data_dir)
    if not dataset.is_dir():
        raise UsageError(f"no such dataset folder: {dataset}")
    log = Path(args.log).resolve()
    line = schedule.cron_line(hour, minute, dataset, log)
    if args.print:
        print(line)
        return 0
    log.parent.mkdir(parents=True, exist_ok=True)
    schedule.install(line)
    print(f"nightly backfill at {hour:02d}:{minute:02d} installed in the crontab; log: {log}")
    return 0


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.stack import Ports
    from fraud_detection.stack.cli import main as stack_main

    first = settings.kafka_bootstrap.split(",")[0]
    try:
        kafka_port = int(first.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise UsageError(f"kafka_bootstrap: expected host:port, got {first!r}") from None
    ports = Ports(kafka=kafka_port, kafka_controller=kafka_port + 1,
                  cassandra_native=settings.cassandra_port, redis=settings.redis_port)
    return stack_main(args.stack_args, ports=ports, state_dir=settings.stack_dir)


def _write_features(args: argparse.Namespace, settings: Settings, prefix: str) -> None:
    from fraud_detection.beam_pipelines import features
    from fraud_detection.beam_pipelines.options import check_beam_args

    argv = ["--input", str(args.input or settings.data_dir), "--features_out", prefix,
            "--rules", str(args.rules),
            f"--label_delay_days={args.label_delay_days}",
            f"--counterparty_window_days={args.counterparty_window_days}",
            *check_beam_args(args.beam_args)]
    summary = features.run(argv)
    print(f"features of {summary.rows} transactions in {summary.seconds:.1f}s"
          + (f" ({summary.dead_lettered} invalid rows left out)" if summary.dead_lettered
             else ""), flush=True)


def _feature_table(args: argparse.Namespace, settings: Settings):
    """The table `features` wrote (--features), or computed now from --input, and the
    settings it was computed with (None for a table written before they were kept)."""
    import tempfile

    from fraud_detection.beam_pipelines import features

    if args.features:
        return features.read_feature_table(args.features)
    with tempfile.TemporaryDirectory(prefix="fraud-features-") as tmp:
        _write_features(args, settings, str(Path(tmp) / "features"))
        return features.read_feature_table(str(Path(tmp) / "features"))


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    _write_features(args, settings, args.out)
    print(f"feature table -> {args.out}*.parquet (read it with train or evaluate "
          f"--features {args.out})")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from fraud_detection import model
    from fraud_detection.records import LEGIT

    if args.since and args.until and args.until < args.since:
        raise UsageError(f"--until {args.until} is before --from {args.since}")
    table, used = _feature_table(args, settings)
    days = np.array([t.date() for t in table["event_time"].to_pylist()])
    keep = np.ones(len(days), dtype=bool)
    if args.since:  # earlier days only warmed the features up
        keep &= days >= args.since
    if args.until:
        keep &= days <= args.until
    table = table.filter(keep)
    vectors = np.column_stack([table[name].to_numpy() for name in model.MODEL_FEATURES])
    fraud = np.array([(label or LEGIT) != LEGIT for label in table["label"].to_pylist()])
    chosen, grid = model.DEFAULT, None
    if args.select:
        chosen, grid = model.select(vectors, fraud.astype(int), days[keep],
                                    args.label_delay_days)
        for result in sorted(grid, key=lambda r: -r["mean_ap"]):
            print(f"  prequential AP {result['mean_ap']:.3f}  {result['model']}")
    trained = model.train(vectors, fraud.astype(int), candidate=chosen)
    info = model.save(trained, args.model_dir, len(fraud), int(fraud.sum()),
                      candidate=chosen, grid=grid, settings=used)
    print(f"model {info.version} ({chosen.describe()}): {info.train_rows} transactions, "
          f"{info.train_frauds} frauds, {len(info.features)} features -> {args.model_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection import model
    from fraud_detection.beam_pipelines.validate import input_pattern
    from fraud_detection.evaluation import Windows, check_input, evaluate_table

    windows = Windows(args.train_from, args.train_to, args.test_from, args.test_to)
    if args.ablate_rules:
        return _ablate_rules(args, settings, windows)
    saved = None
    if args.model_dir:
        trained, info = model.load(args.model_dir)
        saved = (trained, info.version)
    if not args.features:
        # Labels and days are checked first: computing the features takes minutes.
        check_input(input_pattern(str(args.input or settings.data_dir)), args.train_days,
                    args.delay_days, args.test_days, windows)
    table, used = _feature_table(args, settings)
    if saved and used and (warning := info.check_settings(used, "the feature table")):
        print(f"warning: {warning}", file=sys.stderr)
    report = evaluate_table(table, args.train_days, args.delay_days, args.test_days,
                            settings.fraud_threshold, k=args.k, windows=windows,
                            saved=saved, exclude_known_frauds=args.exclude_known_frauds,
                            select=args.select)
    text = f"{report.summary()}\n\n{report.table()}\n\n{report.budget_table()}"
    _print_report(text, args.report)
    return 0


def _print_report(text: str, report: Path | None) -> None:
    print(text)
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(text + "\n")


def _ablate_rules(args: argparse.Namespace, settings: Settings, windows) -> int:
    from fraud_detection.beam_pipelines.validate import input_pattern
    from fraud_detection.evaluation import check_input, rules_ablation
    from fraud_detection.io.parquet import read_valid_transactions
    from fraud_detection.transforms.rules import load_rules

    if args.features:
        raise UsageError("--ablate-rules recomputes the features for each rule set: give "
                         "--input, not --features")
    pattern = input_pattern(str(args.input or settings.data_dir))
    check_input(pattern, args.train_days, args.delay_days, args.test_days, windows)
    transactions, invalid = read_valid_transactions(pattern)
    if invalid:
        print(f"{invalid} invalid rows left out", flush=True)
    text = rules_ablation(transactions, load_rules(args.rules),
                          args.train_days, args.delay_days, args.test_days,
                          settings.fraud_threshold, args.k, windows=windows,
                          label_delay_days=args.label_delay_days,
                          counterparty_window_days=args.counterparty_window_days)
    _print_report(text, args.report)
    return 0


def cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.store import rules as stored
    from fraud_detection.store.keyspace import connect
    from fraud_detection.transforms.rules import load_rules

    if args.action != "list" and not args.target:
        raise UsageError(f"rules {args.action} needs "
                         + ("a YAML file" if args.action == "load" else "a rule id"))
    # The whole file is checked against the rule schema before connecting: a bad one
    # writes nothing.
    loaded = load_rules(Path(args.target)) if args.action == "load" else []
    store = connect(settings)
    try:
        if args.action == "load":
            stored.save_rules(store, loaded)
            print(f"loaded {len(loaded)} rules from {args.target}")
        elif args.action in ("pause", "resume"):
            rule = stored.set_paused(store, args.target, args.action == "pause")
            print(f"rule {rule.rule_id} {'paused' if rule.paused else 'active'}")
        elif args.action == "delete":
            stored.delete_rule(store, args.target)
            print(f"rule {args.target} deleted")
        else:
            for rule in stored.stored_rules(store):
                state = "paused" if rule.paused else "active"
                print(f"{rule.rule_id:<28} {state:<7} {rule.weight:.2f}  {rule.description}")
    finally:
        store.close()
    return 0


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.beam_pipelines import stream
    from fraud_detection.beam_pipelines.options import check_beam_args

    if args.model_dir and not args.model_dir.is_dir():
        raise UsageError(f"--model-dir: no such folder: {args.model_dir}")
    argv = ["--rules", str(args.rules), "--start_from", args.start_from,
            *(["--model_dir", str(args.model_dir)] if args.model_dir else []),
            *(["--bounded"] if args.bounded else []),
            *check_beam_args(args.beam_args)]
    summary = stream.run(argv, settings)
    if summary is None:
        print("stream submitted to the runner service; `stack status` lists its job, "
              "`stack down` ends it")
        return 0
    print(summary)
    return 1 if summary.rows_failed else 0


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    app = Path(__file__).resolve().parents[1] / "streamlit_app" / "Home.py"
    if not app.is_file():
        raise UsageError(f"no dashboard at {app} (run from a clone of the repository)")
    command = [sys.executable, "-m", "streamlit", "run", str(app),
               "--server.port", str(args.port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    return subprocess.call(command)


def cmd_logins(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from fraud_detection.store.keyspace import connect
    from fraud_detection.store.logins import add_login

    password = os.environ.get(args.password_env)
    if not password:
        raise UsageError(f"set the password in the environment variable {args.password_env} "
                         "(never on the command line)")
    store = connect(settings)
    try:
        viewer = add_login(store, args.username, password, args.role, args.user_id,
                           args.bank_id)
    finally:
        store.close()
    print(f"login {viewer.username}: {viewer.role}"
          + (f" of user {viewer.user_id}" if viewer.user_id else "")
          + (f" of bank {viewer.bank_id}" if viewer.bank_id else ""))
    return 0


def cmd_streamers(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.store.streamer_state import StreamerState

    if args.action == "start":
        from fraud_detection.streamers.config import load_streamer_configs
        from fraud_detection.streamers.runner import run_streamers

        configs = load_streamer_configs(args.file, settings.topic_transactions)
        if args.names:
            unknown = sorted(set(args.names) - {c.name for c in configs})
            if unknown:
                raise UsageError(f"not in {args.file}: {', '.join(unknown)}")
            configs = [c for c in configs if c.name in args.names]
        results = run_streamers(configs, settings)
        print(", ".join(f"{name} {status}" for name, status in sorted(results.items())))
        return 1 if "failed" in results.values() else 0
    state = StreamerState(settings)
    try:
        if args.action == "status":
            _print_streamers(state.all() if not args.names else
                             [state.get(name) for name in args.names])
            _print_pipeline_progress(settings)
            return 0
        if not args.names:
            raise UsageError(f"streamers {args.action} needs one or more streamer names")
        command, done = {"enable": ("run", "resumed"), "disable": ("pause", "paused"),
                         "interrupt": ("stop", "stopped")}[args.action]
        for name in args.names:
            state.command(name, command)
            print(f"{name}: asked to {command}; it will report {done} within a second")
    finally:
        state.close()
    return 0


def _print_streamers(statuses) -> None:
    import time

    print(f"{'name':<16} {'status':<9} {'command':<8} {'source':<10} {'topic':<14} "
          f"{'target/s':>8} {'rate/s':>8} {'sent':>9} {'last row':>9}  last report")
    for s in statuses:
        age = time.time() - s.updated
        print(f"{s.name:<16} {s.status:<9} {s.command:<8} {s.config.get('source', ''):<10} "
              f"{s.config.get('topic', ''):<14} {s.config.get('rate', 0):>8g} {s.rate:>8.1f} "
              f"{s.sent:>9} {s.last_row:>9}  {age:.0f}s ago"
              + (f"  error: {s.error}" if s.error else ""))
    if not statuses:
        print("no streamers registered (start some with `streamers start`)")


def _print_pipeline_progress(settings: Settings) -> None:
    from fraud_detection.beam_pipelines.stream import GROUP_ID
    from fraud_detection.progress import read_progress

    try:
        progress = read_progress(settings, GROUP_ID)
    except Exception as exc:  # Kafka down: the streamers' table above still stands
        print(f"stream pipeline: progress unknown: Kafka at {settings.kafka_bootstrap}: "
              f"{type(exc).__name__}")
        return
    print(f"stream pipeline ({settings.topic_transactions}): {progress.describe()}")


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.store.keyspace import apply_schema

    report = apply_schema(settings, progress=print)
    state = "applied " + ", ".join(map(str, report.applied)) if report.applied else "up to date"
    print(f"keyspace {report.keyspace}: schema version {report.version} ({state})")
    return 0


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.records import ENTITY_FIELDS, validate_entity
    from fraud_detection.store.entities import add_entity
    from fraud_detection.store.keyspace import connect

    fields = {k: v for k, v in vars(args).items() if k in ENTITY_FIELDS[args.kind]}
    for name in ("created_at", "opened_at"):
        if name in fields and fields[name] is None:
            fields[name] = dt.datetime.now(dt.UTC).isoformat()
    entity, errors = validate_entity(args.kind, fields)
    if entity is None:
        raise UsageError(f"{args.kind}: {'; '.join(errors)}")
    store = connect(settings)
    try:
        add_entity(store, entity)
    finally:
        store.close()
    print(f"added {args.kind} {fields[args.kind + '_id']}")
    return 0


def cmd_entities(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_detection.io.entity_topics import consume_entity_topics
    from fraud_detection.store.keyspace import connect

    store = connect(settings)
    try:
        report = consume_entity_topics(settings, store, idle_seconds=args.idle_seconds,
                                       progress=print)
    except KeyboardInterrupt:
        return 130
    finally:
        store.close()
    print(report.summary())
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    import yaml

    print(yaml.safe_dump(settings.as_dict(), sort_keys=False).rstrip())
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    settings_flags = _Parser(add_help=False)
    add_settings_arguments(settings_flags)
    # SUPPRESS: `add --verbose bank` is not undone by the kind's own default.
    settings_flags.add_argument("-v", "--verbose", action="store_true",
                                default=argparse.SUPPRESS,
                                help="libraries' warnings and tracebacks on the terminal too, "
                                     "not only in the log file (the log_file setting)")
    parser = _Parser(
        prog="fraud-detection",
        description="Fraud detection for banks on Apache Beam.",
        epilog="Settings: defaults < --config YAML < FRAUD_* environment < flags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    handlers: dict[str, Callable] = {}

    def command(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  parents=[settings_flags])
        handlers[name] = handler
        return sub

    gen = command("generate", cmd_generate,
                  "write a synthetic bank world with labelled fraud scenarios as Parquet")
    gen.add_argument("--days", type=_positive_int, default=30)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--rows", type=_positive_int, default=50_000,
                     help="legitimate transactions to generate (fraud comes on top)")
    gen.add_argument("--banks", type=_positive_int, default=3)
    gen.add_argument("--start", type=_date, default=dt.date(2024, 1, 1), help="first day")
    gen.add_argument("--fraud-scale", type=float, default=1.0,
                     help="multiplies the number of fraud incidents")
    gen.add_argument("--out", type=Path, help="output folder (default: the data_dir setting)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")

    pay = command("import-paysim", cmd_import_paysim,
                  "convert PaySim's CSV into canonical transactions as Parquet")
    pay.add_argument("file", type=Path, help="PaySim CSV file")
    pay.add_argument("--out", type=Path, help="output folder (default: the data_dir setting)")
    pay.add_argument("--start", type=_date, default=dt.date(2024, 1, 1),
                     help="the date PaySim's step 1 falls on")
    pay.add_argument("--currency", default="USD")
    pay.add_argument("--country", default="US",
                     help="ISO 3166 country of the bank, its users and merchants (PaySim "
                          "names none; default US)")
    pay.add_argument("--bank-id", default="paysim")
    pay.add_argument("--chunk-rows", type=_positive_int, default=200_000)
    pay.add_argument("--quiet", action="store_true", help="no progress bar")

    val = command("validate", cmd_validate,
                  "check a Parquet dataset with a Beam pipeline; bad rows go to dead letters")
    val.add_argument("--input", help="Parquet glob or dataset folder (default: data_dir)")
    val.add_argument("--dead-letters", default="out/dead-letters/validate",
                     help="path prefix of the dead-letter files")
    val.add_argument("beam_args", nargs=argparse.REMAINDER,
                     help="Beam pipeline options after --, e.g. -- --runner=FnApiRunner")

    bat = command("batch", cmd_batch,
                  "score a Parquet dataset and write everything to Cassandra (idempotent)")
    bat.add_argument("--input", help="Parquet glob or dataset folder (default: data_dir)")
    bat.add_argument("--model-dir", type=Path, help="model folder from `train` (default: none, "
                                                    "rules alone)")
    bat.add_argument("--rules", type=Path, default=None, help="rules YAML (default: built in)")
    bat.add_argument("beam_args", nargs=argparse.REMAINDER,
                     help="Beam pipeline options after --, e.g. -- --runner=PrismRunner")

    bfl = command("backfill", cmd_backfill,
                  "re-score day partitions with the batch pipeline, one day at a time")
    bfl.add_argument("--input", help="dataset folder (default: data_dir)")
    bfl.add_argument("--date", help="one day: YYYY-MM-DD or 'yesterday'")
    bfl.add_argument("--from", dest="from_day", type=_date, help="first day")
    bfl.add_argument("--to", dest="to_day", type=_date, help="last day")
    bfl.add_argument("--model-dir", type=Path, help="model folder from `train`")
    bfl.add_argument("--rules", type=Path, help="rules YAML (default: built in)")
    bfl.add_argument("beam_args", nargs=argparse.REMAINDER,
                     help="Beam pipeline options after --")

    sch_ = command("schedule", cmd_schedule,
                   "install (or --print) the crontab entry for the nightly backfill")
    sch_.add_argument("action", choices=("install", "remove"))
    sch_.add_argument("--print", action="store_true", help="print the entry, change nothing")
    sch_.add_argument("--at", default="02:00", help="time of day, HH:MM (default 02:00)")
    sch_.add_argument("--input", help="dataset folder whose day partitions arrive nightly")
    sch_.add_argument("--log", default="out/logs/backfill.log", help="where cron's runs log")

    stk = command("stack", cmd_stack,
                  "start, stop and inspect the local Kafka, Cassandra and Redis")
    stk.add_argument("stack_args", nargs=argparse.REMAINDER, metavar="up|down|status|logs ...",
                     help="see `stack -- --help`")

    from fraud_detection.transforms.kernel import DELAY_DAYS, WINDOW_DAYS
    from fraud_detection.transforms.rules import DEFAULT_RULES_FILE

    def feature_args(sub: argparse.ArgumentParser, reads: bool = True) -> None:
        sub.add_argument("--input", help="Parquet glob or dataset folder (default: data_dir)")
        if reads:
            sub.add_argument("--features", metavar="PREFIX",
                             help="read the table `features --out PREFIX` wrote instead "
                                  "of computing it from --input")
        sub.add_argument("--rules", type=Path, default=DEFAULT_RULES_FILE, help="rules YAML")
        sub.add_argument("--label-delay-days", type=int, default=DELAY_DAYS,
                         help="a counterparty's labels count this many days after its "
                              f"transactions (default {DELAY_DAYS})")
        sub.add_argument("--counterparty-window-days", type=_positive_int,
                         default=WINDOW_DAYS, help="days of labelled history behind "
                                                   f"counterparty_risk (default {WINDOW_DAYS})")
        sub.add_argument("beam_args", nargs=argparse.REMAINDER,
                         help="Beam pipeline options after --, e.g. -- --runner=PrismRunner")

    fea = command("features", cmd_features,
                  "compute the feature table once (detection's own kernel, labels and "
                  "rules' score included) for train and evaluate to read")
    fea.add_argument("--out", required=True, metavar="PREFIX",
                     help="path prefix of the Parquet files, e.g. data/features/world")
    feature_args(fea, reads=False)

    trn = command("train", cmd_train,
                  "train the fraud model on labelled history, with the pipeline's features")
    feature_args(trn)
    trn.add_argument("--model-dir", type=Path, default=Path("models/current"),
                     help="where model.pkl and model.json go (default models/current)")
    trn.add_argument("--from", dest="since", type=_date, metavar="YYYY-MM-DD",
                     help="first day to train on (default: the first; earlier days still "
                          "feed the features)")
    trn.add_argument("--until", type=_date, metavar="YYYY-MM-DD",
                     help="last day to train on (default: all)")
    trn.add_argument("--select", action="store_true",
                     help="compare the model families and settings of model.GRID by "
                          "prequential average precision (weeks stepping back from the "
                          "window's end, each fitted on the days before it less the label "
                          "delay) and keep the best; the figures go to grid.json beside it")

    evl = command("evaluate", cmd_evaluate,
                  "time-split evaluation: the model, the rules and the seed rule side by "
                  "side, each figure with its bootstrap interval over the test days")
    feature_args(evl)
    evl.add_argument("--train-days", type=_positive_int, default=30,
                     help="training window length, from --train-from (default: the "
                          "input's first day); --train-to sets its end instead")
    evl.add_argument("--delay-days", type=int, default=7,
                     help="days between training and testing (labels arrive late); "
                          "--test-from sets the test start instead")
    evl.add_argument("--test-days", type=_positive_int, default=21,
                     help="test window length; --test-to sets its end instead")
    for flag, what in (("--train-from", "first training day"),
                       ("--train-to", "last training day"),
                       ("--test-from", "first test day"), ("--test-to", "last test day")):
        evl.add_argument(flag, type=_date, metavar="YYYY-MM-DD",
                         help=f"{what}; every input day before the test window's end "
                              "feeds the features, only the windows feed the model and "
                              "the metrics" if flag == "--test-to" else what)
    evl.add_argument("--k", type=_positive_int, default=100,
                     help="accounts an analyst reviews per day (precision@k)")
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

    rul = command("rules", cmd_rules,
                  "the rules table detection re-reads while it runs: list, load, pause, "
                  "resume, delete")
    rul.add_argument("action", choices=("list", "load", "pause", "resume", "delete"))
    rul.add_argument("target", nargs="?",
                     help="YAML file (load) or rule id (pause, resume, delete)")

    sch = command("schema", cmd_schema,
                  "create the keyspace and apply the schema's pending migrations (idempotent)")
    sch.add_argument("action", choices=("apply",))

    add = command("add", cmd_add, "add a bank, user, account or merchant (checked, no duplicates)")
    kinds = add.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    from fraud_detection.records import ENTITY_FIELDS

    for kind, flags in ENTITY_FIELDS.items():
        sub = kinds.add_parser(kind, help=f"add a {kind}", parents=[settings_flags])
        for flag in flags:
            optional = flag.endswith("_at")
            sub.add_argument("--" + flag.replace("_", "-"), dest=flag, required=not optional,
                             help="ISO-8601 time (default: now)" if optional else None)

    ent = command("entities", cmd_entities,
                  "add the banks, users and accounts sent to the entity Kafka topics")
    ent.add_argument("action", choices=("consume",))
    ent.add_argument("--idle-seconds", type=float, default=None,
                     help="stop after this long without a message (default: run until ^C)")

    stre = command("stream", cmd_stream,
                   "score the transactions topic live: Kafka -> DetectFraud -> Cassandra + alerts")
    stre.add_argument("--rules", default="table",
                      help="'table' (the rules table, re-read while running; default) or a "
                           "rules YAML file")
    stre.add_argument("--model-dir", type=Path, help="model folder from `train`")
    stre.add_argument("--start-from", choices=("earliest", "committed"), default="earliest",
                      help="earliest retained offsets (default: rebuilds account histories, "
                           "rewrites the same rows) or the consumer group's committed ones")
    stre.add_argument("--bounded", action="store_true",
                      help="read to the topics' current ends, then finish (catch-up, tests)")
    stre.add_argument("beam_args", nargs=argparse.REMAINDER,
                      help="Beam pipeline options after --, e.g. -- --runner=PrismRunner")

    dash = command("dashboard", cmd_dashboard,
                   "run the Streamlit dashboard (customers, banks, analysts, operators)")
    dash.add_argument("--port", type=_port, default=8501)

    lgn = command("logins", cmd_logins, "add a dashboard login with a role (password from "
                                        "an environment variable)")
    lgn.add_argument("action", choices=("add",))
    lgn.add_argument("username")
    lgn.add_argument("--role", required=True, choices=("customer", "bank", "analyst", "admin"))
    lgn.add_argument("--user-id", help="the user a customer login sees")
    lgn.add_argument("--bank-id", help="the bank a bank login sees")
    lgn.add_argument("--password-env", default="FRAUD_LOGIN_PASSWORD",
                     help="environment variable holding the password "
                          "(default FRAUD_LOGIN_PASSWORD)")

    stm = command("streamers", cmd_streamers,
                  "replay transaction sources into Kafka at a rate; pause, resume, stop, status")
    stm.add_argument("action", choices=("start", "enable", "disable", "interrupt", "status"),
                     help="start: run the configured streamers here until they end or ^C; "
                          "enable / disable / interrupt: resume / pause / stop running ones")
    stm.add_argument("names", nargs="*", help="streamer names (start: a subset of the config)")
    stm.add_argument("--file", type=Path, default=Path("streamers.yaml"),
                     help="streamer config YAML for start (default: streamers.yaml)")

    command("config", cmd_config, "print the effective settings")
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. Every failure is one line on stderr and a non-zero exit; the
    details (library warnings, tracebacks) go to the log file, and with --verbose to the
    terminal too."""
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
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
