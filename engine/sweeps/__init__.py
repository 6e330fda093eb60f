"""Sweeps: search run configurations for accuracy and deployment cost at once (Optuna), with a Pareto front.

`spec` (the sweep file, validated), `control` (submit, resume, cancel, read; no Optuna), `search`
(the Optuna loop, in the sweep job's process), `pareto` (a checked non-dominance function), `job`
(the `sweep` job kind). Importing this package is cheap: no Optuna, no TensorFlow.
"""

from engine.store.sweeps import Sweep, SweepNotFound, SweepStore, SweepTrial
from engine.sweeps.control import cancel_sweep, objective_label, resume_sweep, submit_sweep, sweep_result
from engine.sweeps.pareto import dominates, non_dominated
from engine.sweeps.spec import DIRECTIONS, OBJECTIVES, PRUNERS, SAMPLERS, Param, SweepError, SweepSpec

__all__ = ["DIRECTIONS", "OBJECTIVES", "PRUNERS", "Param", "SAMPLERS", "Sweep", "SweepError", "SweepNotFound",
           "SweepSpec", "SweepStore", "SweepTrial", "cancel_sweep", "dominates", "non_dominated", "objective_label",
           "resume_sweep", "submit_sweep", "sweep_result"]
