"""The benchmarks' one Keras callback timing each epoch of a plain `model.fit` as Aperture's StoreProgress does.

Imports Keras: import it where Keras would be imported anyway (a benchmark's Keras side).
"""

from __future__ import annotations

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Per epoch: `training` (seconds from the epoch's begin to its last training batch's end), `validation`
    (seconds of its evaluation) and `after` (the fixed cost from its last training batch to the next epoch's
    begin, or to the end of training: validation and whatever else the epoch's end does).

    `async_safe`, as StoreProgress is: a batch hook that is not makes Keras wait for every
    batch's loss, which slows a plain fit (that has no batch hook at all) down.
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.training: list[float] = []
        self.after: list[float] = []
        self.validation: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.last = time.monotonic()
        if epoch:
            self.after.append(self.started - self.last_end)

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.monotonic()

    def on_test_begin(self, logs=None):
        self.test_began = time.monotonic()

    def on_test_end(self, logs=None):
        self.validation.append(time.monotonic() - self.test_began)

    def on_epoch_end(self, epoch, logs=None):
        self.training.append(self.last - self.started)
        self.last_end = self.last

    def on_train_end(self, logs=None):
        self.after.append(time.monotonic() - self.last_end)
