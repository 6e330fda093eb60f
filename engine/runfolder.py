"""`RunFolder`: the one owner of a run's directory, `runs/<id>/` under the workspace root.

The folder is the contract between the dashboard, the CLI and the job processes (with the
store's tables): every file in it is named here, once, and nowhere else needs to know where
a file lives. Jobs write to the paths it names; pages and jobs read through its readers,
which return data. The layout (kept as existing workspaces have it)::

    config.json                 the run's RunConfig
    model.keras                 best checkpoint (by validation loss), saved atomically
    last.keras, last.json       the latest epoch's model with optimizer state, and what it holds (for Resume)
    job.log, tensorboard/       what the job processes printed; per-epoch summaries
    data_report.json            class names, counts per split, skipped files, fingerprint, layout
    weights.json                a transfer base's starting weights (source, sha256)
    predictions.npz             the test split: probabilities, labels, ids, indices, class_names
    evaluations/<name>.npz      fresh evaluations (keys as predictions.npz), each with <name>.json (its source)
    explanations/mistakes.json  the stored batch of explained mistakes; its maps in explanations/<batch>/
    exports/                    exported artifacts (named by `engine.export.formats.FORMATS`), report.json (parity)
                                and metadata.json
    inspect/                    embeddings.npz, neighbours.npz, report.json: what `engine.inspect` computed
    model_card.md, model_card.html
    published                   present: the run's demo opens by link without the password

Reading never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from engine import store
from engine.config import RunConfig

if TYPE_CHECKING:
    from engine.data import ImageSet, Split
    from engine.evaluation.predictions import Predictions

_CONFIG = store.CONFIG_FILE  # the store writes it with the run's row
_MODEL = "model.keras"
_LAST_CHECKPOINT = "last.keras"
_LAST_CHECKPOINT_INFO = "last.json"
_LOG = "job.log"
_TENSORBOARD = "tensorboard"
_RAY_TRAIN = "ray_train"  # Ray Train's storage path of a run trained across workers (its own bookkeeping only)
_DATA_REPORT = "data_report.json"
_WEIGHTS_RECORD = "weights.json"
_PREDICTIONS = "predictions.npz"
_PUBLISHED = "published"
_EXPLANATIONS_RECORD = "explanations/mistakes.json"
_EVALUATIONS = "evaluations"
_EXPLANATIONS = "explanations"
_EXPORTS = "exports"
_EXPORT_REPORT = "exports/report.json"
_EXPORT_METADATA = "exports/metadata.json"
_MODEL_CARD = "model_card.md"
_COMPRESS_REPORT = "compress_report.json"  # a compressed (child) run's comparison with its parent
_MODEL_CARD_HTML = "model_card.html"
_EMBEDDINGS = "inspect/embeddings.npz"  # every train/val/test image's features, map and predictions
_NEIGHBOURS = "inspect/neighbours.npz"  # each embedded image's nearest others by cosine
_INSPECT_REPORT = "inspect/report.json"  # duplicates, leakage, health counts, label issues
_RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")  # as `store.new_id` makes them


class RunFolder:
    """One run's directory: the paths its jobs write, and readers that return what they wrote.

    Args:
        workspace: the workspace holding the run.
        run_id: the run's full id.
    """

    def __init__(self, workspace: store.Workspace, run_id: str):
        self.workspace = workspace
        self.run_id = run_id
        self.path = workspace.run_dir(run_id)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- what jobs write ------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / _CONFIG

    @property
    def model_file(self) -> Path:
        """The best checkpoint (by validation loss), the model every stage after training uses."""
        return self.path / _MODEL

    @property
    def last_checkpoint(self) -> Path:
        """The latest epoch's model with its optimizer state (Resume continues from it)."""
        return self.path / _LAST_CHECKPOINT

    @property
    def last_checkpoint_info(self) -> Path:
        """`{"epoch", "metrics", "seed_states"}` of `last_checkpoint`."""
        return self.path / _LAST_CHECKPOINT_INFO

    @property
    def log_file(self) -> Path:
        return self.path / _LOG

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / _TENSORBOARD

    @property
    def ray_train_dir(self) -> Path:
        """Ray Train's storage path (`train.workers` > 1); the run's checkpoints stay in this folder's own files."""
        return self.path / _RAY_TRAIN

    @property
    def data_report_file(self) -> Path:
        return self.path / _DATA_REPORT

    @property
    def predictions_file(self) -> Path:
        """The test split's predictions, written once training has tested the best model."""
        return self.path / _PREDICTIONS

    @property
    def exports_dir(self) -> Path:
        return self.path / _EXPORTS

    @property
    def export_report_file(self) -> Path:
        """The parity report of the latest export."""
        return self.path / _EXPORT_REPORT

    @property
    def export_metadata_file(self) -> Path:
        """What a consumer of the exports needs: class names, input spec, quantization parameters."""
        return self.path / _EXPORT_METADATA

    @property
    def compress_report_file(self) -> Path:
        """A compressed run's report: what it was compressed from and how it compares (`engine.compress`)."""
        return self.path / _COMPRESS_REPORT

    def export_artifact(self, fmt: str) -> Path:
        """Where the export of format `fmt` (one of `engine.export.FORMATS`) is written: its `Format.artifact`."""
        from engine.export.formats import FORMATS  # at call time: engine.export imports this module

        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
        return self.exports_dir / FORMATS[fmt].artifact

    @property
    def evaluations_dir(self) -> Path:
        return self.path / _EVALUATIONS

    def evaluation_file(self, name: str, suffix: str = ".npz") -> Path:
        """A saved fresh evaluation: `.npz` (its predictions) or `.json` (its source and fingerprint)."""
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise ValueError(f"evaluation name {name!r}: not a file name")
        return self.evaluations_dir / f"{name}{suffix}"

    @property
    def explanations_dir(self) -> Path:
        return self.path / _EXPLANATIONS

    @property
    def explanations_record(self) -> Path:
        """The stored batch of explained mistakes; it names the folder (under `explanations_dir`) of its files."""
        return self.path / _EXPLANATIONS_RECORD

    @property
    def model_card_file(self) -> Path:
        return self.path / _MODEL_CARD

    @property
    def model_card_html_file(self) -> Path:
        return self.path / _MODEL_CARD_HTML

    @property
    def embeddings_file(self) -> Path:
        return self.path / _EMBEDDINGS

    @property
    def neighbours_file(self) -> Path:
        return self.path / _NEIGHBOURS

    @property
    def inspect_report_file(self) -> Path:
        return self.path / _INSPECT_REPORT

    def relative(self, path: Path) -> str:
        """`path` (inside this folder) as the records store it: relative, with forward slashes."""
        return Path(path).relative_to(self.path).as_posix()

    def resolve(self, relative: str) -> Path:
        """A path a record stores relative to this folder (an artifact, a map); ValueError if it leads outside."""
        path = (self.path / relative).resolve()
        if path != self.path.resolve() and self.path.resolve() not in path.parents:
            raise ValueError(f"{relative!r} is outside the run folder")
        return path

    # -- readers ------------------------------------------------------------------------------

    @property
    def has_model(self) -> bool:
        return self.model_file.is_file()

    @property
    def has_predictions(self) -> bool:
        return self.predictions_file.is_file()

    def config(self) -> RunConfig:
        """The run's configuration as its folder holds it. Raises OSError if `config.json` is gone."""
        return RunConfig.from_json(self.config_file.read_text())

    def data_report(self) -> dict[str, Any]:
        """What training found in the data (`class_names`, `counts` per split, `skipped`, `fingerprint`); {} if none."""
        return _read_json(self.data_report_file) or {}

    def class_names(self) -> list[str]:
        """The class names in the model's output order ([] before training has looked at the data).

        Training's own record comes first: the data report (written as the data loads), then the
        test predictions. The export metadata, a copy made later from a reload of the data, is the
        last resort, for a folder whose training records are gone.
        """
        names = self.data_report().get("class_names")
        if names is None and self.has_predictions:
            with contextlib.suppress(OSError, ValueError, KeyError):
                names = self.predictions().class_names
        if names is None:
            names = (self.export_metadata() or {}).get("class_names")
        return [str(name) for name in names or []]

    def predictions(self, name: str | None = None) -> Predictions:
        """The run's test predictions, or its saved fresh evaluation `name`, with the data's fingerprint.

        Raises:
            NoPredictions: there are none by that name (for the test split: the run has not completed).
        """
        from engine.evaluation.predictions import NoPredictions, Predictions

        if name is None:
            if not self.has_predictions:
                status = self.workspace.get_run(self.run_id).status
                raise NoPredictions(f"run {self.run_id} has no test predictions (status: {status}); only a "
                                    "completed run can be evaluated")
            fingerprint = self.data_report().get("fingerprint")
            return Predictions.load(self.predictions_file, fingerprint=fingerprint, run_id=self.run_id)
        path = self.evaluation_file(name)
        if not path.is_file():
            raise NoPredictions(f"run {self.run_id} has no evaluation named {name!r}")
        fingerprint = (_read_json(self.evaluation_file(name, ".json")) or {}).get("fingerprint")
        return Predictions.load(path, fingerprint=fingerprint, run_id=self.run_id)

    def evaluations(self) -> list[str]:
        """The names of the run's saved fresh evaluations, newest first."""
        folder = self.evaluations_dir
        files = [p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz")] if folder.is_dir() else []
        return [p.stem for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]

    def evaluation_source(self, name: str) -> str | None:
        """What a saved evaluation predicted (`split:val` or a folder/zip path), if recorded."""
        source = (_read_json(self.evaluation_file(name, ".json")) or {}).get("source")
        return None if source is None else str(source)

    def exports(self) -> dict[str, Path]:
        """The exported artifacts on disk, by format (in `engine.export.FORMATS` order)."""
        from engine.export.formats import FORMATS

        return {fmt: path for fmt in FORMATS if (path := self.export_artifact(fmt)).exists()}

    def export_report(self) -> dict | None:
        """The latest export's parity report as saved (`engine.export.read_report` types it), or None."""
        return _read_json(self.export_report_file)

    def export_metadata(self) -> dict | None:
        return _read_json(self.export_metadata_file)

    def compress_report(self) -> dict | None:
        return _read_json(self.compress_report_file)

    def explanations(self) -> dict | None:
        """The stored batch of explained mistakes as saved (`engine.explain.batch.load_mistakes` types it), or None."""
        return _read_json(self.explanations_record)

    def model_card(self, fmt: str = "md") -> str | None:
        """The model card as written (`md` or `html`), or None if none was written yet."""
        path = {"md": self.model_card_file, "html": self.model_card_html_file}[fmt]
        return path.read_text() if path.is_file() else None

    def dataset(self, predictions: Predictions | None = None, *,
                load: Callable[..., ImageSet] | None = None) -> ImageSet:
        """The run's dataset, reloaded with its config, checked against what the run recorded of it.

        The class names must still be those training saw, and every image of `predictions` must
        still be found, by index, under the id it was predicted with: otherwise a thumbnail, an
        explanation or an export would silently use another image.

        Args:
            predictions: what to check the images against; default the test predictions, when
                saved (during training there is nothing to check yet).
            load: `engine.data.load_images` or a caching stand-in with its signature (the dashboard's).

        Raises:
            DatasetError: the data no longer loads, or it changed since the run recorded it.
        """
        from engine.data import DatasetError, ManifestColumns, load_images

        data = self.config().data
        columns = ManifestColumns.from_config(data)
        options = {} if columns.is_default() else {"columns": columns}  # a manifest's columns, when named
        images = (load or load_images)(data.source, data.image_size, max_per_class=data.max_per_class,
                                       seed=data.seed, cache_dir=self.workspace.cache_dir, **options)
        trained_on = self.data_report().get("class_names")
        if trained_on is not None and list(images.class_names) != list(trained_on):
            raise DatasetError(f"the run's data now has classes {', '.join(images.class_names)}; it was trained on "
                               f"{', '.join(trained_on)}")
        if predictions is None and self.has_predictions:
            predictions = self.predictions()
        if predictions is not None:
            check_predicted_images(images, predictions)
        return images

    def split(self, images: ImageSet | None = None) -> Split:
        """The run's train/validation/test split of `images` (default: `dataset()`), as training made it."""
        from engine.data import split_dataset

        data = self.config().data
        images = self.dataset() if images is None else images
        return split_dataset(images, data.val_fraction, data.test_fraction, data.seed,
                             group_near_duplicates=data.group_near_duplicates)

    @property
    def weights_record_file(self) -> Path:
        """What a transfer run's base started from: `{"base", "source": imagenet|import|random, "sha256"}`."""
        return self.path / _WEIGHTS_RECORD

    def weights_record(self) -> dict[str, Any] | None:
        """The transfer base's starting weights as training recorded them; None for other models (or before)."""
        return _read_json(self.weights_record_file)

    def data_summary(self) -> dict[str, Any] | None:
        """What the run trained on, as `show --json` and the Runs page show it; None before the data loaded.

        Returns:
            `{"layout", "class_names", "splits": {"train": n, "val": n, "test": n}, "notes"}`.
        """
        report = self.data_report()
        if not report.get("class_names"):
            return None
        counts = report.get("counts") or {}
        return {"layout": report.get("layout", "class_folders"), "class_names": list(report["class_names"]),
                "splits": {part: int(sum(counts.get(part) or [])) for part in ("train", "val", "test")},
                "notes": list(report.get("notes") or [])}

    def damage(self) -> str | None:
        """Why the run's files are unusable (its folder or config deleted by hand), or None if they look whole."""
        if not self.path.is_dir():
            return f"its folder {self.path} is missing (deleted by hand?); its model and logs are gone"
        if not self.config_file.is_file():
            return f"its {_CONFIG} is missing from {self.path}"
        return None

    @property
    def published(self) -> bool:
        """True if the run's demo may be opened by link without the password (never for a non-id like `..`)."""
        return (isinstance(self.run_id, str) and _RUN_ID.fullmatch(self.run_id) is not None
                and (self.path / _PUBLISHED).is_file())

    def set_published(self, published: bool = True) -> None:
        """Publishes the run's demo read-only (or withdraws it). Raises RunNotFound for an unknown run."""
        self.workspace.get_run(self.run_id)
        marker = self.path / _PUBLISHED
        if published:
            marker.write_text(str(time.time()))
        else:
            marker.unlink(missing_ok=True)


def check_predicted_images(images: ImageSet, predictions: Predictions) -> None:
    """Raises DatasetError unless each predicted image is still found, by index, under the id it was predicted with."""
    from engine.data import DatasetError

    ids = images.ids
    if (predictions.indices.size and int(predictions.indices.max()) >= len(ids)) or any(
            ids[int(i)] != str(sample_id) for i, sample_id in zip(predictions.indices, predictions.ids)):
        raise DatasetError(f"the images of {images.source} have changed since they were predicted; the predicted "
                           "images cannot be found by id any more")


def _read_json(path: Path) -> Any:
    """A JSON file's value, or None if it is missing or does not parse."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
