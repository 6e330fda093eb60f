"""Which trials are non-dominated: a small checked function (the sweep itself marks its front with
Optuna's `Study.best_trials`; this one lets tests and readers check that front without Optuna)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def dominates(a: Mapping[str, float], b: Mapping[str, float], objectives: Mapping[str, str]) -> bool:
    """True if `a` is at least as good as `b` in every objective and better in one.

    Args:
        a, b: objective values by name.
        objectives: name -> `maximize` or `minimize`.
    """
    sign = {name: 1.0 if direction == "maximize" else -1.0 for name, direction in objectives.items()}
    at_least = all(sign[n] * a[n] >= sign[n] * b[n] for n in objectives)
    better = any(sign[n] * a[n] > sign[n] * b[n] for n in objectives)
    return at_least and better


def non_dominated(points: Sequence[Mapping[str, float]], objectives: Mapping[str, str]) -> list[int]:
    """The indices of the points no other point dominates (ties all kept), in input order.

    Args:
        points: each point's objective values by name (every objective present).
        objectives: name -> `maximize` or `minimize`.

    Returns:
        Indices into `points`.
    """
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, objectives) for j, q in enumerate(points) if j != i)]
