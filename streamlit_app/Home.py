"""The fraud-detection dashboard: `python -m fraud_detection dashboard`. The entry page:
a login form, then the navigation of only the pages the login's role may use (a page
left out cannot be opened by its address either)."""

import streamlit as st

from fraud_detection.dashboard import APP_DIR, PAGES, log_out, login_form, pages_for, viewer


def login_page() -> None:
    st.title("Fraud detection")
    st.write("Log in to see your pages.")
    login_form()


st.set_page_config(page_title="Fraud detection", layout="wide")
current = viewer()
if current is None:
    # The login form also answers at each page's address, so a bookmarked page opens
    # once logged in (if the role may use it) instead of as "page not found".
    page = st.navigation([st.Page(login_page, title="Log in", default=True)]
                         + [st.Page(login_page, title="Log in", url_path=p.title.lower(),
                                    visibility="hidden") for p in PAGES])
else:
    page = st.navigation([st.Page(APP_DIR / p.file, title=p.title, url_path=p.title.lower())
                          for p in pages_for(current.role)])
    with st.sidebar:
        st.write(f"Logged in as **{current.username}** ({current.role})")
        if st.button("Log out", key="log_out"):
            log_out()
            st.rerun()
page.run()
