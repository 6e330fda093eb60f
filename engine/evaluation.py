"""Predictions -> metrics: accuracy, top-k, per-class P/R/F1, confusion, calibration, mistakes,
suspected label errors, and the comparison of two runs on one test set.

Everything here works on a run's saved test predictions (`predictions.npz`) with NumPy and
scikit-learn, without TensorFlow, so the dashboard can call it on its script thread.
Only `predict_folder` (a fresh evaluation of a new image folder) loads the model, and it
imports TensorFlow inside itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine import store as st

log = logging.getLogger(__name__)
ECE_BINS = 15
TOP_K = (1, 3, 5)
SIGNIFICANCE = 0.05
EXACT_MCNEMAR_BELOW = 25  # discordant pairs; below this the exact binomial test is used


class NoPredictions(LookupError):
    """A run has no saved test predictions (it has not completed); the message says why."""


class NotComparable(ValueError):
    """Two runs were not evaluated on the same test set; the message says how they differ."""


@dataclass(frozen=True, eq=False)
class Predictions:
    """One run's predictions on its test split (or on a folder), as stored in `predictions.npz`.

    Args:
        probabilities: `(N, C)` float32 class probabilities.
        labels: `(N,)` int given labels (indices into `class_names`).
        ids: `(N,)` stable image ids, e.g. `digits/17`.
        indices: `(N,)` row indices into the run's dataset (`load_images` with its data config).
        class_names: the C class names in label order.
        fingerprint: the dataset fingerprint from the run's data report, if known.
        run_id: the run the predictions came from, if any.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    indices: np.ndarray
    class_names: list[str]
    fingerprint: str | None = None
    run_id: str | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class, per sample."""
        return self.probabilities.max(axis=1)

    @property
    def given_probability(self) -> np.ndarray:
        """The probability the model gives the labelled class (the self-confidence)."""
        return self.probabilities[np.arange(len(self)), self.labels]

    @classmethod
    def load(cls, path: Path, *, fingerprint: str | None = None, run_id: str | None = None) -> Predictions:
        with np.load(path, allow_pickle=False) as data:
            return cls(probabilities=np.asarray(data["probabilities"], np.float32),
                       labels=np.asarray(data["labels"], np.int64), ids=np.asarray(data["ids"], str),
                       indices=np.asarray(data["indices"], np.int64),
                       class_names=[str(c) for c in data["class_names"]], fingerprint=fingerprint, run_id=run_id)


def load_predictions(workspace: st.Workspace, run_id: str) -> Predictions:
    """Loads a run's test predictions with its dataset fingerprint.

    Raises:
        NoPredictions: the run has no `predictions.npz` (not completed, or failed before testing).
    """
    path = workspace.run_file(run_id, st.PREDICTIONS_FILE)
    if not path.exists():
        status = workspace.get_run(run_id).status
        raise NoPredictions(f"run {run_id} has no test predictions (status: {status}); only a completed run "
                            "can be evaluated")
    fingerprint = None
    report = workspace.run_file(run_id, st.DATA_REPORT_FILE)
    if report.exists():
        fingerprint = json.loads(report.read_text()).get("fingerprint")
    return Predictions.load(path, fingerprint=fingerprint, run_id=run_id)


# -- metrics --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class, with its number of test samples (support)."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ConfusedPair:
    """How often samples of class `true` were predicted as `predicted` (`share` of that class's samples)."""

    true: str
    predicted: str
    count: int
    share: float


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin of the reliability diagram, `(lower, upper]`; accuracy/confidence None when empty."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Evaluation:
    """Every headline metric of one set of predictions. `to_dict()` gives plain JSON types."""

    num_samples: int
    class_names: list[str]
    accuracy: float
    top_k_accuracy: dict[int, float]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float
    per_class: list[ClassMetrics]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    confusion_normalized: list[list[float]]  # each row divided by its class's support (0 for an empty row)
    confused_pairs: list[ConfusedPair]
    ece: float
    calibration: list[CalibrationBin] = field(default_factory=list)

    @property
    def mistakes(self) -> int:
        return self.num_samples - int(np.trace(np.asarray(self.confusion_matrix)))

    def to_dict(self) -> dict:
        result = asdict(self)
        result["top_k_accuracy"] = {str(k): v for k, v in self.top_k_accuracy.items()}
        result["mistakes"] = self.mistakes
        return result


def evaluate(predictions: Predictions, *, bins: int = ECE_BINS, top_pairs: int = 10,
             top_k: tuple[int, ...] = TOP_K) -> Evaluation:
    """Computes the metrics of one set of predictions with scikit-learn.

    Args:
        predictions: the run's (or a folder's) predictions.
        bins: equal-width confidence bins for the calibration error; default 15.
        top_pairs: how many most-confused (true, predicted) pairs to list; default 10.
        top_k: the k of the top-k accuracies, default (1, 3, 5); each k below the class count is kept.

    Returns:
        An `Evaluation`.
    """
    from sklearn import metrics as skm

    if len(predictions) == 0:
        raise ValueError("no predictions to evaluate (the test set is empty)")
    names = list(predictions.class_names)
    classes = list(range(len(names)))
    y, p, probs = predictions.labels, predictions.predicted, predictions.probabilities
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, p, labels=classes, zero_division=0)
    averaged = {avg: skm.precision_recall_fscore_support(y, p, labels=classes, average=avg, zero_division=0)[:3]
                for avg in ("macro", "weighted")}
    accuracy = float(skm.accuracy_score(y, p))
    top = {1: accuracy}
    if len(names) > 2:  # scikit-learn's top-k takes (N, C) scores only beyond two classes
        for k in sorted(set(top_k) - {1}):
            if 1 < k < len(names):
                top[k] = float(skm.top_k_accuracy_score(y, probs, k=k, labels=classes))
    confusion = skm.confusion_matrix(y, p, labels=classes)
    rows = confusion.sum(axis=1, keepdims=True)
    normalized = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top_pairs]
    pairs = [ConfusedPair(names[i], names[j], int(off[i, j]), float(normalized[i, j]))
             for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]
    ece, calibration = calibration_bins(predictions.confidence, p == y, bins=bins)
    return Evaluation(
        num_samples=len(predictions), class_names=names, accuracy=accuracy, top_k_accuracy=top,
        macro_precision=float(averaged["macro"][0]), macro_recall=float(averaged["macro"][1]),
        macro_f1=float(averaged["macro"][2]), weighted_precision=float(averaged["weighted"][0]),
        weighted_recall=float(averaged["weighted"][1]), weighted_f1=float(averaged["weighted"][2]),
        per_class=[ClassMetrics(n, float(a), float(b), float(c), int(s))
                   for n, a, b, c, s in zip(names, precision, recall, f1, support)],
        confusion_matrix=confusion.tolist(), confusion_normalized=normalized.tolist(), confused_pairs=pairs,
        ece=ece, calibration=calibration)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, *, bins: int = ECE_BINS
                     ) -> tuple[float, list[CalibrationBin]]:
    """Expected calibration error and reliability-diagram bins.

    Samples fall into `bins` equal-width bins `(k/bins, (k+1)/bins]` by confidence; the ECE is
    the sample-weighted mean of |accuracy - mean confidence| over the bins.

    Returns:
        `(ece, bins)`.
    """
    confidence = np.asarray(confidence, float)
    correct = np.asarray(correct, bool)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    result, ece = [], 0.0
    for k in range(bins):
        members = which == k
        count = int(members.sum())
        conf = float(confidence[members].mean()) if count else None
        acc = float(correct[members].mean()) if count else None
        if count:
            ece += count / max(1, confidence.size) * abs(acc - conf)
        result.append(CalibrationBin(k / bins, (k + 1) / bins, count, conf, acc))
    return float(ece), result


def ranked_mistakes(predictions: Predictions, *, true: int | None = None, predicted: int | None = None,
                    mistakes_only: bool = True) -> np.ndarray:
    """Sample positions ordered by confidence, most confident first.

    Args:
        predictions: the predictions.
        true: keep only samples labelled with this class index; None = any.
        predicted: keep only samples predicted as this class index; None = any.
        mistakes_only: keep only misclassified samples (default True).

    Returns:
        An int array of positions into `predictions`.
    """
    keep = np.ones(len(predictions), bool)
    if mistakes_only:
        keep &= predictions.predicted != predictions.labels
    if true is not None:
        keep &= predictions.labels == true
    if predicted is not None:
        keep &= predictions.predicted == predicted
    positions = np.flatnonzero(keep)
    return positions[np.argsort(-predictions.confidence[positions], kind="stable")]


# -- suspected label errors -------------------------------------------------------------


@dataclass(frozen=True)
class LabelIssue:
    """A sample whose given label the model doubts, with the label it suggests instead."""

    position: int  # into the predictions
    index: int  # into the run's dataset
    id: str
    given: str
    suggested: str
    self_confidence: float  # the probability of the given label
    suggested_probability: float
    margin: float  # self_confidence - the best other class's probability (negative = doubted)


def find_label_issues(predictions: Predictions) -> list[LabelIssue]:
    """Suspected label errors by confident learning (Northcutt et al., 2021), ranked by self-confidence.

    Each class j gets a threshold t_j: the mean probability of j over the samples labelled j.
    A sample labelled y is suspect when p(y) < t_y while some other class k has p(k) >= t_k;
    the suggestion is the most probable such k. Suspects are ranked by p(y) ascending, then
    by margin. Use out-of-sample predictions (a test split, or cross-validation).

    Returns:
        The suspects, most doubtful first.
    """
    probs, labels = predictions.probabilities.astype(np.float64), predictions.labels
    n, c = probs.shape
    thresholds = np.full(c, np.inf)  # a class nobody is labelled with is never "confidently" predicted
    for j in range(c):
        members = labels == j
        if members.any():
            thresholds[j] = probs[members, j].mean()
    given = probs[np.arange(n), labels]
    above = probs >= thresholds[None, :]
    above[np.arange(n), labels] = False
    suspect = (given < thresholds[labels]) & above.any(axis=1)
    others = probs.copy()
    others[np.arange(n), labels] = -np.inf
    margin = given - others.max(axis=1)
    candidates = np.where(above, probs, -np.inf)
    suggested = candidates.argmax(axis=1)
    positions = np.flatnonzero(suspect)
    positions = positions[np.lexsort((margin[positions], given[positions]))]
    names = predictions.class_names
    return [LabelIssue(int(i), int(predictions.indices[i]), str(predictions.ids[i]), names[labels[i]],
                       names[suggested[i]], float(given[i]), float(probs[i, suggested[i]]), float(margin[i]))
            for i in positions]


def label_issues_csv(issues: list[LabelIssue]) -> str:
    """The ranked suspects as CSV (rank, id, dataset index, given and suggested labels, scores)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "id", "index", "given_label", "suggested_label", "given_label_probability",
                     "suggested_label_probability", "margin"])
    for rank, issue in enumerate(issues, 1):
        writer.writerow([rank, issue.id, issue.index, issue.given, issue.suggested, f"{issue.self_confidence:.6f}",
                         f"{issue.suggested_probability:.6f}", f"{issue.margin:.6f}"])
    return out.getvalue()


# -- comparing two runs ------------------------------------------------------------------


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on the samples where exactly one of two models is right."""

    a_only: int  # A right, B wrong
    b_only: int  # B right, A wrong
    statistic: float | None  # chi-square with continuity correction; None for the exact test
    p_value: float
    method: str  # "exact binomial" or "chi-square (continuity corrected)"


def mcnemar(a_only: int, b_only: int) -> McNemar:
    """McNemar's test: exact two-sided binomial below 25 discordant pairs, else chi-square with correction."""
    from scipy import stats

    n = a_only + b_only
    if n == 0:
        return McNemar(a_only, b_only, None, 1.0, "exact binomial")
    if n < EXACT_MCNEMAR_BELOW:
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(a_only, b_only), n, 0.5)))
        return McNemar(a_only, b_only, None, p, "exact binomial")
    statistic = (abs(a_only - b_only) - 1) ** 2 / n
    return McNemar(a_only, b_only, float(statistic), float(stats.chi2.sf(statistic, 1)),
                   "chi-square (continuity corrected)")


@dataclass(frozen=True)
class ClassDelta:
    """One class's F1 in both runs; `delta` = B - A."""

    name: str
    f1_a: float
    f1_b: float
    delta: float
    recall_a: float
    recall_b: float


@dataclass(frozen=True)
class Comparison:
    """Two runs on one test set: both evaluations, per-class deltas, disagreements and McNemar's verdict."""

    a: Evaluation
    b: Evaluation
    class_deltas: list[ClassDelta]
    disagreements: list[int]  # positions (in A's order) where the two predict different classes
    a_only: list[int]  # positions A gets right and B wrong
    b_only: list[int]
    test: McNemar
    verdict: str

    def to_dict(self) -> dict:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "class_deltas": [asdict(d) for d in self.class_deltas],
                "disagreements": self.disagreements, "a_only": self.a_only, "b_only": self.b_only,
                "mcnemar": asdict(self.test), "verdict": self.verdict}


def align(a: Predictions, b: Predictions) -> Predictions:
    """`b` reordered to `a`'s sample order; raises `NotComparable` unless both cover the same test set."""
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        raise NotComparable("the two runs used different data (dataset fingerprints differ); compare runs "
                            "trained on the same dataset with the same split settings")
    if list(a.class_names) != list(b.class_names):
        raise NotComparable(f"the runs have different classes: {list(a.class_names)} vs {list(b.class_names)}")
    if len(a) != len(b) or set(a.ids.tolist()) != set(b.ids.tolist()):
        only_a = len(set(a.ids.tolist()) - set(b.ids.tolist()))
        raise NotComparable(f"the runs were tested on different images ({len(a)} vs {len(b)} test images, "
                            f"{only_a} only in the first); use the same data settings (split fractions, seed, "
                            "max per class)")
    where = {sample_id: i for i, sample_id in enumerate(b.ids.tolist())}
    order = np.array([where[sample_id] for sample_id in a.ids.tolist()], dtype=np.int64)
    if not np.array_equal(a.labels, b.labels[order]):
        raise NotComparable("the same test images carry different labels in the two runs")
    return Predictions(b.probabilities[order], b.labels[order], b.ids[order], b.indices[order], list(b.class_names),
                       b.fingerprint, b.run_id)


def compare_runs(a: Predictions, b: Predictions, *, alpha: float = SIGNIFICANCE) -> Comparison:
    """Compares two runs' predictions on the same test set.

    Args:
        a: the first run's predictions (the baseline).
        b: the second run's predictions; reordered to match `a`.
        alpha: significance level for the verdict; default 0.05.

    Returns:
        A `Comparison`. Raises `NotComparable` when the test sets differ.
    """
    b = align(a, b)
    ev_a, ev_b = evaluate(a), evaluate(b)
    right_a, right_b = a.predicted == a.labels, b.predicted == b.labels
    a_only, b_only = np.flatnonzero(right_a & ~right_b), np.flatnonzero(right_b & ~right_a)
    test = mcnemar(int(a_only.size), int(b_only.size))
    deltas = [ClassDelta(ca.name, ca.f1, cb.f1, cb.f1 - ca.f1, ca.recall, cb.recall)
              for ca, cb in zip(ev_a.per_class, ev_b.per_class)]
    return Comparison(ev_a, ev_b, deltas, np.flatnonzero(a.predicted != b.predicted).tolist(), a_only.tolist(),
                      b_only.tolist(), test, verdict(ev_a.accuracy, ev_b.accuracy, test, alpha))


def verdict(accuracy_a: float, accuracy_b: float, test: McNemar, alpha: float = SIGNIFICANCE) -> str:
    """A one-sentence, plain-language reading of McNemar's test."""
    counts = f"A alone gets {test.a_only} right, B alone gets {test.b_only} right"
    if test.a_only + test.b_only == 0:
        return "The two runs get exactly the same test images right: no difference to test."
    if test.p_value < alpha:
        better, worse = ("B", "A") if test.b_only > test.a_only else ("A", "B")
        return (f"{better} is significantly better than {worse} on this test set (p = {test.p_value:.3g} < {alpha}; "
                f"{counts}).")
    return (f"No significant difference (p = {test.p_value:.3g} ≥ {alpha}; {counts}): accuracy "
            f"{100 * accuracy_a:.2f}% vs {100 * accuracy_b:.2f}% could be chance on {_describe_n(test)}.")


def _describe_n(test: McNemar) -> str:
    n = test.a_only + test.b_only
    return f"{n} disagreeing image{'s' * (n != 1)}"


# -- fresh evaluation of a new folder or a split (imports TensorFlow) ----------------------------------

SPLIT_PREFIX = "split:"  # an evaluation source `split:train|val|test` re-predicts one of the run's own splits
SPLITS = ("train", "val", "test")
EVALUATE_JOB = "evaluate"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class EvaluationError(ValueError):
    """An evaluation request that cannot run (bad name or source, or one is already running)."""


def save_predictions(path: Path, probabilities, labels, ids, indices, class_names) -> None:
    """Writes predictions as `predictions.npz` holds them, atomically (temp file, then rename)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, probabilities=np.asarray(probabilities, np.float32),
                        labels=np.asarray(labels, np.int32), ids=np.asarray(ids, dtype=str),
                        indices=np.asarray(indices, np.int64), class_names=np.asarray(class_names, dtype=str))
    os.replace(tmp, path)


def _run_classes(workspace: st.Workspace, run_id: str) -> list[str]:
    return list(json.loads(workspace.run_file(run_id, st.DATA_REPORT_FILE).read_text())["class_names"])


def _load_model(workspace: st.Workspace, run_id: str):
    model_path = workspace.run_file(run_id, st.MODEL_FILE)
    if not model_path.exists():
        raise NoPredictions(f"run {run_id} has no saved model (status: {workspace.get_run(run_id).status})")
    import keras

    import engine.models  # noqa: F401 - registers the custom layers before loading

    return keras.models.load_model(model_path, compile=False)


def _predict_batches(model, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, num_classes: int, *,
                     batch_size: int, on_batch: Callable[[int, int], None] | None) -> np.ndarray:
    """The model's `(len(indices), C)` probabilities over `images[indices]`, a batch at a time (flat memory)."""
    import keras

    from engine.data import make_dataset

    dataset = make_dataset(images, labels, indices=indices, batch_size=batch_size, training=False)
    probabilities = np.empty((len(indices), num_classes), np.float32)
    done = 0
    for x, _ in dataset:
        out = keras.ops.convert_to_numpy(model(x, training=False))
        probabilities[done:done + out.shape[0]] = out
        done += out.shape[0]
        if on_batch:
            on_batch(done, len(indices))
    return probabilities


def predict_folder(workspace: st.Workspace, run_id: str, folder: str | Path, *, batch_size: int = 256,
                   on_batch: Callable[[int, int], None] | None = None) -> Predictions:
    """Runs a run's model over an image folder in batches; memory stays flat in the folder's size.

    The folder needs one sub-folder per class, named like the run's classes. Images are decoded
    into the workspace cache (a memmap) and read a batch at a time; only the `(N, C)` probabilities
    are kept.

    Args:
        workspace: the workspace holding the run.
        run_id: a run with a saved model.
        folder: an image folder (or .zip of one).
        batch_size: images per forward pass; default 256.
        on_batch: called with `(done, total)` after each batch (it may raise to stop).

    Returns:
        `Predictions` with labels mapped to the run's class indices.

    Raises:
        NoPredictions: the run has no model yet. DatasetError: the folder is unusable or its
        classes differ from the run's (the message names the missing and extra ones).
    """
    from engine.data import DatasetError, load_images

    run = workspace.get_run(run_id)
    if not workspace.run_file(run_id, st.MODEL_FILE).exists():
        raise NoPredictions(f"run {run_id} has no saved model (status: {run.status})")
    run_classes = _run_classes(workspace, run_id)
    images = load_images(str(folder), run.config.data.image_size, cache_dir=workspace.cache_dir)
    missing = sorted(set(run_classes) - set(images.class_names))
    extra = sorted(set(images.class_names) - set(run_classes))
    if missing or extra:
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"not known to the model {', '.join(map(repr, extra))}"] if extra else [])
        raise DatasetError(f"the folder's classes do not match the run's ({'; '.join(parts)}); it needs one "
                           f"sub-folder per class named {', '.join(run_classes)}")
    mapping = np.array([run_classes.index(name) for name in images.class_names], dtype=np.int64)
    labels = mapping[np.asarray(images.labels, np.int64)]
    indices = np.arange(len(images), dtype=np.int64)
    probabilities = _predict_batches(_load_model(workspace, run_id), images.images, labels, indices,
                                     len(run_classes), batch_size=batch_size, on_batch=on_batch)
    log.info("predicted %d images of %s with run %s", len(indices), folder, run_id)
    return Predictions(probabilities, labels, np.asarray(images.ids, str), indices, run_classes,
                       images.fingerprint, run_id)


def predict_split(workspace: st.Workspace, run_id: str, split: str, *, batch_size: int = 256,
                  on_batch: Callable[[int, int], None] | None = None) -> Predictions:
    """Re-predicts one of the run's own splits (`train`, `val` or `test`), reloaded with its config and seeds.

    Raises:
        NoPredictions: the run has no model yet. DatasetError: the run's data no longer loads,
        or its classes changed since training.
    """
    from engine.data import DatasetError, load_images, split_indices

    if split not in SPLITS:
        raise EvaluationError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    run = workspace.get_run(run_id)
    if not workspace.run_file(run_id, st.MODEL_FILE).exists():
        raise NoPredictions(f"run {run_id} has no saved model (status: {run.status})")
    data = run.config.data
    run_classes = _run_classes(workspace, run_id)
    images = load_images(data.source, data.image_size, max_per_class=data.max_per_class, seed=data.seed,
                         cache_dir=workspace.cache_dir)
    if list(images.class_names) != run_classes:
        raise DatasetError(f"the run's data now has classes {', '.join(images.class_names)}; it was trained on "
                           f"{', '.join(run_classes)}")
    parts = split_indices(images.labels, data.val_fraction, data.test_fraction, data.seed,
                          class_names=images.class_names)
    indices = np.asarray(getattr(parts, split), np.int64)
    labels = np.asarray(images.labels, np.int64)
    probabilities = _predict_batches(_load_model(workspace, run_id), images.images, labels, indices,
                                     len(run_classes), batch_size=batch_size, on_batch=on_batch)
    log.info("predicted the %s split (%d images) with run %s", split, len(indices), run_id)
    return Predictions(probabilities, labels[indices], np.asarray([images.ids[i] for i in indices], str), indices,
                       run_classes, images.fingerprint, run_id)


def predict_source(workspace: st.Workspace, run_id: str, source: str, *, batch_size: int = 256,
                   on_batch: Callable[[int, int], None] | None = None) -> Predictions:
    """Predicts `split:<name>` (one of the run's splits) or a folder/.zip path; see `predict_split`/`predict_folder`."""
    if source.startswith(SPLIT_PREFIX):
        return predict_split(workspace, run_id, source[len(SPLIT_PREFIX):], batch_size=batch_size,
                             on_batch=on_batch)
    path = Path(source).expanduser()
    if not path.exists():
        raise EvaluationError(f"{source}: no such folder or .zip")
    return predict_folder(workspace, run_id, path.resolve(), batch_size=batch_size, on_batch=on_batch)


def evaluation_path(workspace: st.Workspace, run_id: str, name: str, suffix: str = ".npz") -> Path:
    return workspace.run_dir(run_id) / st.EVALUATIONS_DIR / f"{name}{suffix}"


def check_evaluation_name(name: str) -> str:
    if not name or not set(name) <= _NAME_CHARS or name.startswith(".") or name == "request":
        raise EvaluationError(f"evaluation name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def default_evaluation_name(source: str) -> str:
    """`val-split` for `split:val`, else the folder's or zip's base name (made name-safe)."""
    if source.startswith(SPLIT_PREFIX):
        return f"{source[len(SPLIT_PREFIX):]}-split"
    stem = Path(source.rstrip("/")).stem or "folder"
    return "".join(c if c in _NAME_CHARS else "_" for c in stem).lstrip(".") or "folder"


def saved_evaluations(workspace: st.Workspace, run_id: str) -> list[str]:
    """The names of a run's saved fresh evaluations, newest first."""
    folder = workspace.run_dir(run_id) / st.EVALUATIONS_DIR
    files = [p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz")] if folder.is_dir() else []
    return [p.stem for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]


def evaluation_source(workspace: st.Workspace, run_id: str, name: str) -> str | None:
    """What a saved evaluation predicted (`split:val` or a path), if recorded."""
    try:
        return json.loads(evaluation_path(workspace, run_id, name, ".json").read_text()).get("source")
    except (OSError, ValueError):
        return None


def load_evaluation(workspace: st.Workspace, run_id: str, name: str) -> Predictions:
    """A saved fresh evaluation as `Predictions` (every metric here works on it unchanged)."""
    path = evaluation_path(workspace, run_id, check_evaluation_name(name))
    if not path.exists():
        raise NoPredictions(f"run {run_id} has no evaluation named {name!r}")
    fingerprint = None
    with contextlib.suppress(OSError, ValueError):
        fingerprint = json.loads(evaluation_path(workspace, run_id, name, ".json").read_text()).get("fingerprint")
    return Predictions.load(path, fingerprint=fingerprint, run_id=run_id)


def request_evaluation(workspace: st.Workspace, run_id: str, source: str, name: str | None = None):
    """Writes `evaluations/request.json` and queues an `evaluate` job; returns the job.

    Raises:
        EvaluationError: a bad name, split or path, or an evaluation of this run is already active.
        NoPredictions: the run has no saved model.
    """
    from engine.jobs import submit_job

    name = check_evaluation_name(name or default_evaluation_name(source))
    if source.startswith(SPLIT_PREFIX):
        if source[len(SPLIT_PREFIX):] not in SPLITS:
            raise EvaluationError(f"{source}: expected one of {', '.join(SPLIT_PREFIX + s for s in SPLITS)}")
    elif not Path(source).expanduser().exists():
        raise EvaluationError(f"{source}: no such folder or .zip on the server")
    if not workspace.run_file(run_id, st.MODEL_FILE).exists():
        raise NoPredictions(f"run {run_id} has no saved model (status: {workspace.get_run(run_id).status})")
    current = workspace.latest_job(run_id, EVALUATE_JOB)
    if current is not None and current.active:
        raise EvaluationError(f"run {run_id} is already being evaluated (job {current.id})")
    path = workspace.run_file(run_id, st.EVALUATION_REQUEST_FILE)
    path.parent.mkdir(exist_ok=True)
    st.write_json_atomic(path, {"name": name, "source": source})
    return submit_job(run_id, EVALUATE_JOB, workspace)


def run_evaluation_job(context, *, batch_size: int = 256) -> Predictions:
    """The body of an `evaluate` job: reads `evaluations/request.json`, predicts in batches with progress
    and cancel checks, and saves `evaluations/<name>.npz` (+ `<name>.json` with the source)."""
    from engine.jobs import JobCancelled

    request = json.loads(context.run_file(st.EVALUATION_REQUEST_FILE).read_text())
    source = str(request["source"])
    name = check_evaluation_name(str(request.get("name") or default_evaluation_name(source)))
    context.report(0.0, f"loading the model and {source}")

    def on_batch(done: int, total: int) -> None:
        context.report(done / max(total, 1), f"predicted {done:,} of {total:,} images")
        if context.should_stop(max_age=0.5):
            raise JobCancelled()

    predictions = predict_source(context.workspace, context.run_id, source, batch_size=batch_size,
                                 on_batch=on_batch)
    context.raise_if_cancelled()
    out = evaluation_path(context.workspace, context.run_id, name)
    out.parent.mkdir(exist_ok=True)
    save_predictions(out, predictions.probabilities, predictions.labels, predictions.ids, predictions.indices,
                     predictions.class_names)
    st.write_json_atomic(evaluation_path(context.workspace, context.run_id, name, ".json"),
                         {"source": source, "fingerprint": predictions.fingerprint, "job_id": context.job.id,
                          "num_samples": len(predictions)})
    accuracy = float(np.mean(predictions.predicted == predictions.labels)) if len(predictions) else 0.0
    context.report(1.0, f"done: {len(predictions):,} images, accuracy {accuracy:.4f}")
    return predictions


def format_table(evaluation: Evaluation) -> str:
    """A human-readable summary: headline metrics, per-class table, confusion matrix."""
    lines = [f"samples   {evaluation.num_samples}   mistakes {evaluation.mistakes}",
             f"accuracy  {evaluation.accuracy:.4f}   " + "   ".join(
                 f"top-{k} {v:.4f}" for k, v in evaluation.top_k_accuracy.items() if k > 1),
             f"macro     P {evaluation.macro_precision:.4f}  R {evaluation.macro_recall:.4f}  "
             f"F1 {evaluation.macro_f1:.4f}",
             f"weighted  P {evaluation.weighted_precision:.4f}  R {evaluation.weighted_recall:.4f}  "
             f"F1 {evaluation.weighted_f1:.4f}",
             f"ECE       {evaluation.ece:.4f} ({len(evaluation.calibration)} bins)", ""]
    width = max(8, *(len(c.name) for c in evaluation.per_class))
    lines.append(f"{'class':<{width}}  {'precision':>9}  {'recall':>7}  {'f1':>7}  {'support':>7}")
    for c in evaluation.per_class:
        lines.append(f"{c.name:<{width}}  {c.precision:>9.4f}  {c.recall:>7.4f}  {c.f1:>7.4f}  {c.support:>7d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cell = max(5, len(str(max(max(r) for r in evaluation.confusion_matrix))) + 1)
    short = [name[:cell - 1] for name in evaluation.class_names]
    lines.append(" " * width + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(evaluation.class_names, evaluation.confusion_matrix):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    if evaluation.confused_pairs:
        lines += ["", "most confused: " + "; ".join(f"{p.true} -> {p.predicted} ({p.count})"
                                                     for p in evaluation.confused_pairs[:5])]
    return "\n".join(lines)
