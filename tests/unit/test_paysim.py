import datetime as dt
import json
import random
import tracemalloc

import pyarrow.compute as pc
import pytest

from fraud_detection.cli import main
from fraud_detection.datagen.paysim import HEADER, PaysimFormatError, import_paysim
from fraud_detection.errors import UsageError
from fraud_detection.io.parquet import (
    ENTITY_FOLDERS,
    dataset_root,
    entity_pattern,
    entity_records,
    read_entities,
    read_transactions,
    transaction_files,
)
from fraud_detection.records import Bank

UTC = dt.UTC
ROWS = [
    "1,PAYMENT,9839.64,C1231006815,170136.0,160296.36,M1979787155,0.0,0.0,0,0",
    "1,TRANSFER,181.0,C1305486145,181.0,0.0,C553264065,0.0,0.0,1,0",
    "1,CASH_OUT,181.0,C840083671,181.0,0.0,C38997010,21182.0,0.0,1,0",
    "2,DEBIT,0.1,C712410124,41720.0,41719.9,C195600860,41898.0,40348.79,0,0",
    "25,CASH_IN,200000000.5,C1,0.0,200000000.5,C2,0.0,0.0,0,1",
    "3,PAYMENT,12.5,C9,1.0,0.0",                                   # line 7: 6 columns
    "3,PAYMENT,abc,C9,1.0,0.0,M1,0.0,0.0,0,0",                     # line 8: bad number
    "3,PAYMENT,-5.00,C9,1.0,0.0,M1,0.0,0.0,0,0",                   # line 9: negative
    "0,PAYMENT,5.00,C9,1.0,0.0,M1,0.0,0.0,0,0",                    # line 10: step 0
    "3,WIRE,5.00,C9,1.0,0.0,M1,0.0,0.0,0,2",                       # line 11: type, flag
]


def write_csv(path, rows):
    path.write_text(",".join(HEADER) + "\n" + "\n".join(rows) + "\n")
    return path


def by_id(table):
    return {r["transaction_id"]: r for r in table.to_pylist()}


def test_rows_map_to_canonical_transactions(tmp_path):
    report = import_paysim(write_csv(tmp_path / "p.csv", ROWS), tmp_path / "out")
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (10, 5, 5)
    rows = by_id(read_transactions(tmp_path / "out"))
    first = rows["paysim-2"]
    assert first == {
        "transaction_id": "paysim-2", "event_time": dt.datetime(2024, 1, 1, tzinfo=UTC),
        "bank_id": "paysim", "user_id": "C1231006815", "account_id": "C1231006815",
        "counterparty_id": "M1979787155", "counterparty_type": "merchant",
        "tx_type": "PAYMENT", "amount_cents": 983964, "currency": "USD",
        "balance_before_cents": 17013600, "balance_after_cents": 16029636,
        "label": "legit", "source": "paysim", "source_flagged": False,
    }
    assert rows["paysim-3"]["label"] == "paysim_fraud"
    assert rows["paysim-3"]["counterparty_type"] == "account"
    assert rows["paysim-5"]["amount_cents"] == 10
    assert rows["paysim-5"]["event_time"] == dt.datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert rows["paysim-6"]["amount_cents"] == 20000000050
    assert rows["paysim-6"]["source_flagged"] is True
    folders = {p.parent.name for p in transaction_files(tmp_path / "out")}
    assert folders == {"date=2024-01-01", "date=2024-01-02"}
    accounts = set(read_entities(tmp_path / "out", "accounts")["account_id"].to_pylist())
    assert {"C1231006815", "C553264065"} <= accounts
    assert read_entities(tmp_path / "out", "merchants")["merchant_id"].to_pylist() == [
        "M1979787155"]


def test_bad_rows_are_reported_with_line_numbers(tmp_path):
    report = import_paysim(write_csv(tmp_path / "p.csv", ROWS), tmp_path / "out")
    rejected = [json.loads(line) for line in report.errors_path.read_text().splitlines()]
    reasons = {r["line"]: " | ".join(r["errors"]) for r in rejected}
    assert sorted(reasons) == [7, 8, 9, 10, 11]
    assert "expected 11 columns, got 6" in reasons[7]
    assert "amount: not a number" in reasons[8]
    assert "amount_cents: negative" in reasons[9]
    assert "step: must be at least 1" in reasons[10]
    assert "isFlaggedFraud" in reasons[11]
    assert rejected[0]["raw"] == ROWS[5]
    assert "rejected 5" in report.summary()


def test_chunking_changes_files_not_content(tmp_path):
    source = write_csv(tmp_path / "p.csv", ROWS)
    small = import_paysim(source, tmp_path / "small", chunk_rows=2)
    whole = import_paysim(source, tmp_path / "whole", chunk_rows=1000)
    assert small.files_written > whole.files_written
    sort = [("transaction_id", "ascending")]
    assert read_transactions(tmp_path / "small").sort_by(sort).equals(
        read_transactions(tmp_path / "whole").sort_by(sort))


def test_wrong_header_is_fatal_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(PaysimFormatError, match="not a PaySim CSV") as caught:
        import_paysim(bad, tmp_path / "out")
    assert "\n" not in str(caught.value)


def synthetic_rows(n):
    rng = random.Random(1)
    types = ["PAYMENT", "TRANSFER", "CASH_OUT", "CASH_IN", "DEBIT"]
    for i in range(n):
        dest = f"M{rng.randrange(10**9)}" if i % 2 else f"C{rng.randrange(10**9)}"
        yield (f"{1 + i // 500},{rng.choice(types)},{rng.randrange(1, 10**7) / 100},"
               f"C{rng.randrange(10**9)},100.0,0.0,{dest},0.0,0.0,{int(i % 97 == 0)},0")


def peak_memory(source, out, chunk_rows):
    tracemalloc.start()
    try:
        report = import_paysim(source, out, chunk_rows=chunk_rows)
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_chunk_not_the_file(tmp_path):
    source = write_csv(tmp_path / "big.csv", list(synthetic_rows(20_000)))
    chunked, chunked_peak = peak_memory(source, tmp_path / "a", 1_000)
    whole, whole_peak = peak_memory(source, tmp_path / "b", 20_000)
    assert chunked.rows_written == whole.rows_written == 20_000
    assert chunked_peak * 4 < whole_peak, (chunked_peak, whole_peak)
    frauds = pc.sum(pc.equal(read_transactions(tmp_path / "a")["label"], "paysim_fraud"))
    assert frauds.as_py() == len(range(0, 20_000, 97))


def test_entities_pass_the_checks_batch_applies(tmp_path):
    out = tmp_path / "out"
    import_paysim(write_csv(tmp_path / "p.csv", ROWS), out, chunk_rows=2)
    entities = {kind: entity_records(out, kind) for kind in ENTITY_FOLDERS}  # raises if invalid
    assert entities["banks"] == [Bank("paysim", "PaySim", "US", "USD")]
    assert {u.country for u in entities["users"]} == {"US"}
    assert {u.email for u in entities["users"]} == {""}  # PaySim knows no addresses
    assert {m.country for m in entities["merchants"]} == {"US"}
    assert {a.account_id for a in entities["accounts"]} == {u.user_id for u in entities["users"]}


def test_country_is_an_option_checked_before_anything_is_written(tmp_path):
    source = write_csv(tmp_path / "p.csv", ROWS)
    import_paysim(source, tmp_path / "gb", country="GB", currency="GBP")
    assert entity_records(tmp_path / "gb", "banks")[0].country == "GB"
    with pytest.raises(UsageError, match="country: expected an ISO 3166") as caught:
        import_paysim(source, tmp_path / "bad", country="usa")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "bad").exists()


def test_cli_import_then_batch_finds_the_entities_from_a_glob_too(tmp_path):
    out = tmp_path / "out"
    assert main(["import-paysim", str(write_csv(tmp_path / "p.csv", ROWS)), "--out", str(out),
                 "--quiet", "--country", "KE", "--currency", "KES"]) == 0
    assert entity_records(out, "banks")[0] == Bank("paysim", "PaySim", "KE", "KES")
    for given in (str(out), f"{out}/", f"{out}/transactions/date=*/*.parquet",
                  str(transaction_files(out)[0])):
        assert dataset_root(given) == out, given
    assert dataset_root(str(tmp_path / "elsewhere" / "*.parquet")) is None
    assert entity_pattern(out, "users").endswith("users/*.parquet")
