"""Predictions -> metrics: accuracy, top-k, per-class P/R/F1, confusion, calibration, ranked mistakes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from engine.evaluation.predictions import Predictions

ECE_BINS = 15
TOP_K = (1, 3, 5)


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
