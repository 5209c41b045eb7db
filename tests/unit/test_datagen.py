import json

import numpy as np
import pyarrow.compute as pc
import pytest

from fraud_detection.datagen.world import WorldConfig, generate
from fraud_detection.io.parquet import read_entities, read_transactions, transaction_files
from fraud_detection.records import FRAUD_LABELS, LEGIT, validate_transaction
from fraud_detection.transforms.benford import benford_test

SCENARIOS = set(FRAUD_LABELS) - {"paysim_fraud", "analyst_confirmed"}  # not generated


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    report = generate(WorldConfig(days=30, seed=7, rows=20_000), out)
    return out, report, read_transactions(out)


def test_same_seed_same_world(world, tmp_path):
    _out, report, table = world
    again = generate(WorldConfig(days=30, seed=7, rows=20_000), tmp_path)
    assert again.labels == report.labels
    assert read_transactions(tmp_path).equals(table)
    generate(WorldConfig(days=30, seed=8, rows=20_000), tmp_path / "other")
    assert not read_transactions(tmp_path / "other").equals(table)


def test_every_scenario_is_present_and_counted(world):
    out, report, table = world
    labels = table["label"].to_pylist()
    assert set(labels) == SCENARIOS | {LEGIT}
    assert report.labels == {k: labels.count(k) for k in set(labels)}
    assert report.rows == table.num_rows
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == report.labels
    assert len(transaction_files(out)) == 30


def test_rows_are_valid_and_ids_unique(world):
    _, _, table = world
    rows = table.to_pylist()
    assert all(validate_transaction(r)[1] == [] for r in rows)
    assert len({r["transaction_id"] for r in rows}) == len(rows)


def test_entities_are_consistent(world):
    out, _, table = world
    accounts = read_entities(out, "accounts")
    users = set(read_entities(out, "users")["user_id"].to_pylist())
    banks = set(read_entities(out, "banks")["bank_id"].to_pylist())
    merchants = set(read_entities(out, "merchants")["merchant_id"].to_pylist())
    owner = dict(zip(accounts["account_id"].to_pylist(), accounts["user_id"].to_pylist(),
                     strict=True))
    assert set(owner.values()) <= users
    assert set(accounts["bank_id"].to_pylist()) <= banks
    for row in table.select(["account_id", "user_id", "counterparty_id",
                             "counterparty_type"]).to_pylist():
        assert owner[row["account_id"]] == row["user_id"]
        if row["counterparty_type"] == "merchant":
            assert row["counterparty_id"] in merchants
        elif row["counterparty_type"] == "account":
            assert row["counterparty_id"] in owner


def test_balances_follow_each_account_in_event_time(world):
    _, _, table = world
    sign = np.where(table["tx_type"].to_numpy(zero_copy_only=False) == "CASH_IN", 1, -1)
    before = table["balance_before_cents"].to_numpy()
    after = table["balance_after_cents"].to_numpy()
    assert np.array_equal(before + sign * table["amount_cents"].to_numpy(), after)


def test_legit_amounts_follow_benford_per_bank_and_structuring_does_not(world):
    _, _, table = world
    legit = table.filter(pc.equal(table["label"], LEGIT))
    for bank in set(legit["bank_id"].to_pylist()):
        amounts = legit.filter(pc.equal(legit["bank_id"], bank))["amount_cents"].to_numpy()
        result = benford_test(amounts)
        assert result.mad <= 0.012, (bank, result.mad)
    structuring = table.filter(pc.equal(table["label"], "structuring"))
    assert benford_test(structuring["amount_cents"].to_numpy()).level == "nonconformity"


def test_scenario_shapes(world):
    _, _, table = world
    rows = table.to_pylist()
    takeover = [r for r in rows if r["label"] == "account_takeover"]
    cash_outs = [r for r in takeover if r["tx_type"] == "CASH_OUT"]
    drains = [r for r in takeover if r["tx_type"] == "TRANSFER"]
    assert cash_outs and drains
    for cash_out in cash_outs:
        received = sum(r["amount_cents"] for r in drains
                       if r["counterparty_id"] == cash_out["account_id"])
        assert cash_out["amount_cents"] == received
        assert cash_out["balance_after_cents"] == 0
    tiny = [r for r in rows if r["label"] == "card_testing" and r["amount_cents"] < 500]
    assert len(tiny) >= 10
    structuring = [r["amount_cents"] for r in rows if r["label"] == "structuring"]
    assert all(800_000 <= a < 1_000_000 and a % 5_000 == 0 for a in structuring)
    # A compromised merchant cashes out stolen cards: payments from accounts that had
    # not paid it before, while its own customers' payments stay legitimate.
    stolen = [r for r in rows if r["label"] == "compromised_merchant"]
    assert stolen and all(r["tx_type"] == "PAYMENT" for r in stolen)
    first_paid = {}
    for r in sorted(rows, key=lambda r: r["event_time"]):
        if r["label"] == LEGIT and r["counterparty_type"] == "merchant":
            first_paid.setdefault((r["account_id"], r["counterparty_id"]), r["event_time"])
    strangers = [r for r in stolen
                 if first_paid.get((r["account_id"], r["counterparty_id"]),
                                   r["event_time"]) >= r["event_time"]]
    assert len(strangers) >= 0.9 * len(stolen)
    compromised = {r["counterparty_id"] for r in stolen}
    assert any(r["label"] == LEGIT and r["counterparty_id"] in compromised for r in rows)


def test_config_is_checked():
    for bad in ({"days": 1}, {"rows": 10}, {"banks": 0}, {"fraud_scale": -1}):
        with pytest.raises(ValueError):
            WorldConfig(**bad)


def test_checked_in_sample_is_what_its_manifest_generates(tmp_path):
    import datetime as dt
    from pathlib import Path

    sample = Path(__file__).parents[2] / "data" / "sample"
    manifest = json.loads((sample / "manifest.json").read_text())
    config = {**manifest["config"], "start": dt.date.fromisoformat(manifest["config"]["start"])}
    report = generate(WorldConfig(**config), tmp_path)
    assert report.labels == manifest["labels"]
    assert read_transactions(tmp_path).equals(read_transactions(sample))
