"""Predictions -> metrics: accuracy, top-k, per-class P/R/F1, confusion, calibration, mistakes,
suspected label errors, and the comparison of two runs on one test set.

Everything here works on a run's saved test predictions (`predictions.npz`, read by
`RunFolder.predictions()`) with NumPy and scikit-learn, without TensorFlow, so the dashboard can
call it on its script thread. Only `job` (the `evaluate` job: predicting a new folder or a split
with the run's model) imports TensorFlow, inside the functions that predict. Modules: predictions,
metrics, label_issues, compare, job.
"""

from __future__ import annotations

from engine.evaluation.predictions import NoPredictions, Predictions, save_predictions
from engine.evaluation.metrics import (ECE_BINS, TOP_K, calibration_bins, CalibrationBin, ClassMetrics, ConfusedPair,
                                       evaluate, Evaluation, format_table, ranked_mistakes)
from engine.evaluation.label_issues import find_label_issues, label_issues_csv, LabelIssue
from engine.evaluation.compare import (EXACT_MCNEMAR_BELOW, SIGNIFICANCE, align, ClassDelta, compare_runs, Comparison,
                                       McNemar, mcnemar, NotComparable, shared_test_images, verdict)
from engine.evaluation.job import (EVALUATE_JOB, SPLIT_PREFIX, SPLITS, check_evaluation_name, default_evaluation_name,
                                   EvaluationError, EvaluationRequest, predict_folder, predict_source, predict_split,
                                   request_evaluation, run_evaluation_job)

__all__ = [
    "NoPredictions", "Predictions", "save_predictions", "CalibrationBin", "ClassDelta", "ClassMetrics", "Comparison", "ConfusedPair", "ECE_BINS", "EVALUATE_JOB",
    "EXACT_MCNEMAR_BELOW", "Evaluation", "EvaluationError", "EvaluationRequest", "LabelIssue", "McNemar",
    "NotComparable", "SIGNIFICANCE", "SPLITS", "SPLIT_PREFIX", "TOP_K", "align", "calibration_bins",
    "check_evaluation_name", "compare_runs", "default_evaluation_name", "evaluate", "find_label_issues",
    "format_table", "label_issues_csv", "mcnemar", "predict_folder", "predict_source", "predict_split",
    "ranked_mistakes", "request_evaluation", "run_evaluation_job", "shared_test_images", "verdict"
]
