import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraud_detection.beam_pipelines.validate import run
from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.errors import UsageError
from fraud_detection.io.parquet import TRANSACTION_SCHEMA, read_transactions


def test_every_row_is_valid_or_dead_lettered(tmp_path):
    data = tmp_path / "world"
    generate(WorldConfig(days=3, seed=1, rows=2_000), data)
    good = read_transactions(data).to_pylist()
    mangled = [
        {**good[0], "transaction_id": "bad-1", "amount_cents": -10},
        {**good[1], "transaction_id": "bad-2", "currency": "ZZZ", "tx_type": "WIRE"},
        {**good[2], "transaction_id": "bad-3", "account_id": None},
    ]
    folder = data / "transactions" / "date=2024-01-02"
    pq.write_table(pa.Table.from_pylist(mangled, schema=TRANSACTION_SCHEMA),
                   folder / "part-09999.parquet")

    summary = run(["--input", str(data), "--dead_letters", str(tmp_path / "dl" / "v")])

    assert summary.read == len(good) + 3
    assert summary.read == summary.valid + summary.dead_lettered
    assert summary.dead_lettered == 3
    letters = [json.loads(line) for f in (tmp_path / "dl").glob("v*.jsonl")
               for line in f.read_text().splitlines()]
    reasons = {json.loads(d["raw"])["transaction_id"]: d["reason"] for d in letters}
    assert reasons["bad-1"] == "amount_cents: negative (-10)"
    assert "currency: unknown" in reasons["bad-2"] and "tx_type:" in reasons["bad-2"]
    assert reasons["bad-3"] == "account_id: missing"


def test_input_must_match_files(tmp_path):
    with pytest.raises(UsageError, match="no Parquet files match"):
        run(["--input", str(tmp_path)])
    with pytest.raises(UsageError, match="--input is required"):
        run([])
