"""The alert queue: confirm or dismiss, which labels the transaction in Cassandra and on
the labels topic that detection reads."""

import datetime as dt

import streamlit as st

from fraud_detection.dashboard import refused, require_page, settings, store, transactions_frame
from fraud_detection.io.kafka import publish
from fraud_detection.store import access, labels, queries
from fraud_detection.store.access import AccessDenied

viewer = require_page("Analyst")
st.title("Alert queue")
try:
    latest = queries.latest_activity_day(store()) or dt.date.today()
    day = st.date_input("Day", value=latest, key="day")
    order = st.radio("Order", ["newest", "highest score"], horizontal=True, key="order")
    alerts = access.alert_queue(store(), viewer, day,
                                "score" if order == "highest score" else "newest")
    verdicts = {a.transaction.transaction_id: labels.verdict_of(store(), a.transaction
                                                                .transaction_id)
                for a in alerts}
    open_alerts = [a for a in alerts if verdicts[a.transaction.transaction_id] is None]
    st.write(f"{len(alerts)} alerts on {day}, {len(open_alerts)} still open.")
    frame = transactions_frame(alerts)
    frame["verdict"] = [v.verdict if (v := verdicts[t]) else "" for t in frame["transaction"]]
    st.dataframe(frame, hide_index=True)
    if open_alerts:
        chosen = st.selectbox("Alert", [a.transaction.transaction_id for a in open_alerts],
                              key="alert")
        alert = next(a for a in open_alerts if a.transaction.transaction_id == chosen)
        st.write("Reasons: " + "; ".join(alert.reasons))
        confirm, dismiss = st.columns(2)
        verdict = None
        if confirm.button("Confirm fraud", key="confirm"):
            verdict = labels.CONFIRMED
        if dismiss.button("Dismiss", key="dismiss"):
            verdict = labels.DISMISSED
        if verdict:
            saved = labels.record_verdict(store(), alert, verdict, viewer.username)
            publish(settings(), settings().topic_labels, alert.transaction.account_id,
                    saved.label_event())
            st.success(f"{chosen}: {verdict}; label sent to detection.")
            st.rerun()
except AccessDenied as error:
    refused(error)
