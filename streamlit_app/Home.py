"""The fraud-detection dashboard: `python -m fraud_detection dashboard`."""

import streamlit as st

from fraud_detection.dashboard import login_form, viewer

st.set_page_config(page_title="Fraud detection", layout="wide")
st.title("Fraud detection")
current = viewer()
if current is None:
    st.write("Log in to see your pages.")
    login_form()
else:
    st.write(f"Logged in as **{current.username}** ({current.role}).")
    pages = {"customer": "Customer", "bank": "Bank", "analyst": "Analyst, Bank, Operations",
             "admin": "Admin, Analyst, Bank, Operations, Customer"}[current.role]
    st.write(f"Your pages, in the sidebar: {pages}.")
    if st.button("Log out"):
        st.session_state.pop("viewer", None)
        st.rerun()
