"""The Parquet layout every producer writes and every reader expects.

    OUT/transactions/date=YYYY-MM-DD/part-NNNNN.parquet
    OUT/entities/{banks,users,accounts,merchants}/part-NNNNN.parquet
"""

from __future__ import annotations

import datetime as dt
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraud_detection.errors import UsageError
from fraud_detection.records import (
    ENTITY_FIELDS,
    ENTITY_KINDS,
    TRANSACTION_FIELDS,
    Entity,
    Transaction,
    validate_entity,
)

TRANSACTIONS_DIR = "transactions"
ENTITIES_DIR = "entities"

_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
                dt.datetime: pa.timestamp("us", tz="UTC")}


def arrow_type(hint: Any) -> pa.DataType:
    """A record field's Arrow type, from its annotation (Optional: the same, nullable)."""
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(hint) is tuple:
        return pa.list_(arrow_type(args[0]))
    if args:  # X | None
        return arrow_type(args[0])
    return _ARROW_TYPES[hint]


def arrow_fields(record: type, names: Sequence[str]) -> list[pa.Field]:
    hints = typing.get_type_hints(record)
    return [pa.field(name, arrow_type(hints[name])) for name in names]


TRANSACTION_SCHEMA = pa.schema(arrow_fields(Transaction, TRANSACTION_FIELDS))
# Entity kinds by their folder under entities/ (the plural of the kind).
ENTITY_SCHEMAS: dict[str, pa.Schema] = {
    f"{kind}s": pa.schema(arrow_fields(cls, ENTITY_FIELDS[kind]))
    for kind, cls in ENTITY_KINDS.items()}
ENTITY_FOLDERS = tuple(ENTITY_SCHEMAS)


def transactions_table(columns: Mapping[str, Any]) -> pa.Table:
    """An Arrow table in TRANSACTION_SCHEMA from column arrays or lists."""
    return pa.table(
        {f.name: pa.array(columns[f.name], type=f.type) for f in TRANSACTION_SCHEMA},
        schema=TRANSACTION_SCHEMA,
    )


def write_partitioned_transactions(table: pa.Table, out: Path, part: int = 0) -> list[Path]:
    """Write one file per UTC day under OUT/transactions/date=YYYY-MM-DD/."""
    if table.num_rows == 0:
        return []
    days = pc.floor_temporal(table["event_time"], unit="day").cast(pa.int64()).to_numpy()
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    bounds = np.flatnonzero(np.diff(sorted_days)) + 1
    written = []
    for chunk in np.split(order, bounds):
        day_us = int(days[chunk[0]])
        date = dt.datetime.fromtimestamp(day_us / 1e6, tz=dt.UTC).date()
        folder = out / TRANSACTIONS_DIR / f"date={date.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{part:05d}.parquet"
        pq.write_table(table.take(chunk), path, compression="zstd")
        written.append(path)
    return written


def write_entities(kind: str, rows: Iterable[Mapping[str, Any]] | pa.Table, out: Path,
                   part: int = 0) -> Path:
    schema = ENTITY_SCHEMAS[kind]
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows), schema)
    folder = out / ENTITIES_DIR / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{part:05d}.parquet"
    pq.write_table(table.cast(schema), path, compression="zstd")
    return path


def transaction_files(root: Path) -> list[Path]:
    """The transaction Parquet files of a dataset, in date order."""
    return sorted((root / TRANSACTIONS_DIR).glob("date=*/*.parquet"))


def dataset_root(input_value: str) -> Path | None:
    """The dataset folder an --input names, so its entities/ can be read too: the folder
    itself, or the folder whose transactions/ a glob or file lies in
    (DATASET/transactions/date=*/*.parquet, as every producer writes it). None when the
    input is not in a local dataset with entities."""
    static = re.split(r"[*?[]", input_value, maxsplit=1)[0]  # the part before any wildcard
    if not static or "://" in static:
        return None
    path = Path(static)
    if (path / ENTITIES_DIR).is_dir():
        return path
    for folder in (path, *path.parents):
        if folder.name == TRANSACTIONS_DIR and (folder.parent / ENTITIES_DIR).is_dir():
            return folder.parent
    return None


def entity_pattern(root: Path, kind: str) -> str | None:
    """The glob of one entity kind's Parquet files in a dataset, None when it has none."""
    folder = root / ENTITIES_DIR / kind
    return str(folder / "*.parquet") if any(folder.glob("*.parquet")) else None


def read_columns(pattern: str, columns: Sequence[str]) -> pa.Table:
    """Only `columns` of every transaction file a glob matches (any Beam filesystem): a
    quick look at a dataset before a pipeline runs over all of it."""
    from apache_beam.io.filesystems import FileSystems

    schema = pa.schema([TRANSACTION_SCHEMA.field(name) for name in columns])
    tables = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        try:
            with FileSystems.open(match.path, mime_type="application/octet-stream",
                                  compression_type="uncompressed") as handle:
                tables.append(pq.read_table(handle, columns=list(columns)).cast(schema))
        except (OSError, pa.ArrowException, KeyError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"cannot read {match.path}: {reason}") from None
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_valid_transactions(pattern: str) -> tuple[pa.Table, int]:
    """Every transaction a glob matches that passes validation, as a canonical table, and
    how many did not: for in-process work (the kernel) on what a pipeline would read."""
    from fraud_detection.records import validate_transaction
    from fraud_detection.transforms.kernel import table_of

    rows = read_columns(pattern, TRANSACTION_SCHEMA.names).to_pylist()
    valid = [tx for tx, _ in map(validate_transaction, rows) if tx is not None]
    return table_of(valid), len(rows) - len(valid)


def read_transactions(root: Path) -> pa.Table:
    files = transaction_files(root)
    if not files:
        return TRANSACTION_SCHEMA.empty_table()
    return pa.concat_tables(read_file(f, TRANSACTION_SCHEMA) for f in files)


def read_entities(root: Path, kind: str) -> pa.Table:
    files = sorted((root / ENTITIES_DIR / kind).glob("*.parquet"))
    if not files:
        return ENTITY_SCHEMAS[kind].empty_table()
    return pa.concat_tables(read_file(f, ENTITY_SCHEMAS[kind]) for f in files)


def entity_records(root: Path, kind: str) -> list[Entity]:
    """The entities of one kind (banks, users, accounts, merchants) as records."""
    records = []
    for row in read_entities(root, kind).to_pylist():
        entity, errors = validate_entity(kind.removesuffix("s"), row)
        if entity is None:
            raise ValueError(f"{root}: {kind} row {row!r}: {'; '.join(errors)}")
        records.append(entity)
    return records


class UnreadableFileError(UsageError):
    """A Parquet file that is damaged, truncated or not Parquet at all; names the file."""


def _unreadable(path: str | Path, exc: Exception) -> UnreadableFileError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnreadableFileError(f"cannot read {path}: {reason}")


def read_file(path: Path, schema: pa.Schema) -> pa.Table:
    """One Parquet file in schema; a damaged file is an error naming it."""
    try:
        return pq.read_table(path, schema=schema)
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None


def check_readable(paths: Iterable[str]) -> None:
    """Opens each file's footer (its magic bytes and metadata, not its rows), so a damaged
    or truncated file fails before a pipeline has read, and written, anything: one error
    naming the first such file, and how many more there are."""
    from apache_beam.io.filesystems import FileSystems

    bad: list[UnreadableFileError] = []
    for path in paths:
        try:
            with FileSystems.open(path, mime_type="application/octet-stream",
                                  compression_type="uncompressed") as handle:
                pq.ParquetFile(handle)
        except (OSError, pa.ArrowException) as exc:
            bad.append(_unreadable(path, exc))
    if bad:
        more = f" (and {len(bad) - 1} more damaged files)" if len(bad) > 1 else ""
        raise UnreadableFileError(f"{bad[0]}{more}")
