"""What the browser tests share: screenshots, waiting for Streamlit to go idle, and training a tiny run
through the CLI against a test server's workspace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
# A 4-epoch LeNet-5 on 24 px digits: a finished run with a model in about 20 s.
DIGITS_DEMO = ("--data", "digits", "--image-size", "24", "--model", "lenet5", "--epochs", "4", "--augment", "none",
               "--name", "Digits demo")


def shot(page, name: str) -> None:
    """Saves a full-window screenshot as test-artifacts/screenshots/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(600)  # let charts finish their transition
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Waits until Streamlit has finished the current script run: no running-status widget (it shows
    "Stop" while a script runs) and no element still marked stale from the previous run."""
    page.wait_for_function("""() => {
        const w = document.querySelector('[data-testid="stStatusWidget"]');
        if (w && /Running|Connecting|Stop/.test(w.innerText)) return false;
        return !document.querySelector('[data-stale="true"]');
    }""", timeout=timeout_ms)


def train(home: Path, *args: str) -> str:
    """Trains a run with `python -m engine train ARGS --wait --json` in the workspace at `home`; its id."""
    env = dict(os.environ, APERTURE_HOME=str(home), APERTURE_STANDBY="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "engine", "train", *args, "--wait", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
