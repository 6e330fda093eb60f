"""The optional password gate (`APERTURE_PASSWORD`) in front of every page.

Unset (the default, with the server on loopback): no gate. Set: each browser session
types the password once (compared in constant time) before any page script runs. The
one exception is a demo page opened by link for a run that was explicitly published
(`python -m engine publish RUN`, a `published` marker in its run folder): read-only.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

PASSWORD_ENV = "APERTURE_PASSWORD"
UNLOCKED_KEY = "gate.unlocked"


def password() -> str:
    return os.environ.get(PASSWORD_ENV, "")


def is_published_demo(shared_demo: bool) -> bool:
    """True for `/demo?run=ID` where run ID is published."""
    if not shared_demo:
        return False
    from dashboard.components import state

    return state.folder(st.query_params.get("run", "")).published


def require_password(shared_demo: bool = False) -> bool:
    """Shows the password form and returns False until this session has typed it (True if no gate)."""
    expected = password()
    if not expected or st.session_state.get(UNLOCKED_KEY) or is_published_demo(shared_demo):
        return True
    st.title("Aperture", anchor=False)
    with st.form("gate.form"):
        typed = st.text_input("Password", type="password", key="gate.password")
        submitted = st.form_submit_button("Open", type="primary")
    if submitted:
        if hmac.compare_digest(typed.encode(), expected.encode()):
            st.session_state[UNLOCKED_KEY] = True
            st.session_state.pop("gate.password", None)
            st.rerun()
        st.error("Wrong password.", icon=":material/lock:")
    return False
