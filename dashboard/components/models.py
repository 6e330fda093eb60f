"""A run's Keras model loaded once per process on the CPU and cached (Demo and Explain share it).

Importing this module is cheap: Keras is imported only when a model is first needed.
"""

from __future__ import annotations

import streamlit as st


@st.cache_resource(max_entries=4, show_spinner=False)
def keras_model(run_id: str, path: str, mtime: float):
    """The `.keras` file at `path`, cached per run and file time."""
    import keras

    import engine.models  # noqa: F401 - custom layers

    return keras.saving.load_model(path, compile=False)
