"""A bank's accounts, users and transactions, its frauds over time, and Benford's law."""

import datetime as dt

import pandas as pd
import streamlit as st

from fraud_detection.dashboard import refused, require_page, store, transactions_frame
from fraud_detection.store import access, queries
from fraud_detection.store.access import AccessDenied

viewer = require_page("Bank")
st.title("Bank")
try:
    banks = access.banks(store(), viewer)
    if not banks:
        st.warning("No banks yet.")
        st.stop()
    ids = [b.bank_id for b in banks]
    bank_id = st.selectbox("Bank", ids, key="bank_id") if len(ids) > 1 else ids[0]
    bank = access.bank(store(), viewer, bank_id)
    st.subheader(f"{bank.name} ({bank.bank_id})")
    st.write(f"{bank.country} · {bank.currency}")

    latest = queries.latest_activity_day(store()) or dt.date.today()
    day = st.date_input("Day", value=latest, key="day")
    tabs = st.tabs(["Transactions", "Frauds", "By user", "By account", "Accounts", "Users",
                    "Benford"])
    with tabs[0]:
        token_key = f"page-{bank_id}-{day}"
        page = access.bank_transactions_on(store(), viewer, bank_id, day, 50,
                                           st.session_state.get(token_key))
        st.dataframe(transactions_frame(page.items), hide_index=True)
        if page.token and st.button("Next page", key="next"):
            st.session_state[token_key] = page.token
            st.rerun()
    with tabs[1]:
        frauds = access.bank_frauds_on(store(), viewer, bank_id, day).items
        st.dataframe(transactions_frame(frauds), hide_index=True)
        days = [day - dt.timedelta(days=n) for n in range(29, -1, -1)]
        counts = [len(queries.collect(access.bank_frauds_on, store(), viewer, bank_id, d))
                  for d in days]
        st.caption("Flagged transactions per day, last 30 days")
        st.bar_chart(pd.DataFrame({"day": days, "flagged": counts}), x="day", y="flagged")
    with tabs[2]:
        user_id = st.text_input("User id", key="by_user")
        if user_id:
            st.dataframe(transactions_frame(
                access.transactions_of_user(store(), viewer, user_id, 100).items),
                hide_index=True)
    with tabs[3]:
        account_id = st.text_input("Account id", key="by_account")
        if account_id:
            st.dataframe(transactions_frame(
                access.transactions_of_account(store(), viewer, account_id, 100).items),
                hide_index=True)
    with tabs[4]:
        accounts = access.accounts_of_bank(store(), viewer, bank_id, 200).items
        st.dataframe([{"account": a.account_id, "user": a.user_id, "type": a.account_type,
                       "opened": a.opened_at} for a in accounts], hide_index=True)
    with tabs[5]:
        users = access.users_of_bank(store(), viewer, bank_id, 200).items
        st.dataframe([{"user": u.user_id, "name": u.name, "email": u.email,
                       "country": u.country} for u in users], hide_index=True)
    with tabs[6]:
        scope = st.radio("Benford's law for", ["the bank", "an account"], horizontal=True,
                         key="benford_scope")
        key = bank_id if scope == "the bank" else st.text_input("Account id",
                                                                key="benford_account")
        reports = access.benford_reports(store(), viewer,
                                         "bank" if scope == "the bank" else "account",
                                         key) if key else []
        if not reports:
            st.info("No Benford report for this window yet.")
        else:
            report = reports[0]
            st.write(f"First digits, {report.window_start} to {report.window_end}: "
                     f"n = {report.n}, MAD = {report.first_mad:.4f}, **{report.level}**")
            st.caption("Observed share of each first digit against Benford's expected curve")
            st.line_chart(pd.DataFrame({
                "digit": list(range(1, 10)), "observed": report.first_observed,
                "expected (Benford)": report.first_expected}), x="digit")
except AccessDenied as error:
    refused(error)
