"""A customer's details, accounts and transactions, in the customer's words. A customer
sees their own; analysts and admins choose whom to look at."""

import pandas as pd
import streamlit as st

from fraud_detection.dashboard import (
    FLAGGED_FOR_CUSTOMERS,
    counterparty_words,
    customer_frame,
    customer_reasons,
    customer_tx_type,
    money,
    refused,
    require_page,
    store,
)
from fraud_detection.store import access, queries
from fraud_detection.store.access import STAFF, AccessDenied


@st.cache_data(ttl=600, show_spinner=False)
def merchant_names(merchant_ids: tuple[str, ...]) -> dict[str, str]:
    found = {m: queries.merchant(store(), m) for m in merchant_ids}
    return {m: found[m].name for m in merchant_ids if found[m] is not None}


def names_for(items) -> dict[str, str]:
    return merchant_names(tuple(sorted({s.transaction.counterparty_id for s in items
                                         if s.transaction.counterparty_type == "merchant"})))


def choose_user(viewer) -> str | None:
    """Staff pick a user: the search narrows the list, the first match is shown at once."""
    text = st.text_input("Find a customer", key="user_search",
                         placeholder="name, e-mail or user id")
    matches = access.search_users(store(), viewer, text)
    if not matches:
        st.warning(f"No customer matches {text!r}.")
        return None
    chosen = st.selectbox("Customer", matches, key="user_pick",
                          format_func=lambda u: f"{u.name} ({u.user_id})")
    return chosen.user_id


viewer = require_page("Customer")
st.title("Customer")
user_id = choose_user(viewer) if viewer.role in STAFF else viewer.user_id
if not user_id:
    st.stop()
own = user_id == viewer.user_id
try:
    person = access.user(store(), viewer, user_id)
    if person is None:
        st.warning(f"No customer {user_id!r}.")
        st.stop()
    st.subheader(person.name)
    details = [person.email, person.country, f"bank {person.bank_id}",
               f"customer since {person.created_at:%Y-%m-%d}"]
    st.write(" · ".join(d for d in details if d))  # some sources (PaySim) have no e-mail

    accounts = access.accounts_of_user(store(), viewer, user_id)
    st.subheader("My accounts" if own else f"Accounts of {person.name}")
    rows = []
    for a in accounts:
        held = queries.balance(store(), a.account_id)
        rows.append({"account": a.account_id, "type": a.account_type.replace("_", " "),
                     "balance": money(held.balance_cents, held.currency) if held else "",
                     "opened": f"{a.opened_at:%Y-%m-%d}"})
    st.dataframe(rows, hide_index=True)

    st.subheader("Flagged as unusual")
    st.caption("Transactions our checks found unusual for the account, and why. "
               "Not sure you made one? Call your bank.")
    flagged = access.anomalies_of_user(store(), viewer, user_id, 100).items
    if flagged:  # a table, not a grid: the reasons wrap instead of being cut off
        st.table(customer_frame(flagged, names_for(flagged)).drop(columns=["status"]),
                 hide_index=True, border="horizontal")
    else:
        st.write("None.")

    st.subheader("My transactions" if own else f"Transactions of {person.name}")
    every = "all accounts"
    choice = st.selectbox("Account", [every, *[a.account_id for a in accounts]],
                          key="account")
    if choice == every:
        page = access.transactions_of_user(store(), viewer, user_id, 100)
    else:
        page = access.transactions_of_account(store(), viewer, choice, 100)
    st.dataframe(customer_frame(page.items, names_for(page.items)), hide_index=True)

    st.subheader("A transaction's details")
    wanted = st.text_input("Reference", key="transaction_id",
                           placeholder="the reference in the tables above")
    if wanted:
        # None for an unknown id and for someone else's alike: one answer for both.
        found = access.transaction(store(), viewer, wanted)
        if found is None:
            st.warning(f"No transaction {wanted!r} among those you may see.")
        else:
            tx = found.transaction
            name = names_for([found]).get(tx.counterparty_id)
            st.table(pd.Series({
                "date (UTC)": f"{tx.event_time:%Y-%m-%d %H:%M:%S}",
                "type": customer_tx_type(tx.tx_type), "to / from": counterparty_words(tx, name),
                "amount": money(tx.amount_cents, tx.currency), "account": tx.account_id,
                "balance after": money(tx.balance_after_cents, tx.currency),
                "status": FLAGGED_FOR_CUSTOMERS if found.flagged else "nothing unusual",
                "why": "; ".join(customer_reasons(tx, found.reasons)) if found.flagged else "",
                "reference": tx.transaction_id}, name="transaction"))
            if viewer.role in STAFF:
                with st.expander("As detection scored it"):
                    st.json({"score": found.score, "flagged": found.flagged,
                             "reasons": list(found.reasons), "model": found.model_version,
                             "late": found.late})
except AccessDenied as error:
    refused(error)
