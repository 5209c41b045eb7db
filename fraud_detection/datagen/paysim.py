"""PaySim CSV -> canonical transactions in the shared Parquet layout, streamed in chunks.

PaySim has steps (hours) instead of timestamps, customer (C...) and merchant (M...)
names instead of entities, and decimal text amounts. Rows are validated by the one
validation function; a bad row is written to OUT/rejected with its line number.

PaySim names no countries and no e-mail addresses: the bank, its users and the merchants
get the `country` given (default US, with the default currency USD), and users no e-mail.
The entities are checked with the same function `batch` checks them with, so an import
that succeeds loads.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

from fraud_detection.errors import UsageError
from fraud_detection.io import parquet
from fraud_detection.records import (
    LEGIT,
    TRANSACTION_FIELDS,
    validate_entity,
    validate_transaction,
)

HEADER = ["step", "type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig", "nameDest",
          "oldbalanceDest", "newbalanceDest", "isFraud", "isFlaggedFraud"]
FRAUD_LABEL = "paysim_fraud"
ERRORS_FILE = Path("rejected") / "paysim-errors.jsonl"
DEFAULT_COUNTRY = "US"
_CENT = Decimal("0.01")


class PaysimFormatError(UsageError):
    pass


@dataclass(frozen=True)
class ImportReport:
    rows_read: int
    rows_written: int
    rows_rejected: int
    files_written: int
    errors_path: Path | None

    def summary(self) -> str:
        text = (f"read {self.rows_read} rows, wrote {self.rows_written} transactions in "
                f"{self.files_written} files, rejected {self.rows_rejected}")
        return text + (f" (reasons in {self.errors_path})" if self.errors_path else "")


def to_cents(text: str, name: str, errors: list[str]) -> int | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        errors.append(f"{name}: not a number: {text[:40]!r}")
        return None
    if not value.is_finite():
        errors.append(f"{name}: not a finite number: {text[:40]!r}")
        return None
    return int((value / _CENT).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def map_row(row: list[str], line_no: int, start: dt.datetime, currency: str,
            bank_id: str) -> tuple[dict | None, list[str]]:
    """A PaySim row as a raw canonical record, or the reasons it cannot be one."""
    if len(row) != len(HEADER):
        return None, [f"expected {len(HEADER)} columns, got {len(row)}"]
    cells = dict(zip(HEADER, row, strict=True))
    errors: list[str] = []
    try:
        step = int(cells["step"])
    except ValueError:
        step = None
        errors.append(f"step: not a whole number: {cells['step'][:20]!r}")
    if step is not None and step < 1:
        errors.append(f"step: must be at least 1, got {step}")
    amount = to_cents(cells["amount"], "amount", errors)
    before = to_cents(cells["oldbalanceOrg"], "oldbalanceOrg", errors)
    after = to_cents(cells["newbalanceOrig"], "newbalanceOrig", errors)
    for flag in ("isFraud", "isFlaggedFraud"):
        if cells[flag] not in ("0", "1"):
            errors.append(f"{flag}: expected 0 or 1, got {cells[flag][:20]!r}")
    if errors:
        return None, errors
    dest = cells["nameDest"]
    return {
        "transaction_id": f"paysim-{line_no}",
        "event_time": start + dt.timedelta(hours=step - 1),
        "bank_id": bank_id,
        "user_id": cells["nameOrig"],
        "account_id": cells["nameOrig"],
        "counterparty_id": dest,
        "counterparty_type": "merchant" if dest.startswith("M") else "account",
        "tx_type": cells["type"],
        "amount_cents": amount,
        "currency": currency,
        "balance_before_cents": before,
        "balance_after_cents": after,
        "label": FRAUD_LABEL if cells["isFraud"] == "1" else LEGIT,
        "source": "paysim",
        "source_flagged": cells["isFlaggedFraud"] == "1",
    }, []


class _Chunk:
    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in TRANSACTION_FIELDS}
        self.accounts: set[str] = set()
        self.merchants: set[str] = set()
        self.rows = 0

    def add(self, tx) -> None:
        for name in TRANSACTION_FIELDS:
            self.columns[name].append(getattr(tx, name))
        self.accounts.add(tx.account_id)
        if tx.counterparty_type == "merchant":
            self.merchants.add(tx.counterparty_id)
        else:
            self.accounts.add(tx.counterparty_id)
        self.rows += 1


def _bank(bank_id: str, country: str, currency: str) -> dict:
    return {"bank_id": bank_id, "name": "PaySim", "country": country, "currency": currency}


def _account(account_id: str, bank_id: str, currency: str, start: dt.datetime) -> dict:
    return {"account_id": account_id, "user_id": account_id, "bank_id": bank_id,
            "account_type": "checking", "currency": currency, "opened_at": start}


def _user(user_id: str, bank_id: str, country: str, start: dt.datetime) -> dict:
    return {"user_id": user_id, "bank_id": bank_id, "name": user_id, "email": "",
            "country": country, "created_at": start}


def _merchant(merchant_id: str, country: str) -> dict:
    return {"merchant_id": merchant_id, "name": merchant_id, "category": "unknown",
            "country": country}


def check_entity_settings(bank_id: str, country: str, currency: str,
                          start: dt.datetime) -> None:
    """Fails in one line when the options would make entities `batch` refuses. Every
    entity is built from these options and ids the transaction check has passed, so
    checking one of each kind covers them all."""
    for kind, raw in (("bank", _bank(bank_id, country, currency)),
                      ("account", _account("C1", bank_id, currency, start)),
                      ("user", _user("C1", bank_id, country, start)),
                      ("merchant", _merchant("M1", country))):
        entity, errors = validate_entity(kind, raw)
        if entity is None:
            raise UsageError(f"the PaySim {kind} would be invalid: {'; '.join(errors)}")


def _write_chunk(chunk: _Chunk, out: Path, part: int, start: dt.datetime, currency: str,
                 bank_id: str, country: str) -> int:
    # Entities are deduplicated per chunk only: memory stays bounded, and the loader
    # upserts, so a repeat across chunks costs nothing.
    accounts = sorted(chunk.accounts)
    parquet.write_entities("accounts", (_account(a, bank_id, currency, start)
                                        for a in accounts), out, part)
    parquet.write_entities("users", (_user(a, bank_id, country, start) for a in accounts),
                           out, part)
    parquet.write_entities("merchants", (_merchant(m, country) for m in sorted(chunk.merchants)),
                           out, part)
    table = parquet.transactions_table(chunk.columns)
    return len(parquet.write_partitioned_transactions(table, out, part))


def import_paysim(csv_path: Path, out: Path,
                  start: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                  currency: str = "USD", bank_id: str = "paysim", chunk_rows: int = 200_000,
                  progress: bool = False, country: str = DEFAULT_COUNTRY) -> ImportReport:
    """Convert a PaySim CSV, holding at most `chunk_rows` rows in memory."""
    check_entity_settings(bank_id, country, currency, start)
    rows_read = rows_rejected = files = 0
    errors_path = out / ERRORS_FILE
    errors_file = None
    bar = None
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader([handle.readline()]), [])
        if [h.strip() for h in header] != HEADER:
            raise PaysimFormatError(
                f"{csv_path}: not a PaySim CSV (expected header {','.join(HEADER)})")
        out.mkdir(parents=True, exist_ok=True)
        parquet.write_entities("banks", [_bank(bank_id, country, currency)], out)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=csv_path.stat().st_size, unit="B", unit_scale=True,
                       desc="import-paysim")
        chunk, part = _Chunk(), 0
        try:
            for line_no, line in enumerate(handle, start=2):
                if bar is not None:
                    bar.update(len(line))
                if not line.strip():
                    continue
                rows_read += 1
                row = next(csv.reader([line]), [])
                raw, errors = map_row(row, line_no, start, currency, bank_id)
                tx = None
                if raw is not None:
                    tx, errors = validate_transaction(raw)
                if tx is None:
                    rows_rejected += 1
                    if errors_file is None:
                        errors_path.parent.mkdir(parents=True, exist_ok=True)
                        errors_file = open(errors_path, "w", encoding="utf-8")  # noqa: SIM115
                    errors_file.write(json.dumps(
                        {"line": line_no, "errors": errors, "raw": line.rstrip("\r\n")}) + "\n")
                    continue
                chunk.add(tx)
                if chunk.rows >= chunk_rows:
                    files += _write_chunk(chunk, out, part, start, currency, bank_id,
                                          country)
                    chunk, part = _Chunk(), part + 1
            if chunk.rows:
                files += _write_chunk(chunk, out, part, start, currency, bank_id, country)
        finally:
            if errors_file is not None:
                errors_file.close()
            if bar is not None:
                bar.close()
    return ImportReport(rows_read=rows_read, rows_written=rows_read - rows_rejected,
                        rows_rejected=rows_rejected, files_written=files,
                        errors_path=errors_path if rows_rejected else None)
