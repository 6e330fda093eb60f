"""Suspected label errors by self-confidence (confident learning), and their CSV export."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.evaluation.predictions import Predictions


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
