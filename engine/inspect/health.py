"""Dataset health: CleanVision's per-image checks, counted per issue and per class, cached by the data's fingerprint.

CleanVision 0.3.7 fits as it is: `Imagelab(filepaths=...)` reads a folder source's original files
(so odd sizes and aspect ratios are those of the files, not of our square decoded copies), and any
object that indexes like a torchvision dataset (`(PIL image, label)` pairs) feeds it the decoded
images of a built-in source. It imports neither TensorFlow nor torch. It runs in a job (`health` or
`inspect`): seconds for thousands of images, and its duplicate checks hash every image. Results go to
`<cache>/health/<fingerprint>.json`, so every run and the Data page share one computation per data.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HEALTH_ISSUES = ("blurry", "dark", "light", "low_information", "odd_aspect_ratio", "odd_size", "grayscale",
                 "exact_duplicates", "near_duplicates")
HEALTH_DIR = "health"  # under the workspace cache
BLUR_FACTOR = 0.35  # blurry: sharpness below this share of the dataset's median sharpness


@dataclass(frozen=True)
class Health:
    """What CleanVision found in a dataset, per issue.

    Args:
        fingerprint: the dataset's fingerprint (`ImageSet.fingerprint`).
        source: the data source.
        num_images: images checked.
        issues: issue -> the dataset rows (`load_images` order) that have it.
        ids: issue -> the image ids that have it.
        per_class: issue -> {class name: images of that class with it}.
        engine: what computed it (`cleanvision 0.3.7`; blur is ours, see the module's note).
        checked_files: True when the original files were checked, False for decoded images.
    """

    fingerprint: str
    source: str
    num_images: int
    issues: dict[str, list[int]]
    ids: dict[str, list[str]]
    per_class: dict[str, dict[str, int]]
    engine: str = ""
    checked_files: bool = False
    scores: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, int]:
        """{issue: images with it}, every issue of `HEALTH_ISSUES` present."""
        return {issue: len(self.issues.get(issue, [])) for issue in HEALTH_ISSUES}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Health:
        return cls(fingerprint=str(data["fingerprint"]), source=str(data["source"]),
                   num_images=int(data["num_images"]),
                   issues={k: [int(i) for i in v] for k, v in data["issues"].items()},
                   ids={k: [str(i) for i in v] for k, v in data["ids"].items()},
                   per_class={k: {c: int(n) for c, n in v.items()} for k, v in data["per_class"].items()},
                   engine=str(data.get("engine", "")), checked_files=bool(data.get("checked_files")),
                   scores={k: [float(s) for s in v] for k, v in (data.get("scores") or {}).items()})


class _DecodedImages:
    """The decoded images of an `ImageSet` as CleanVision's torchvision wrapper reads them: `(PIL image, label)`."""

    def __init__(self, images):
        self._images = images

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int):
        from PIL import Image

        return Image.fromarray(np.asarray(self._images.images[int(index)])), int(self._images.labels[int(index)])


def blur_scores(images: np.ndarray, *, batch: int = 512) -> np.ndarray:
    """`(N,)` float32 sharpness of uint8 RGB images: std of the interior Laplacian / std of the interior pixels."""
    out = np.zeros(images.shape[0], np.float32)
    for start in range(0, images.shape[0], batch):
        gray = np.asarray(images[start:start + batch], np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        laplacian = (gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:]
                     - 4 * gray[:, 1:-1, 1:-1])
        spread = gray[:, 1:-1, 1:-1].reshape(len(gray), -1).std(axis=1)
        out[start:start + len(gray)] = laplacian.reshape(len(gray), -1).std(axis=1) / np.maximum(spread, 1.0)
    return out


def check_health(images, *, files_root: Path | None = None, n_jobs: int = 1) -> Health:
    """Runs CleanVision's checks over a dataset.

    Args:
        images: the `ImageSet` (`load_images`).
        files_root: the folder its ids are relative to (`DataScan.root`): when every file is there, the
            original files are checked; default None checks the decoded images.
        n_jobs: CleanVision's worker processes for files; default 1. More forks the process, which
            deadlocks one that has imported TensorFlow (the `inspect` job): only for a process without it.

    Returns:
        The `Health`.
    """
    from cleanvision import Imagelab, __version__

    paths = [Path(files_root) / image_id for image_id in images.ids] if files_root is not None else []
    use_files = bool(paths) and all(p.is_file() for p in paths)
    if use_files:
        lab = Imagelab(filepaths=[str(p) for p in paths], verbose=False)
    else:
        lab = Imagelab(torchvision_dataset=_DecodedImages(images), verbose=False)
    lab.find_issues(n_jobs=n_jobs if use_files else 1, verbose=False)
    table = lab.issues.copy()  # one row per image, in the order given
    sharpness = blur_scores(images.images)
    table["is_blurry_issue"] = sharpness < BLUR_FACTOR * float(np.median(sharpness)) if len(sharpness) else []
    table["blurry_score"] = sharpness
    labels = np.asarray(images.labels)
    issues, ids, per_class, scores = {}, {}, {}, {}
    for issue in HEALTH_ISSUES:
        column = f"is_{issue}_issue"
        flagged = np.flatnonzero(table[column].to_numpy(bool)) if column in table else np.zeros(0, np.int64)
        issues[issue] = flagged.tolist()
        ids[issue] = [str(images.ids[i]) for i in flagged]
        counts = np.bincount(labels[flagged], minlength=len(images.class_names)) if flagged.size else []
        per_class[issue] = {name: int(n) for name, n in zip(images.class_names, counts) if n}
        if f"{issue}_score" in table:
            scores[issue] = [round(float(s), 4) for s in table[f"{issue}_score"].to_numpy(float)]
    log.info("health of %s: %s", images.source, {k: len(v) for k, v in issues.items() if v})
    return Health(images.fingerprint, str(images.source), len(images), issues, ids, per_class,
                  f"cleanvision {__version__}", use_files, scores)


def health_file(cache_dir: Path, fingerprint: str) -> Path:
    """Where the health of the data with `fingerprint` is cached."""
    if not fingerprint or not all(c in "0123456789abcdef" for c in fingerprint):
        raise ValueError(f"fingerprint {fingerprint!r}: expected a hex digest")
    return Path(cache_dir) / HEALTH_DIR / f"{fingerprint}.json"


def save_health(cache_dir: Path, health: Health) -> Path:
    """Writes `health` into the workspace cache (atomically); returns its file."""
    path = health_file(cache_dir, health.fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(health.to_dict()))
    os.replace(tmp, path)
    return path


def read_health(workspace, fingerprint: str | None) -> Health | None:
    """The cached health of the data with `fingerprint` (`ImageSet.fingerprint`, a run's data report), or None."""
    if not fingerprint:
        return None
    try:
        return Health.from_dict(json.loads(health_file(workspace.cache_dir, fingerprint).read_text()))
    except (OSError, ValueError, KeyError):
        return None
