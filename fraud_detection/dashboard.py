"""What every page shares: the streamlit command line, settings, the cached Cassandra
session, login, the pages each role may use, and tables of transactions in staff's and
in customers' words."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, from a clone

import pandas as pd
import streamlit as st

from fraud_detection.config import Settings, load_settings
from fraud_detection.records import CREDIT_TX_TYPES, ScoredTransaction, Transaction
from fraud_detection.store.access import AccessDenied
from fraud_detection.store.keyspace import Store, connect
from fraud_detection.store.logins import Viewer, log_in

VIEWER = "viewer"
_LOGIN_FAILED = "login_failed"
APP_DIR = Path(__file__).resolve().parents[1] / "streamlit_app"
HOME = APP_DIR / "Home.py"
_WILDCARDS = ("", "0.0.0.0", "::")

# What `streamlit run` is told, besides the port and address. The same settings are in
# streamlit_app/.streamlit/config.toml for those who run streamlit themselves.
STREAMLIT_OPTIONS = {
    "server.headless": "true",  # opens no browser and asks for no e-mail
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "viewer",  # no Deploy button, no developer menu
}


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """The command that serves the dashboard on address:port, with no outbound traffic:
    no usage statistics, and no look-up of the machine's external IP (Streamlit asks
    checkip.amazonaws.com for it unless the address is a specific one; the browser
    address set to it keeps the websocket origin check from asking too). A wildcard
    address (0.0.0.0) may still make Streamlit look its external IP up when a browser
    on another machine connects."""
    command = [sys.executable, "-m", "streamlit", "run", str(HOME),
               "--server.port", str(port), "--server.address", address]
    options = dict(STREAMLIT_OPTIONS)
    if address not in _WILDCARDS:
        options["browser.serverAddress"] = address
    for name, value in options.items():
        command += [f"--{name}", value]
    return command


@dataclass(frozen=True)
class PageSpec:
    title: str
    file: str  # under streamlit_app/
    roles: tuple[str, ...]


# In the order each role's navigation lists them: a role's first page is where it lands.
PAGES = (
    PageSpec("Admin", "pages/5_Admin.py", ("admin",)),
    PageSpec("Analyst", "pages/3_Analyst.py", ("analyst", "admin")),
    PageSpec("Bank", "pages/2_Bank.py", ("bank", "analyst", "admin")),
    PageSpec("Customer", "pages/1_Customer.py", ("customer", "analyst", "admin")),
    PageSpec("Operations", "pages/4_Operations.py", ("analyst", "admin")),
)


def pages_for(role: str) -> list[PageSpec]:
    return [p for p in PAGES if role in p.roles]


@st.cache_resource
def settings() -> Settings:
    return load_settings({})


@st.cache_resource
def store() -> Store:
    # One Cassandra session per app process, shared by every page and user; its prepared
    # statements (the login's among them) are prepared once and kept with it.
    return connect(settings())


@st.cache_resource
def _login_ready() -> bool:
    """Connects and loads argon2 once per process, while the login form is shown: the
    first Log in click then pays only for the password check itself (Argon2's 64 MiB,
    3 passes: about 0.3 s on 2 cores, by design)."""
    from argon2 import PasswordHasher

    PasswordHasher()
    store()
    return True


def viewer() -> Viewer | None:
    return st.session_state.get(VIEWER)


def _check_login() -> None:
    # A callback runs before the rerun its click starts, so that one run already builds
    # the role's navigation and draws its first page: no second run after logging in.
    found = log_in(store(), st.session_state.get("username", ""),
                   st.session_state.get("password", ""))
    if found is None:
        st.session_state[_LOGIN_FAILED] = True
    else:
        st.session_state[VIEWER] = found


def login_form() -> None:
    _login_ready()
    with st.form("login"):
        st.text_input("Username", key="username")
        st.text_input("Password", type="password", key="password")
        st.form_submit_button("Log in", on_click=_check_login)
    if st.session_state.pop(_LOGIN_FAILED, False):
        st.error("Wrong username or password.")


def log_out() -> None:
    st.session_state.pop(VIEWER, None)


def require_page(title: str) -> Viewer:
    """The logged-in viewer, if the page `title` is theirs; otherwise the page stops and
    says why. Navigation offers a role only its pages: this guards a page run by itself."""
    roles = next(p.roles for p in PAGES if p.title == title)
    current = viewer()
    if current is None:
        st.info("Log in on the Home page first.")
        login_form()
        st.stop()
    if current.role not in roles:
        st.error(f"This page is for {', '.join(roles)} logins; you are {current.role}.")
        st.stop()
    return current


def refused(error: AccessDenied) -> None:
    st.error(f"Refused: {error}")


def money(cents: int | None, currency: str = "") -> str:
    return "" if cents is None else f"{cents / 100:,.2f} {currency}".strip()


def transactions_frame(items) -> pd.DataFrame:
    """Scored transactions as staff read them: codes, scores and the rules' own words."""
    return pd.DataFrame([{
        "time": s.transaction.event_time, "transaction": s.transaction.transaction_id,
        "account": s.transaction.account_id, "type": s.transaction.tx_type,
        "counterparty": s.transaction.counterparty_id,
        "amount": money(s.transaction.amount_cents, s.transaction.currency),
        "score": round(s.score, 3), "flagged": s.flagged,
        "reasons": "; ".join(s.reasons)} for s in items],
        columns=["time", "transaction", "account", "type", "counterparty", "amount", "score",
                 "flagged", "reasons"])


# -- in customers' words ---------------------------------------------------------------

CUSTOMER_TX_TYPES = {"PAYMENT": "payment", "TRANSFER": "transfer", "CASH_OUT": "withdrawal",
                     "CASH_IN": "deposit", "DEBIT": "direct debit"}
FLAGGED_FOR_CUSTOMERS = "flagged as unusual"
# A rule hit reads "<description> [<rule id>: <field> = <value>]" (kernel.hit_text).
_RULE_HIT = re.compile(r"\[([^\]:]+): [^\]]*\]$")
_LARGER = "far larger than the usual amounts on this account"
# What each default rule (transforms/default_rules.yaml) noticed, for the account holder.
_RULE_WORDS = {
    "seed_large_amount": ("a large amount",),
    "card_testing_burst": ("many {noun}s within one hour",),
    "large_after_burst": ("a large {noun} right after many others",),
    "spending_spike": (_LARGER,),
    "drain_transfer": ("a large transfer to a new recipient that left the account nearly "
                       "empty",),
    "empty_cash_out": ("a withdrawal that emptied an account with little history yet",),
    "structuring_round_deposit": ("a round cash deposit just under the limit above which "
                                  "banks report cash",),
    "balance_mismatch": ("the balances before and after do not match the amount",),
    "benford_nonconforming": ("the amounts on this account followed an unusual pattern "
                              "last month",),
}
# new_counterparty_large, by whom the money went to or came from.
_FIRST_WITH = {"merchant": "the first {noun} to this merchant",
               "account": "the first {noun} to this account",
               "cash": "the first {noun} at this cash machine"}
_UNUSUAL = "unusual for this account"


def customer_tx_type(tx_type: str) -> str:
    """A transaction type in customers' words: deposit, withdrawal, payment, transfer."""
    return CUSTOMER_TX_TYPES.get(tx_type, tx_type.replace("_", " ").lower())


def customer_reasons(tx: Transaction, reasons: Sequence[str]) -> list[str]:
    """Why a transaction was flagged, in the account holder's words: no rule ids, fields,
    scores or model names. A rule this table does not know (one an admin added) and the
    model's verdict read as "unusual for this account"; a note that it arrived late is
    no concern of the customer's."""
    noun = customer_tx_type(tx.tx_type)
    said: list[str] = []
    for reason in reasons:
        hit = _RULE_HIT.search(reason)
        if hit and hit.group(1).strip() == "new_counterparty_large":
            phrases = (_FIRST_WITH.get(tx.counterparty_type, "a new recipient"), _LARGER)
        elif hit:
            phrases = _RULE_WORDS.get(hit.group(1).strip(), (_UNUSUAL,))
        elif reason.startswith("model "):
            phrases = (_UNUSUAL,)
        else:
            continue
        for phrase in phrases:
            words = phrase.format(noun=noun)
            if words not in said:
                said.append(words)
    return said


def counterparty_words(tx: Transaction, merchant_name: str | None = None) -> str:
    if tx.counterparty_type == "merchant":
        return merchant_name or tx.counterparty_id
    if tx.counterparty_type == "cash":
        return f"cash machine {tx.counterparty_id}"
    return f"account {tx.counterparty_id}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def customer_frame(items: Sequence[ScoredTransaction],
                   merchant_names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Transactions as their account holder reads them: money in with a plus, money out
    with a minus, and for a flagged one why, in plain words."""
    names = merchant_names or {}
    rows = []
    for s in items:
        tx = s.transaction
        sign = "+" if tx.tx_type in CREDIT_TX_TYPES else "-"
        rows.append({
            "date (UTC)": f"{tx.event_time:%Y-%m-%d %H:%M}",
            "type": customer_tx_type(tx.tx_type).capitalize(),
            "to / from": counterparty_words(tx, names.get(tx.counterparty_id)),
            "amount": sign + money(tx.amount_cents, tx.currency),
            "account": tx.account_id,
            "status": FLAGGED_FOR_CUSTOMERS if s.flagged else "",
            "why": _sentence("; ".join(customer_reasons(tx, s.reasons))) if s.flagged else "",
            "reference": tx.transaction_id})
    return pd.DataFrame(rows, columns=["date (UTC)", "type", "to / from", "amount", "account",
                                       "status", "why", "reference"])
