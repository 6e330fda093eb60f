"""Two-phase fine-tuning, as the Keras transfer-learning guide does it: the head alone, then the top of the base.

Phase 1 trains the new head on a frozen pretrained base for `train.head_epochs` epochs; phase 2
unfreezes the top `model.fine_tune_layers` weighted layers of the base (all of it when 0) and goes
on at `train.learning_rate x train.fine_tune_lr_factor`. The base is always called with
`training=False`, so its batch normalization stays in inference mode in both phases. Both phases
report to the same callbacks, so a run shows one set of curves (the learning rate steps down).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from engine.config import RunConfig

log = logging.getLogger(__name__)


def is_two_phase(config: RunConfig) -> bool:
    """Whether the run fine-tunes in two phases (a pretrained transfer base with `train.head_epochs` > 0)."""
    return config.model.name == "transfer" and config.train.head_epochs > 0 and config.model.weights != "random"


def fit_phases(model, config: RunConfig, *, initial_epoch: int, train_data: Callable[[int, int], Any],
               recompile: Callable[[Any, float, int], None], stopped: Callable[[], bool], **fit_args) -> None:
    """Fits the run's epochs `initial_epoch..train.epochs`, in two phases when `is_two_phase(config)`.

    Args:
        model: the compiled model (fresh, or the last checkpoint of a resumed run).
        config: the run's config.
        initial_epoch: epochs already done (a resumed run).
        train_data: `train_data(first_epoch, end_epoch)`, the training dataset of those epochs.
        recompile: `recompile(model, rate_factor, epochs)`: compiles with a fresh optimizer whose rate is
            `learning_rate x rate_factor`, scheduled over `epochs` epochs.
        stopped: True once the run was cancelled or failed (no second phase then).
        **fit_args: the rest of `model.fit`'s arguments (validation data, callbacks, steps...).
    """
    from engine.models.transfer import BASE_LAYER_NAME, set_trainable_top

    total = config.train.epochs
    if not is_two_phase(config):
        model.fit(train_data(initial_epoch, total), epochs=total, initial_epoch=initial_epoch, **fit_args)
        return
    boundary = min(config.train.head_epochs, total)
    base = model.get_layer(BASE_LAYER_NAME)
    if initial_epoch < boundary:
        if initial_epoch == 0:  # a resumed phase-1 checkpoint is already frozen and compiled so
            set_trainable_top(base, 0)
            recompile(model, 1.0, boundary)
        log.info("phase 1: the head alone for epochs %d-%d", initial_epoch + 1, boundary)
        model.fit(train_data(initial_epoch, boundary), epochs=boundary, initial_epoch=initial_epoch, **fit_args)
        if stopped() or boundary >= total:
            return
        count = config.model.fine_tune_layers or len(base.layers)
        tuned = set_trainable_top(base, count)
        recompile(model, config.train.fine_tune_lr_factor, total - boundary)
        log.info("phase 2: %d base layers unfrozen (BatchNormalization stays frozen, in inference mode), rate x%g",
                 len(tuned), config.train.fine_tune_lr_factor)
    start = max(initial_epoch, boundary)
    model.fit(train_data(start, total), epochs=total, initial_epoch=start, **fit_args)
