"""The Cassandra model end to end: WriteToCassandra writes a generated world, and every
query in store.queries returns exactly those rows, read back from Cassandra."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from fraud_detection.io.cassandra import WriteToCassandra, encoded_rows
from fraud_detection.records import ScoredTransaction, Transaction
from fraud_detection.store import queries
from fraud_detection.store.entities import EntityRejected, add_entity
from fraud_detection.store.keyspace import connect
from fraud_detection.store.tables import (
    ENTITY_COLUMNS,
    STATEMENTS,
    TRANSACTION_TABLES,
    entity_rows,
    scored_table_rows,
    scored_transaction_rows,
)
from fraud_detection.transforms.kernel import scored_table
from tests.integration.worlds import World, label_scored

pytestmark = pytest.mark.integration

TABLES = [*TRANSACTION_TABLES, *ENTITY_COLUMNS, "account_balances"]


def write(settings, records, to_rows, expect_failures=()) -> None:
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        failed = (p | beam.Create(records, reshuffle=False)
                  | WriteToCassandra(settings, to_rows)
                  | beam.Map(lambda f: (f.table, f.error.split(":")[0])))
        assert_that(failed, equal_to(list(expect_failures)))


def write_tables(settings, scored: list[ScoredTransaction], size: int = 700) -> None:
    """What the pipelines do: scored tables, each column serialized once."""
    tables = [scored_table(scored[i:i + size]) for i in range(0, len(scored), size)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        written = (p | beam.Create(tables, reshuffle=False)
                   | WriteToCassandra(settings, scored_table_rows, batched=True))
        assert_that(written.failed, equal_to([]))


def newest_first(items: list[ScoredTransaction]) -> list[ScoredTransaction]:
    def key(s: ScoredTransaction):
        ms = s.transaction.event_time.replace(microsecond=s.transaction.event_time.microsecond
                                              // 1000 * 1000)
        return ms, s.transaction.transaction_id
    return sorted(items, key=key, reverse=True)


@pytest.fixture(scope="module")
def stored(small_world: World, keyspace_for):
    settings = keyspace_for("test_store")
    write(settings, small_world.entities, entity_rows)
    write_tables(settings, small_world.scored)
    session = connect(settings)
    yield settings, session
    session.close()


def test_a_batch_binds_the_bytes_the_driver_binds_for_each_record(small_world: World,
                                                                   stored) -> None:
    _, store = stored
    prepared = {table: store.prepare(cql) for table, cql in STATEMENTS.items()}
    # Some without a stated balance or a label: null values, and no balance row.
    scored = [s if i % 7 else dataclasses.replace(s, transaction=dataclasses.replace(
        s.transaction, balance_before_cents=None, balance_after_cents=None, label=None))
        for i, s in enumerate(small_world.scored)]
    assert any(s.flagged for s in scored)
    encoded = encoded_rows(prepared, scored_table_rows(scored_table(scored)))
    for i, s in enumerate(scored):
        bound = [(table, prepared[table].bind(values).values)
                 for table, values in scored_transaction_rows(s)]
        assert [(table, list(values)) for table, values in encoded.rows(i, i + 1)] == bound


def test_customer_queries_return_what_the_sink_wrote(small_world: World, stored) -> None:
    _, session = stored
    by_user, by_account = defaultdict(list), defaultdict(list)
    for s in small_world.scored:
        by_user[s.transaction.user_id].append(s)
        by_account[s.transaction.account_id].append(s)
    for user in small_world.users[:40]:
        assert queries.user(session, user.user_id) == user
        assert queries.collect(queries.transactions_of_user, session, user.user_id,
                               page_size=7) == newest_first(by_user[user.user_id])
        assert queries.collect(queries.anomalies_of_user, session, user.user_id) == \
            newest_first([s for s in by_user[user.user_id] if s.flagged])
        mine = [a for a in small_world.accounts if a.user_id == user.user_id]
        assert sorted(queries.accounts_of_user(session, user.user_id),
                      key=lambda a: a.account_id) == sorted(mine, key=lambda a: a.account_id)
    for account in small_world.accounts[:40]:
        assert queries.collect(queries.transactions_of_account, session, account.account_id,
                               page_size=5) == newest_first(by_account[account.account_id])
    for s in small_world.scored[::25]:
        assert queries.transaction(session, s.transaction.transaction_id) == s
    assert queries.transaction(session, "no-such-id") is None


def test_bank_queries_return_what_the_sink_wrote(small_world: World, stored) -> None:
    _, session = stored
    assert queries.banks(session) == sorted(small_world.banks, key=lambda b: b.bank_id)
    days = sorted({s.transaction.event_time.date() for s in small_world.scored})
    for bank in small_world.banks:
        assert queries.bank(session, bank.bank_id) == bank
        assert sorted(queries.collect(queries.accounts_of_bank, session, bank.bank_id,
                                      page_size=9), key=lambda a: a.account_id) == \
            sorted((a for a in small_world.accounts if a.bank_id == bank.bank_id),
                   key=lambda a: a.account_id)
        assert sorted(queries.collect(queries.users_of_bank, session, bank.bank_id,
                                      page_size=9), key=lambda u: u.user_id) == \
            sorted((u for u in small_world.users if u.bank_id == bank.bank_id),
                   key=lambda u: u.user_id)
        for day in days[:4]:
            on_day = [s for s in small_world.scored if s.transaction.bank_id == bank.bank_id
                      and s.transaction.event_time.date() == day]
            assert queries.collect(queries.bank_transactions_on, session, bank.bank_id, day,
                                   page_size=31) == newest_first(on_day)
            assert queries.collect(queries.bank_frauds_on, session, bank.bank_id, day) == \
                newest_first([s for s in on_day if s.flagged])
    day = days[3]
    assert queries.collect(queries.all_transactions_on, session, day, page_size=50) == \
        newest_first([s for s in small_world.scored if s.transaction.event_time.date() == day])


def test_pages_chain_by_token_and_a_foreign_token_is_refused(small_world: World, stored) -> None:
    _, session = stored
    bank = small_world.banks[0].bank_id
    day = small_world.scored[0].transaction.event_time.date()
    first = queries.bank_transactions_on(session, bank, day, page_size=10)
    assert len(first.items) == 10 and first.token
    second = queries.bank_transactions_on(session, bank, day, page_size=10, token=first.token)
    assert not {s.transaction.transaction_id for s in first.items} & \
        {s.transaction.transaction_id for s in second.items}
    with pytest.raises(queries.PagingError):
        queries.transactions_of_user(session, "u-0000001", token=first.token)


def test_balance_is_the_latest_event_and_an_older_update_does_not_win(small_world: World,
                                                                      stored) -> None:
    settings, session = stored
    latest = {}
    for s in small_world.scored:
        tx = s.transaction
        if tx.account_id not in latest or tx.event_time >= latest[tx.account_id].event_time:
            latest[tx.account_id] = tx
    for account_id, tx in list(latest.items())[:50]:
        got = queries.balance(session, account_id)
        assert (got.balance_cents, got.transaction_id, got.as_of) == \
            (tx.balance_after_cents, tx.transaction_id, tx.event_time)

    account_id, newest = next(iter(latest.items()))
    older = dataclass_replace(newest, transaction_id="late-arrival", balance_after_cents=1,
                              event_time=newest.event_time - dt.timedelta(days=1))
    write(settings, [label_scored(older)], scored_transaction_rows)
    assert queries.balance(session, account_id).transaction_id == newest.transaction_id
    newer = dataclass_replace(older, transaction_id="newest-of-all", balance_after_cents=2,
                              event_time=newest.event_time + dt.timedelta(seconds=1))
    write(settings, [label_scored(newer)], scored_transaction_rows)
    assert queries.balance(session, account_id).balance_cents == 2


def dataclass_replace(tx: Transaction, **changes) -> Transaction:
    import dataclasses

    return dataclasses.replace(tx, **changes)


def test_writing_the_same_input_twice_changes_no_table(small_world: World, keyspace_for) -> None:
    settings = keyspace_for("test_store_idempotent")
    records = small_world.scored[:1500]
    write(settings, small_world.entities, entity_rows)
    write(settings, records, scored_transaction_rows)
    session = connect(settings)
    try:
        before = {t: queries.table_contents(session, t) for t in TABLES}
        assert len(before["transactions"]) == 1500
        write(settings, list(reversed(records)), scored_transaction_rows)
        write(settings, small_world.entities, entity_rows)
        assert {t: queries.table_contents(session, t) for t in TABLES} == before
    finally:
        session.close()


def test_a_row_that_cannot_be_written_goes_to_the_failed_output(small_world: World,
                                                                keyspace_for) -> None:
    settings = keyspace_for("test_store_failures")
    good = small_world.scored[:20]
    marker = 987_654_321_123
    too_big = dataclass_replace(good[0].transaction, transaction_id="too-big",
                                amount_cents=marker)

    def rows_with_overflow(scored: ScoredTransaction):
        return [(table, tuple(2**70 if v == marker else v for v in values))
                for table, values in scored_transaction_rows(scored)]

    # 2**70 overflows bigint in the four tables that store this unflagged row. A record's
    # rows go in one request, so its balance row fails with them: none of it is stored.
    # It shares its request with good neighbours, which are still written.
    expected = [(t, "TypeError") for t in ("transactions", "transactions_by_account",
                                              "transactions_by_user",
                                              "transactions_by_bank_day",
                                              "account_balances")]
    write(settings, [*good[:10], label_scored(too_big), *good[10:]], rows_with_overflow,
          expected)
    session = connect(settings)
    try:
        assert {s.transaction.transaction_id for s in good} <= {
            row[0] for row in queries.table_contents(session, "transactions")}
        assert queries.transaction(session, "too-big") is None
        assert "too-big" not in {row[-1] for row in queries.table_contents(
            session, "account_balances")}
    finally:
        session.close()


def test_entities_are_checked_before_they_are_added(small_world: World, stored) -> None:
    _, session = stored
    bank, user, account = small_world.banks[0], small_world.users[0], small_world.accounts[0]
    add_entity(session, bank)  # the same bank again: a replay, not an error
    with pytest.raises(EntityRejected, match="already exists"):
        add_entity(session, dataclass_replace(bank, name="Another Bank"))
    with pytest.raises(EntityRejected, match="unknown bank"):
        add_entity(session, dataclass_replace(user, user_id="u-new", bank_id="bank-zz"))
    with pytest.raises(EntityRejected, match="unknown user"):
        add_entity(session, dataclass_replace(account, account_id="a-new", user_id="u-zz"))
    new_user = dataclass_replace(user, user_id="u-new", name="New Person")
    add_entity(session, new_user)
    assert queries.user(session, "u-new") == new_user
    assert new_user in queries.collect(queries.users_of_bank, session, new_user.bank_id)


def test_schema_applies_once_and_rules_live_in_their_table(stored) -> None:
    from fraud_detection.store import rules as stored_rules
    from fraud_detection.store.keyspace import apply_schema, migrations
    from fraud_detection.transforms.rules import load_rules

    settings, store = stored
    report = apply_schema(settings)
    assert report.applied == () and report.version == len(migrations())
    assert sorted(r.version for r in store.execute("SELECT version FROM schema_migrations")) \
        == [m.version for m in migrations()]

    defaults = load_rules()
    stored_rules.save_rules(store, defaults)
    source = stored_rules.StoredRules(settings, refresh_seconds=0)
    assert {r.rule_id for r in source.load()} == {r.rule_id for r in defaults}
    stored_rules.set_paused(store, "seed_large_amount", True)
    assert [r.paused for r in source.load() if r.rule_id == "seed_large_amount"] == [True]
    with pytest.raises(Exception, match="no rule"):
        stored_rules.set_paused(store, "no-such-rule", True)


def test_benford_reports_are_stored_and_read_newest_first(small_world: World, stored) -> None:
    from fraud_detection.store.tables import benford_row
    from fraud_detection.transforms.benford import BenfordReports, benford_test
    from fraud_detection.transforms.parse import at_event_time

    settings, store = stored
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        failed = (p | beam.Create([s.transaction for s in small_world.scored])
                  | beam.Map(at_event_time)
                  | BenfordReports(window_days=30)
                  | beam.WindowInto(beam.window.GlobalWindows())
                  | WriteToCassandra(settings, lambda report: [benford_row(report)]))
        assert_that(failed, equal_to([]))
    bank = small_world.banks[0].bank_id
    reports = queries.benford_reports(store, "bank", bank)
    assert reports and [r.window_start for r in reports] == sorted(
        (r.window_start for r in reports), reverse=True)
    in_window = [s.transaction.amount_cents for s in small_world.scored
                 if s.transaction.bank_id == bank
                 and reports[0].window_start <= s.transaction.event_time.date()
                 < reports[0].window_end and s.transaction.amount_cents >= 10]
    expected = benford_test(in_window)
    assert reports[0].n == expected.n
    assert reports[0].first_mad == pytest.approx(expected.mad)
