"""A customer's details, accounts, transactions and anomalies."""

import streamlit as st

from fraud_detection.dashboard import money, refused, require_page, store, transactions_frame
from fraud_detection.store import access, queries
from fraud_detection.store.access import AccessDenied

viewer = require_page("Customer")
st.title("Customer")
user_id = st.text_input("User id", value=viewer.user_id or "", key="user_id")
if not user_id:
    st.stop()
try:
    person = access.user(store(), viewer, user_id)
    if person is None:
        st.warning(f"No user {user_id!r}.")
        st.stop()
    st.subheader(person.name)
    details = [person.email, person.country, f"bank {person.bank_id}",
               f"customer since {person.created_at:%Y-%m-%d}"]
    st.write(" · ".join(d for d in details if d))  # some sources (PaySim) have no e-mail

    accounts = access.accounts_of_user(store(), viewer, user_id)
    st.subheader("My accounts")
    rows = []
    for a in accounts:
        held = queries.balance(store(), a.account_id)
        rows.append({"account": a.account_id, "type": a.account_type,
                     "balance": money(held.balance_cents, held.currency) if held else "",
                     "opened": a.opened_at})
    st.dataframe(rows, hide_index=True)

    st.subheader("My anomalous transactions")
    anomalies = access.anomalies_of_user(store(), viewer, user_id, 100).items
    st.dataframe(transactions_frame(anomalies), hide_index=True)

    st.subheader("Transactions")
    choice = st.selectbox("Account", ["all my accounts", *[a.account_id for a in accounts]],
                          key="account")
    if choice == "all my accounts":
        page = access.transactions_of_user(store(), viewer, user_id, 100)
    else:
        page = access.transactions_of_account(store(), viewer, choice, 100)
    st.dataframe(transactions_frame(page.items), hide_index=True)

    st.subheader("A transaction's details")
    wanted = st.text_input("Transaction id", key="transaction_id")
    if wanted:
        # None for an unknown id and for someone else's alike: one answer for both.
        found = access.transaction(store(), viewer, wanted)
        if found is None:
            st.warning(f"No transaction {wanted!r} among those you may see.")
        else:
            tx = found.transaction
            st.json({**tx.to_dict(), "event_time": tx.event_time.isoformat(),
                     "score": found.score, "flagged": found.flagged,
                     "reasons": list(found.reasons), "model": found.model_version})
except AccessDenied as error:
    refused(error)
