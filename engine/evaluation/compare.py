"""Comparing two runs on one test set: side-by-side metrics, per-class F1 deltas, McNemar's test."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.evaluation.metrics import Evaluation, evaluate
from engine.evaluation.predictions import Predictions

SIGNIFICANCE = 0.05
EXACT_MCNEMAR_BELOW = 25  # discordant pairs; below this the exact binomial test is used


class NotComparable(ValueError):
    """Two runs were not evaluated on the same test set; the message says how they differ."""


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


def shared_test_images(a: Predictions, b: Predictions, *, labels_from: str = "b") -> tuple[Predictions, Predictions,
                                                                                          int]:
    """`a` and `b` cut to the images both were tested on (by id, in `a`'s order), labelled alike.

    For runs on different versions of one dataset (a relabelled or pruned child and its parent), whose
    fingerprints differ: `compare_runs` on the result shows which predictions flipped and McNemar's test.

    Args:
        a: the first run's predictions.
        b: the second run's predictions.
        labels_from: whose labels both are scored against, `"a"` or `"b"` (default): the newer
            version's, whose relabels are the fixes.

    Returns:
        `(a_shared, b_shared, relabelled)`: the two cut to the shared images (each keeps its own dataset
        `indices`), and how many of those images the two label differently.

    Raises:
        NotComparable: different classes, or no image in common.
    """
    if list(a.class_names) != list(b.class_names):
        raise NotComparable(f"the runs have different classes: {list(a.class_names)} vs {list(b.class_names)}")
    where = {sample_id: i for i, sample_id in enumerate(b.ids.tolist())}
    in_a = np.array([i for i, sample_id in enumerate(a.ids.tolist()) if sample_id in where], dtype=np.int64)
    if in_a.size == 0:
        raise NotComparable("the two runs share no test image")
    in_b = np.array([where[sample_id] for sample_id in a.ids[in_a].tolist()], dtype=np.int64)
    labels = (b.labels[in_b] if labels_from == "b" else a.labels[in_a]).astype(np.int64)
    relabelled = int(np.count_nonzero(a.labels[in_a] != b.labels[in_b]))
    cut_a = Predictions(a.probabilities[in_a], labels, a.ids[in_a], a.indices[in_a], list(a.class_names), None,
                        a.run_id)
    cut_b = Predictions(b.probabilities[in_b], labels, b.ids[in_b], b.indices[in_b], list(b.class_names), None,
                        b.run_id)
    return cut_a, cut_b, relabelled
