"""PaySim end to end, as a user runs it: `import-paysim` on a PaySim-format CSV, then
`batch` on the importer's output addressed by a glob, into the real Cassandra; the
store's queries (the dashboard's) return PaySim's bank, users, accounts, merchants and
every transaction."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict

import pytest

from fraud_detection.cli import main
from fraud_detection.datagen.paysim import HEADER
from fraud_detection.io.parquet import read_transactions
from fraud_detection.records import Bank
from fraud_detection.store import queries
from fraud_detection.store.keyspace import connect

pytestmark = pytest.mark.integration

# Three days (steps 1, 25, 49), merchant and account counterparties, two frauds, and an
# account (C200) that both receives and sends.
ROWS = [
    "1,PAYMENT,9839.64,C100,170136.0,160296.36,M900,0.0,0.0,0,0",
    "1,TRANSFER,181.0,C101,181.0,0.0,C200,0.0,0.0,1,0",
    "2,CASH_OUT,181.0,C200,181.0,0.0,C201,21182.0,0.0,1,0",
    "25,DEBIT,12.5,C100,160296.36,160283.86,C202,0.0,12.5,0,0",
    "26,PAYMENT,99.99,C102,500.0,400.01,M901,0.0,0.0,0,0",
    "49,CASH_IN,200.0,C101,0.0,200.0,C203,300.0,100.0,0,0",
    "50,PAYMENT,1.0,C100,160283.86,160282.86,M900,0.0,0.0,0,0",
]


def test_imported_paysim_goes_through_batch_into_every_query(tmp_path, keyspace_for,
                                                            capsys) -> None:
    settings = keyspace_for("test_paysim")
    source = tmp_path / "paysim.csv"
    source.write_text(",".join(HEADER) + "\n" + "\n".join(ROWS) + "\n")
    out = tmp_path / "paysim"
    assert main(["import-paysim", str(source), "--out", str(out), "--quiet",
                 "--chunk-rows", "3"]) == 0
    flags = ["--cassandra-hosts", ",".join(settings.cassandra_hosts),
             "--cassandra-port", str(settings.cassandra_port),
             "--cassandra-keyspace", settings.cassandra_keyspace]
    code = main(["batch", *flags, "--input", f"{out}/transactions/date=*/*.parquet",
                 "--", "--runner=FnApiRunner"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    # Nothing refused: no transaction, no entity (1 bank, 7 users, 7 accounts, 2 merchants
    # at least; chunks repeat some, the store upserts them).
    counts = re.search(r"read 7, .* dead-lettered 0; entities read (\d+), dead-lettered 0;",
                       printed)
    assert counts and int(counts[1]) >= 17, printed

    imported = read_transactions(out).to_pylist()
    owners = {r["user_id"] for r in imported}
    held = owners | {r["counterparty_id"] for r in imported
                     if r["counterparty_type"] == "account"}
    store = connect(settings)
    try:
        assert queries.bank(store, "paysim") == Bank("paysim", "PaySim", "US", "USD")
        assert [b.bank_id for b in queries.banks(store)] == ["paysim"]
        users = queries.collect(queries.users_of_bank, store, "paysim")
        assert {u.user_id for u in users} == held
        assert {(u.country, u.email) for u in users} == {("US", "")}
        accounts = queries.collect(queries.accounts_of_bank, store, "paysim")
        assert {a.account_id for a in accounts} == held
        assert queries.merchant(store, "M900").country == "US"

        # Every transaction, through the queries the bank and customer pages use.
        by_day: dict[dt.date, set[str]] = defaultdict(set)
        for r in imported:
            by_day[r["event_time"].date()].add(r["transaction_id"])
        assert len(by_day) == 3
        for day, ids in by_day.items():
            shown = queries.collect(queries.bank_transactions_on, store, "paysim", day)
            assert {s.transaction.transaction_id for s in shown} == ids, day
        for user_id in owners:
            mine = queries.collect(queries.transactions_of_user, store, user_id)
            assert {s.transaction.transaction_id for s in mine} == {
                r["transaction_id"] for r in imported if r["user_id"] == user_id}
        stored = {row[0] for row in queries.table_contents(store, "transactions")}
        assert stored == {r["transaction_id"] for r in imported}
        assert len(stored) == len(ROWS)
        fraud = queries.transaction(store, "paysim-3")
        assert fraud is not None and fraud.transaction.label == "paysim_fraud"
    finally:
        store.close()
