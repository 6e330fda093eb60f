"""Aperture: the dashboard's entry point. Only the page set-up and the router live here."""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts only dashboard/ on sys.path; pages import `engine` and `dashboard`.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from dashboard.components import gate  # noqa: E402 - needs the path set above

# The page scripts live in views/, not pages/: a pages/ folder beside this file makes Streamlit fall
# back to its old multipage mode, which runs a page opened by URL (e.g. /runs?run=…) without this file.
st.set_page_config(page_title="Aperture", page_icon=":material/camera:", layout="wide")

# A demo opened by link (/demo?run=ID) is for stakeholders: read-only, without the sidebar.
_SHARED_DEMO = "run" in st.query_params and (st.context.url or "").split("?")[0].rstrip("/").endswith("/demo")

# APERTURE_PASSWORD set: no page runs until it is typed (the router still reads the URL, so the page asked
# for opens once the password is in).
_LOCKED = not gate.require_password(_SHARED_DEMO)

_NAVIGATION = st.navigation([
    st.Page("views/data.py", title="Data", icon=":material/photo_library:", default=True),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:"),
    st.Page("views/sweeps.py", title="Sweeps", icon=":material/tune:"),
    st.Page("views/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("views/explain.py", title="Explain", icon=":material/visibility:"),
    st.Page("views/export.py", title="Export", icon=":material/ios_share:"),
    st.Page("views/demo.py", title="Demo", icon=":material/slideshow:"),
    st.Page("views/monitor.py", title="Monitor", icon=":material/query_stats:"),
], position="hidden" if _SHARED_DEMO or _LOCKED else "sidebar")
if _LOCKED:
    st.stop()
_NAVIGATION.run()
