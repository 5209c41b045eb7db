"""The dashboard's pieces that need no services: the streamlit command line and its
config file, the pages each role gets, and transactions in customers' words."""

from __future__ import annotations

import datetime as dt
import sys
import tomllib

import pytest

from fraud_detection.dashboard import (
    APP_DIR,
    HOME,
    STREAMLIT_OPTIONS,
    customer_frame,
    customer_reasons,
    customer_tx_type,
    pages_for,
    streamlit_command,
)
from fraud_detection.records import TX_TYPES, ScoredTransaction, Transaction
from fraud_detection.transforms.kernel import LATE_REASON, hit_text
from fraud_detection.transforms.rules import load_rules


def _flags(command: list[str]) -> dict[str, str]:
    pairs = command[5:]
    return {pairs[i].removeprefix("--"): pairs[i + 1] for i in range(0, len(pairs), 2)}


def test_the_command_serves_this_machine_only_without_telemetry_or_developer_menu() -> None:
    command = streamlit_command(8601)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(HOME)]
    assert _flags(command) == {
        "server.port": "8601", "server.address": "127.0.0.1", "server.headless": "true",
        "browser.serverAddress": "127.0.0.1", "browser.gatherUsageStats": "false",
        "client.toolbarMode": "viewer"}


def test_a_wildcard_address_is_not_handed_to_browsers() -> None:
    flags = _flags(streamlit_command(8601, "0.0.0.0"))
    assert flags["server.address"] == "0.0.0.0" and "browser.serverAddress" not in flags


def test_the_config_file_beside_the_app_says_what_the_command_says() -> None:
    config = tomllib.loads((APP_DIR / ".streamlit" / "config.toml").read_text())
    in_file = {f"{section}.{name}": value for section, options in config.items()
               for name, value in options.items()}
    as_flags = {**STREAMLIT_OPTIONS, "server.address": "127.0.0.1",
                "browser.serverAddress": "127.0.0.1"}
    assert {name: str(value).lower() for name, value in in_file.items()} == as_flags


@pytest.mark.parametrize(("role", "pages"), [
    ("customer", ["Customer"]),
    ("bank", ["Bank"]),
    ("analyst", ["Analyst", "Bank", "Customer", "Operations"]),
    ("admin", ["Admin", "Analyst", "Bank", "Customer", "Operations"]),
])
def test_each_role_gets_only_its_pages(role: str, pages: list[str]) -> None:
    found = pages_for(role)
    assert [p.title for p in found] == pages
    assert all((APP_DIR / p.file).is_file() for p in found)


def _tx(tx_type: str, counterparty_type: str, amount_cents: int = 950_000) -> Transaction:
    return Transaction("t-1", dt.datetime(2024, 1, 9, 12, 45, tzinfo=dt.UTC), "b-1", "u-1",
                       "a-1", "atm-041" if counterparty_type == "cash" else "m-000001",
                       counterparty_type, tx_type, amount_cents, "EUR")


def test_every_type_of_transaction_has_a_customer_word() -> None:
    words = {customer_tx_type(t) for t in TX_TYPES}
    assert words == {"payment", "transfer", "withdrawal", "deposit", "direct debit"}
    assert customer_tx_type("CASH_IN") == "deposit"


def test_a_cash_machine_deposit_is_never_called_a_payment() -> None:
    deposit = _tx("CASH_IN", "cash")
    reason = hit_text("new_counterparty_large",
                      "first payment to this counterparty, over 20x the usual amount",
                      "amount_to_median", 94.2)
    said = customer_reasons(deposit, [reason])
    assert said == ["the first deposit at this cash machine",
                    "far larger than the usual amounts on this account"]


def test_every_default_rule_reads_in_plain_words() -> None:
    for rule in load_rules():
        for tx in (_tx("PAYMENT", "merchant"), _tx("CASH_IN", "cash")):
            said = customer_reasons(tx, [hit_text(rule.rule_id, rule.description,
                                                  "amount_cents", 1.5)])
            assert said and said != ["unusual for this account"], rule.rule_id
            text = " ".join(said)
            assert rule.rule_id not in text and "[" not in text and "seed" not in text


def test_scores_model_names_and_lateness_stay_internal() -> None:
    tx = _tx("PAYMENT", "merchant")
    reasons = ["model gbm-2024-01: 0.93", LATE_REASON,
               hit_text("an_admins_rule", "velocity over 3 sigma", "count_1h", 12),
               hit_text("spending_spike", "amount far above", "amount_to_median", 9.0),
               hit_text("seed_large_amount", "amount over 5,000 (the seed project's only rule)",
                        "amount_cents", 950_000)]
    assert customer_reasons(tx, reasons) == [
        "unusual for this account", "far larger than the usual amounts on this account",
        "a large amount"]


def test_the_customer_table_signs_money_and_explains_only_flagged_rows() -> None:
    reason = hit_text("structuring_round_deposit", "a round cash deposit", "amount_cents",
                      950_000)
    frame = customer_frame([
        ScoredTransaction(_tx("CASH_IN", "cash"), 0.85, True, (reason,)),
        ScoredTransaction(_tx("PAYMENT", "merchant", 1234), 0.3, False, (reason,))],
        {"m-000001": "Corner Shop"})
    first, second = frame.to_dict("records")
    assert (first["type"], first["to / from"], first["amount"], first["status"]) == (
        "Deposit", "cash machine atm-041", "+9,500.00 EUR", "flagged as unusual")
    assert first["why"] == ("A round cash deposit just under the limit above which banks "
                            "report cash")
    assert (second["type"], second["to / from"], second["amount"]) == (
        "Payment", "Corner Shop", "-12.34 EUR")
    assert second["status"] == "" and second["why"] == ""
