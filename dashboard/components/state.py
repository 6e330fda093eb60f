"""Cached access to the workspace, its run folders, datasets and models, and background work for the pages.

Nothing here imports TensorFlow: models answer through the model server (`model_server`), and slow
CLI helpers (`describe-model`, `preview-augment`) run as subprocesses on a small thread pool whose
futures the pages poll.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st

from engine.config import AugmentConfig, RunConfig
from engine.data import ImageSet, SourceInfo, list_sources, load_images
from engine.evaluation import Predictions
from engine.runfolder import RunFolder
from engine.store import CACHE_DIR, COMPLETED, Run, Workspace, default_root

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_SECONDS = 180
# Session-state keys shared between pages.
CHOSEN_DATA = "chosen_data"  # {"source": ..., "image_size": ..., "augment": {...}} from the Data page
TRAIN_PREFILL = "train_prefill"  # (RunConfig dict, parent run id or None) for the Train form


def workspace() -> Workspace:
    """The workspace under `$APERTURE_HOME` (or ./workspace), opened once per root."""
    return _workspace(str(default_root()))


@st.cache_resource(show_spinner=False)
def _workspace(root: str) -> Workspace:
    return Workspace(root)


def folder(run: Run | str) -> RunFolder:
    """The run folder of `run` (a run or its id) in this workspace."""
    return RunFolder(workspace(), run if isinstance(run, str) else run.id)


def finished_runs(*, with_predictions: bool = False) -> list[Run]:
    """The completed runs with a trained model (or, `with_predictions`, with test predictions), newest first."""
    return [r for r in workspace().list_runs() if r.status == COMPLETED
            and (folder(r).has_predictions if with_predictions else folder(r).has_model)]


@st.cache_data(ttl=30, show_spinner=False)
def sources() -> list[SourceInfo]:
    """The built-in dataset sources with their offline availability (re-checked every 30 s)."""
    return list_sources()


@st.cache_resource(max_entries=6, show_spinner=False)
def _load(source: str, image_size: int, max_per_class: int, seed: int, cache_root: str, columns=None) -> ImageSet:
    return load_images(source, image_size, max_per_class=max_per_class, seed=seed,
                       cache_dir=Path(cache_root) / CACHE_DIR, columns=columns)


def load_dataset(source: str, image_size: int, max_per_class: int = 0, seed: int = 0, columns=None) -> ImageSet:
    """Loads (and caches per source, size, cap, seed and manifest columns) a dataset; raises DatasetError."""
    return _load(source, int(image_size), int(max_per_class), int(seed), str(workspace().root), columns)


def run_dataset(run: Run, predictions: Predictions | None = None) -> ImageSet:
    """The run's dataset (cached as `load_dataset` caches), checked against `predictions` by `RunFolder.dataset`.

    Raises:
        DatasetError: the data no longer loads, or it changed since the run recorded it.
    """
    def load(source: str, image_size: int, *, max_per_class: int = 0, seed: int = 0, cache_dir=None,
             columns=None) -> ImageSet:
        return load_dataset(source, image_size, max_per_class, seed, columns)

    return folder(run).dataset(predictions, load=load)


# -- background work ------------------------------------------------------------------


@dataclass
class _Tasks:
    executor: ThreadPoolExecutor
    futures: dict[str, Future]
    lock: threading.Lock


@st.cache_resource(show_spinner=False)
def _tasks() -> _Tasks:
    return _Tasks(ThreadPoolExecutor(max_workers=2, thread_name_prefix="aperture-task"), {}, threading.Lock())


def start_task(key: str, fn: Callable[..., Any], *args: Any) -> Future:
    """Runs `fn(*args)` once per `key` on a background thread; returns its future (shared by all sessions)."""
    tasks = _tasks()
    with tasks.lock:
        future = tasks.futures.get(key)
        if future is None or (future.done() and future.exception() is not None and _retry_allowed(future)):
            future = tasks.executor.submit(fn, *args)
            tasks.futures[key] = future
            if len(tasks.futures) > 256:  # forget the oldest finished results
                for old in [k for k, f in tasks.futures.items() if f.done()][:64]:
                    tasks.futures.pop(old, None)
        return future


def _retry_allowed(future: Future) -> bool:
    # A timed-out helper may succeed on a second try; a real error would only repeat.
    return isinstance(future.exception(), subprocess.TimeoutExpired)


class HelperError(RuntimeError):
    """A CLI helper failed; the message is its last stderr line."""


def _run_cli(*args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "engine", *args], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise HelperError(lines[-1].removeprefix("error: ") if lines else f"exit code {result.returncode}")
    return result.stdout


def count_params(config: RunConfig, num_classes: int) -> dict:
    """Builds the model in a subprocess (`describe-model`) and returns its summary dict."""
    with tempfile.TemporaryDirectory(prefix="aperture-model-") as scratch:
        path = Path(scratch) / "run.json"
        path.write_text(config.to_json())
        out = _run_cli("describe-model", "--config", str(path), "--classes", str(num_classes))
    return json.loads(out.strip().splitlines()[-1])


def preview_augment(image: np.ndarray, augment: AugmentConfig, count: int = 12, seed: int = 0) -> np.ndarray:
    """Runs one image through `augment` `count` times in a subprocess; returns (count, H, W, 3) uint8."""
    with tempfile.TemporaryDirectory(prefix="aperture-augment-") as scratch:
        source, out = Path(scratch) / "image.npy", Path(scratch) / "out.npy"
        np.save(source, np.ascontiguousarray(image, dtype=np.uint8))
        _run_cli("preview-augment", "--image", str(source), "--augment", json.dumps(augment.__dict__),
                 "--count", str(count), "--seed", str(seed), "--out", str(out))
        return np.load(out)


def augment_task(key: str, image: np.ndarray, augment: AugmentConfig, seed: int = 0) -> Future:
    return start_task(f"augment:{key}:{json.dumps(augment.__dict__, sort_keys=True)}:{seed}",
                      preview_augment, image, augment, 12, seed)
