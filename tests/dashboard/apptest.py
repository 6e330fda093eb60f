"""What the AppTest page tests share: opening the app on a page, reading texts, and running steps in a
fresh interpreter (to check that a page never imports TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
# Python for "TensorFlow or Keras is loaded", for the steps of `in_fresh_interpreter`.
HEAVY_LOADED = '"tensorflow" in sys.modules or "keras" in sys.modules'


def open_app(page: str | None = None, *, timeout: float = 60, **query) -> AppTest:
    """The app run once with `query` in the URL, then switched to `views/<page>.py` (if given); no exception."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def in_fresh_interpreter(steps: str, **query):
    """Runs `steps` on `at` (the app, run once with `query`) in a new Python process; returns what the steps
    print last as JSON. `json`, `sys` and `AppTest` are imported for them."""
    script = (f"import json, sys\nfrom streamlit.testing.v1 import AppTest\n"
              f"at = AppTest.from_file({APP!r}, default_timeout=60)\n"
              + "".join(f"at.query_params[{k!r}] = {v!r}\n" for k, v in query.items())
              + "at.run()\n" + textwrap.dedent(steps))
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
