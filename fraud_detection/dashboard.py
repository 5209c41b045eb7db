"""What every page shares: the streamlit command line, settings, the cached Cassandra
session, login and tables."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, from a clone

import pandas as pd
import streamlit as st

from fraud_detection.config import Settings, load_settings
from fraud_detection.store.access import AccessDenied
from fraud_detection.store.keyspace import Store, connect
from fraud_detection.store.logins import Viewer, log_in

VIEWER = "viewer"
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


@st.cache_resource
def settings() -> Settings:
    return load_settings({})


@st.cache_resource
def store() -> Store:
    # One Cassandra session per app process, shared by every page and user.
    return connect(settings())


def viewer() -> Viewer | None:
    return st.session_state.get(VIEWER)


def login_form() -> None:
    with st.form("login"):
        username = st.text_input("Username", key="username")
        password = st.text_input("Password", type="password", key="password")
        if st.form_submit_button("Log in"):
            found = log_in(store(), username, password)
            if found is None:
                st.error("Wrong username or password.")
            else:
                st.session_state[VIEWER] = found
                st.rerun()


def require(*roles: str) -> Viewer:
    """The logged-in viewer with one of `roles`, or the page stops with why."""
    current = viewer()
    if current is None:
        st.info("Log in on the Home page first.")
        login_form()
        st.stop()
    if roles and current.role not in roles:
        st.error(f"This page is for {', '.join(roles)} logins; you are {current.role}.")
        st.stop()
    with st.sidebar:
        st.write(f"Logged in as **{current.username}** ({current.role})")
        if st.button("Log out"):
            st.session_state.pop(VIEWER, None)
            st.rerun()
    return current


def refused(error: AccessDenied) -> None:
    st.error(f"Refused: {error}")


def money(cents: int | None, currency: str = "") -> str:
    return "" if cents is None else f"{cents / 100:,.2f} {currency}".strip()


def transactions_frame(items) -> pd.DataFrame:
    return pd.DataFrame([{
        "time": s.transaction.event_time, "transaction": s.transaction.transaction_id,
        "account": s.transaction.account_id, "type": s.transaction.tx_type,
        "counterparty": s.transaction.counterparty_id,
        "amount": money(s.transaction.amount_cents, s.transaction.currency),
        "score": round(s.score, 3), "flagged": s.flagged,
        "reasons": "; ".join(s.reasons)} for s in items],
        columns=["time", "transaction", "account", "type", "counterparty", "amount", "score",
                 "flagged", "reasons"])
