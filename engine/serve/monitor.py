"""What the model server answered for a run, summarised: traffic, latency, drift against the test set, live accuracy.

`monitor_report` reads the prediction log (no TensorFlow) and the run's test predictions (the
reference a served model is compared with), and returns plain JSON-able data for
`python -m engine monitor RUN --json` and the Monitor page:

- `requests`: how many predictions are logged; `timeline`: counts per time bucket and source;
- `latency`: p50/p95/p99 ms per format;
- `class_mix` and `confidence`: the served share per class and confidence histogram beside the test set's;
- `drift`: per window of consecutive predictions, the population stability index (PSI) of the class
  mix and of confidence against the test set, with the usual bands in words (below 0.1 no
  significant shift, 0.1 to 0.25 a moderate shift, above 0.25 a significant shift);
- `live_accuracy`: accuracy on the predictions that got a feedback label;
- `least_confident`: the least confident recent inputs that still have their image.
"""

from __future__ import annotations

import math

import numpy as np

from engine.runfolder import RunFolder
from engine.store import PredictionLog, Workspace

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)
PSI_BANDS = ((0.1, "no significant shift"), (0.25, "moderate shift"), (math.inf, "significant shift"))
MIN_WINDOW = 50  # predictions per drift window at least, and 10 per class (PSI on fewer is mostly sampling noise)
MAX_WINDOWS = 12
PSEUDO_COUNT = 0.5  # added to every bin (Jeffreys): an empty bin in a small window is not infinite evidence


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (counts, smoothed by `PSEUDO_COUNT`)."""
    a = np.asarray(actual, dtype=np.float64) + PSEUDO_COUNT
    e = np.asarray(expected, dtype=np.float64) + PSEUDO_COUNT
    a, e = a / a.sum(), e / e.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def psi_band(value: float) -> str:
    """The PSI's band in words."""
    return next(words for limit, words in PSI_BANDS if value < limit)


def _counts(values: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(np.asarray(values, dtype=np.int64), minlength=classes)[:classes].astype(np.float64)


def _confidence_counts(confidence: np.ndarray) -> np.ndarray:
    return np.histogram(np.clip(confidence, 0, 1), bins=CONFIDENCE_BINS)[0].astype(np.float64)


def _share(counts: np.ndarray) -> list[float]:
    return (counts / max(counts.sum(), 1.0)).round(4).tolist()


def _percentiles(values: list[float]) -> dict:
    p50, p95, p99 = np.percentile(values, [50, 95, 99]) if values else (None, None, None)
    return {"count": len(values), "p50_ms": _round(p50), "p95_ms": _round(p95), "p99_ms": _round(p99)}


def _round(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


def window_size(requests: int, classes: int, window: int | None = None) -> int:
    """Predictions per drift window: as given, or at most `MAX_WINDOWS` windows of `MIN_WINDOW` (and 10 per class)
    or more."""
    if window:
        return window
    return max(MIN_WINDOW, 10 * classes, math.ceil(requests / MAX_WINDOWS))


def monitor_report(workspace: Workspace, run_id: str, *, window: int | None = None, least_confident: int = 12) -> dict:
    """The run's serving summary (see the module docstring for the keys)."""
    folder = RunFolder(workspace, run_id)
    log = PredictionLog(workspace)
    rows = log.recent(run_id)
    names = folder.class_names()
    classes = len(names) or (1 + max((r.top1 for r in rows), default=0))
    names = names or [str(i) for i in range(classes)]
    reference = folder.predictions() if folder.has_predictions else None
    ref_mix = _counts(reference.predicted, classes) if reference is not None else None
    ref_confidence = _confidence_counts(reference.confidence) if reference is not None else None

    top1 = np.array([r.top1 for r in rows], dtype=np.int64)
    confidence = np.array([r.top1_probability for r in rows], dtype=np.float64)
    report = {
        "run_id": run_id, "requests": len(rows), "class_names": names,
        "first_at": rows[0].created_at if rows else None, "last_at": rows[-1].created_at if rows else None,
        "latency": {fmt: _percentiles([r.latency_ms for r in rows if r.format == fmt])
                    for fmt in sorted({r.format for r in rows})},
        "sources": {s: sum(r.source == s for r in rows) for s in sorted({r.source for r in rows})},
        "timeline": _timeline(rows),
        "class_mix": {"served": _share(_counts(top1, classes)),
                      "test": _share(ref_mix) if ref_mix is not None else None},
        "confidence": {"bins": CONFIDENCE_BINS.round(2).tolist(),
                       "served": _share(_confidence_counts(confidence)) if rows else None,
                       "test": _share(ref_confidence) if ref_confidence is not None else None,
                       "served_mean": _round(confidence.mean(), 4) if rows else None,
                       "test_mean": _round(reference.confidence.mean(), 4) if reference is not None else None},
        "drift": _drift(rows, top1, confidence, classes, ref_mix, ref_confidence, window),
        "live_accuracy": _live_accuracy(rows, names),
        "least_confident": [
            {"log_id": r.id, "created_at": r.created_at, "format": r.format, "source": r.source,
             "predicted": names[r.top1] if r.top1 < len(names) else str(r.top1),
             "probability": round(r.top1_probability, 4),
             "feedback": None if r.feedback_label is None else names[r.feedback_label]}
            for r in log.least_confident(run_id, least_confident)],
    }
    return report


def _timeline(rows) -> dict:
    """Predictions per time bucket (about 30 buckets over the logged span, at least a second each)."""
    if not rows:
        return {"bucket_seconds": None, "buckets": []}
    start, end = rows[0].created_at, rows[-1].created_at
    width = max(1.0, (end - start) / 30)
    counts: dict[tuple[int, str], int] = {}
    for r in rows:
        key = (int((r.created_at - start) // width), r.source)
        counts[key] = counts.get(key, 0) + 1
    return {"bucket_seconds": round(width, 3),
            "buckets": [{"start": start + i * width, "source": source, "count": n}
                        for (i, source), n in sorted(counts.items())]}


def _drift(rows, top1, confidence, classes, ref_mix, ref_confidence, window) -> dict:
    size = window_size(len(rows), classes, window)
    windows = []
    if ref_mix is not None:
        for start in range(0, len(rows) - size + 1, size):
            part = slice(start, start + size)
            class_psi = psi(_counts(top1[part], classes), ref_mix)
            confidence_psi = psi(_confidence_counts(confidence[part]), ref_confidence)
            worst = max(class_psi, confidence_psi)
            windows.append({"start_at": rows[start].created_at, "end_at": rows[start + size - 1].created_at,
                            "requests": size, "psi_class_mix": round(class_psi, 4),
                            "psi_confidence": round(confidence_psi, 4), "level": psi_band(worst)})
    latest = windows[-1] if windows else None
    return {"window": size, "reference": "test set" if ref_mix is not None else None, "windows": windows,
            "latest": latest,
            "note": None if ref_mix is not None else "the run has no test predictions to compare with",
            "bands": {"0.1": PSI_BANDS[0][1], "0.1-0.25": PSI_BANDS[1][1], "0.25": PSI_BANDS[2][1]}}


def _live_accuracy(rows, names) -> dict:
    judged = [r for r in rows if r.feedback_label is not None]
    correct = sum(bool(r.correct) for r in judged)
    return {"with_feedback": len(judged), "correct": correct,
            "accuracy": round(correct / len(judged), 4) if judged else None}


def render_text(report: dict) -> str:
    """The report as a few lines for the terminal."""
    lines = [f"run {report['run_id']}: {report['requests']} predictions logged"]
    if not report["requests"]:
        lines.append("no traffic yet: send requests to `python -m engine serve` (or use the Demo)")
        return "\n".join(lines)
    for fmt, figures in report["latency"].items():
        lines.append(f"latency {fmt:<10} p50 {figures['p50_ms']:.1f} ms · p95 {figures['p95_ms']:.1f} ms · "
                     f"p99 {figures['p99_ms']:.1f} ms ({figures['count']} predictions)")
    latest = report["drift"]["latest"]
    if latest:
        lines.append(f"drift (last {latest['requests']} predictions vs the test set): class mix PSI "
                     f"{latest['psi_class_mix']:.3f}, confidence PSI {latest['psi_confidence']:.3f}: {latest['level']}")
    else:
        lines.append(f"drift: {report['drift']['note'] or 'not enough predictions for a window yet'}")
    live = report["live_accuracy"]
    lines.append(f"live accuracy: {100 * live['accuracy']:.1f}% on {live['with_feedback']} predictions with feedback"
                 if live["accuracy"] is not None else "live accuracy: no feedback yet")
    return "\n".join(lines)
