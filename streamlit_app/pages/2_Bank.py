"""A bank's accounts, users and transactions; what detection flagged and what analysts
confirmed as fraud; and Benford's law over its amounts."""

import datetime as dt

import altair as alt
import pandas as pd
import streamlit as st

from fraud_detection.dashboard import refused, require_page, store, transactions_frame
from fraud_detection.store import access, labels, queries
from fraud_detection.store.access import AccessDenied

DAYS_SHOWN = 30
OBSERVED, EXPECTED = "observed", "expected (Benford)"


def transactions_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    token_key = f"page-{bank_id}-{day}"
    page = access.bank_transactions_on(store(), viewer, bank_id, day, 50,
                                       st.session_state.get(token_key))
    st.dataframe(transactions_frame(page.items), hide_index=True)
    if page.token and st.button("Next page", key="next"):
        st.session_state[token_key] = page.token
        st.rerun()


def flagged_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    flagged = access.bank_flagged_with_verdicts_on(store(), viewer, bank_id, day)
    still_open = sum(v is None for _, v in flagged)
    st.caption(f"What detection flagged on {day}: {len(flagged)} transactions, "
               f"{still_open} not yet judged by an analyst.")
    frame = transactions_frame([s for s, _ in flagged])
    frame["verdict"] = ["open" if v is None else v.verdict for _, v in flagged]
    st.dataframe(frame, hide_index=True)


def frauds_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    """Confirmed frauds: flagged transactions an analyst confirmed (the alert queue)."""
    days = [day - dt.timedelta(days=n) for n in range(DAYS_SHOWN - 1, -1, -1)]
    judged = {d: access.bank_flagged_with_verdicts_on(store(), viewer, bank_id, d)
              for d in days}
    confirmed = {d: [(s, v) for s, v in judged[d] if v and v.verdict == labels.CONFIRMED]
                 for d in days}
    newest_first = [item for d in reversed(days) for item in confirmed[d]]
    st.caption(f"Frauds analysts confirmed, {days[0]} to {day}: {len(newest_first)}.")
    frame = transactions_frame([s for s, _ in newest_first]).drop(columns=["flagged"])
    frame["confirmed by"] = [v.analyst for _, v in newest_first]
    frame["confirmed at"] = [v.labelled_at for _, v in newest_first]
    st.dataframe(frame, hide_index=True)
    st.caption(f"Flagged and confirmed per day, {days[0]} to {day}")
    st.bar_chart(pd.DataFrame({"day": days, "flagged": [len(judged[d]) for d in days],
                               "confirmed fraud": [len(confirmed[d]) for d in days]}),
                 x="day", y=["flagged", "confirmed fraud"], stack=False,
                 color=["#9ecae9", "#d62728"])


def by_user_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    user_id = st.text_input("User id", key="by_user")
    if user_id:
        st.dataframe(transactions_frame(
            access.transactions_of_user(store(), viewer, user_id, 100).items),
            hide_index=True)


def by_account_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    account_id = st.text_input("Account id", key="by_account")
    if account_id:
        st.dataframe(transactions_frame(
            access.transactions_of_account(store(), viewer, account_id, 100).items),
            hide_index=True)


def accounts_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    accounts = access.accounts_of_bank(store(), viewer, bank_id, 200).items
    st.dataframe([{"account": a.account_id, "user": a.user_id, "type": a.account_type,
                   "opened": a.opened_at} for a in accounts], hide_index=True)


def users_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    users = access.users_of_bank(store(), viewer, bank_id, 200).items
    st.dataframe([{"user": u.user_id, "name": u.name, "email": u.email,
                   "country": u.country} for u in users], hide_index=True)


def benford_chart(observed: list[float], expected: list[float]) -> alt.Chart:
    frame = pd.DataFrame({"first digit": list(range(1, 10)) * 2,
                          "share": [*observed, *expected],
                          "series": [OBSERVED] * 9 + [EXPECTED] * 9})
    # Two colours far apart (blue, orange), and Benford's curve dashed as well.
    colour = alt.Color("series:N", scale=alt.Scale(domain=[OBSERVED, EXPECTED],
                                                   range=["#1f4e9c", "#f28e2b"]),
                       legend=alt.Legend(title=None, orient="top"))
    dash = alt.StrokeDash("series:N", scale=alt.Scale(domain=[OBSERVED, EXPECTED],
                                                      range=[[1, 0], [6, 4]]), legend=None)
    return alt.Chart(frame).mark_line(point=True, strokeWidth=3).encode(
        x=alt.X("first digit:O", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("share:Q", axis=alt.Axis(format="%")), color=colour, strokeDash=dash)


def benford_tab(viewer, bank_id: str, day: dt.date, last_day: dt.date) -> None:
    scope = st.radio("Benford's law for", ["the bank", "an account"], horizontal=True,
                     key="benford_scope")
    key = bank_id if scope == "the bank" else st.text_input("Account id",
                                                            key="benford_account")
    reports = access.benford_reports(store(), viewer,
                                     "bank" if scope == "the bank" else "account",
                                     key) if key else []
    if not reports:
        st.info("No Benford report for this window yet.")
        return
    report = reports[0]
    # Windows are fixed 30-day spans: the newest one runs on past the data's last day.
    shown_end = min(report.window_end - dt.timedelta(days=1), last_day)
    st.write(f"First digits, {report.window_start} to {shown_end}: "
             f"n = {report.n}, MAD = {report.first_mad:.4f}, **{report.level}**")
    st.caption("Observed share of each first digit against Benford's expected curve")
    st.altair_chart(benford_chart(report.first_observed, report.first_expected))


TABS = {"Transactions": transactions_tab, "Flagged": flagged_tab, "Frauds": frauds_tab,
        "By user": by_user_tab, "By account": by_account_tab, "Accounts": accounts_tab,
        "Users": users_tab, "Benford": benford_tab}

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
    last_day = queries.latest_activity_day(store()) or dt.date.today()
    day = st.date_input("Day", value=last_day, key="day")
    # Only the open tab runs (on_change="rerun"), so each tab reads only its own rows.
    for tab, show in zip(st.tabs(list(TABS), key="bank_tab", on_change="rerun"),
                         TABS.values(), strict=True):
        if tab.open:
            with tab:
                show(viewer, bank_id, day, last_day)
except AccessDenied as error:
    refused(error)
