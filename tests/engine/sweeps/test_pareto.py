"""The non-dominance function, on fronts worked out by hand and against brute force on random points."""

import itertools
import random

from engine.sweeps import dominates, non_dominated

GOALS = {"val_accuracy": "maximize", "int8_latency_ms": "minimize"}


def _p(accuracy, latency):
    return {"val_accuracy": accuracy, "int8_latency_ms": latency}


def test_a_hand_made_front_of_three():
    points = [_p(0.90, 2.0), _p(0.95, 3.0), _p(0.80, 1.0), _p(0.85, 2.5), _p(0.94, 3.5), _p(0.80, 1.0)]
    # (0.85, 2.5) loses to (0.90, 2.0); (0.94, 3.5) to (0.95, 3.0); the two equal (0.80, 1.0) both stay.
    assert non_dominated(points, GOALS) == [0, 1, 2, 5]


def test_direction_matters():
    assert dominates(_p(0.9, 1.0), _p(0.8, 2.0), GOALS)
    assert not dominates(_p(0.9, 1.0), _p(0.8, 2.0), {"val_accuracy": "minimize", "int8_latency_ms": "minimize"})
    assert not dominates(_p(0.9, 1.0), _p(0.9, 1.0), GOALS)  # equal points do not dominate each other


def test_matches_brute_force_on_random_points():
    rng = random.Random(3)
    for _ in range(50):
        points = [_p(rng.choice([0.5, 0.6, 0.7, 0.8]), rng.choice([1.0, 2.0, 3.0])) for _ in range(rng.randint(1, 12))]
        front = non_dominated(points, GOALS)
        assert front, "a non-empty set always has a non-dominated point"
        for i, j in itertools.product(range(len(points)), repeat=2):
            better = (points[j]["val_accuracy"] >= points[i]["val_accuracy"]
                      and points[j]["int8_latency_ms"] <= points[i]["int8_latency_ms"] and points[j] != points[i])
            if better:
                assert i not in front
        for i in set(range(len(points))) - set(front):
            assert any(dominates(points[j], points[i], GOALS) for j in front)


def test_one_objective_keeps_only_the_best():
    points = [{"val_accuracy": v} for v in (0.5, 0.9, 0.7, 0.9)]
    assert non_dominated(points, {"val_accuracy": "maximize"}) == [1, 3]
