"""The rows a streamer replays, numbered from 0 in a fixed order, so `rows_from(n)`
after a restart gives exactly the rows after the last one sent."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from fraud_detection.config import Settings
from fraud_detection.datagen import paysim
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import read_transactions, transaction_files
from fraud_detection.streamers.config import StreamerConfig

PAYSIM_START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _parquet_rows(root: Path, first: int) -> Iterator[dict[str, Any]]:
    table = read_transactions(root)
    # Event-time order, ties by id: the order a live bank would have sent them in.
    order = pc.sort_indices(table, [("event_time", "ascending"),
                                    ("transaction_id", "ascending")])
    table = table.take(order).slice(first)
    for batch in table.to_batches(max_chunksize=5_000):
        yield from batch.to_pylist()


def _paysim_rows(csv_path: Path, first: int) -> Iterator[dict[str, Any]]:
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as handle:
        lines = enumerate(handle, start=1)
        next(lines, None)  # header
        data = ((n, line) for n, line in lines if line.strip())
        for line_no, line in itertools.islice(data, first, None):
            row = next(csv.reader([line]), [])
            raw, _ = paysim.map_row(row, line_no, PAYSIM_START, "USD", "paysim")
            # A row that is not a transaction still goes out, as its cells, so the
            # pipeline dead-letters it with the reason rather than it vanishing here.
            yield raw if raw is not None else {"paysim_line": line_no, "cells": row}


def generated_world(config: StreamerConfig, settings: Settings) -> Path:
    """The generator's world, made once per (seed, days, rows) and reused after."""
    root = settings.stack_dir.parent / "streamer-worlds" / \
        f"seed{config.seed}-days{config.days}-rows{config.rows}"
    if not transaction_files(root):
        generate(WorldConfig(days=config.days, seed=config.seed, rows=config.rows), root)
    return root


def rows_from(config: StreamerConfig, first: int, settings: Settings) -> Iterator[dict[str, Any]]:
    if config.source == "parquet":
        return _parquet_rows(Path(config.path), first)
    if config.source == "paysim":
        return _paysim_rows(Path(config.path), first)
    return _parquet_rows(generated_world(config, settings), first)
