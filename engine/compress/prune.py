"""Magnitude pruning for Keras 3 (tensorflow-model-optimization needs Keras 2): masks, a schedule, stripping.

The algorithm tfmot documents: each prunable kernel (Conv2D, DepthwiseConv2D, Dense) gets a
mask; every `frequency` steps the mask is recomputed to zero the smallest-magnitude weights up
to the schedule's current sparsity, and after every training step the kernel is multiplied by
its mask, so pruned weights stay zero while the rest fine-tune. The model never holds wrapper
layers: "stripping" is saving it as it is, plain layers with zeros in them.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

PRUNABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


@dataclass(frozen=True)
class PolynomialDecay:
    """tfmot's `PolynomialDecay` sparsity schedule.

    `sparsity(step) = final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power`,
    held at `initial` before `begin_step` and at `final` from `end_step` on.
    """

    final_sparsity: float
    end_step: int
    initial_sparsity: float = 0.0
    begin_step: int = 0
    power: float = 3.0
    frequency: int = 1

    def __post_init__(self):
        if not 0 <= self.initial_sparsity <= self.final_sparsity < 1:
            raise ValueError(f"sparsity {self.initial_sparsity!r} -> {self.final_sparsity!r}: expected "
                             "0 <= initial <= final < 1")
        if self.end_step <= self.begin_step or self.frequency < 1:
            raise ValueError(f"steps {self.begin_step}..{self.end_step} every {self.frequency}: expected "
                             "begin < end and a frequency of at least 1")

    def sparsity(self, step: int) -> float:
        progress = min(max((step - self.begin_step) / (self.end_step - self.begin_step), 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - progress) ** self.power

    def updates_at(self, step: int) -> bool:
        """True on the steps whose masks are recomputed (every `frequency` steps from begin to end, and at end)."""
        return self.begin_step <= step <= self.end_step and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end_step)


def prunable_kernels(model: keras.Model) -> dict[str, keras.Variable]:
    """The kernels pruning touches: of every trainable Conv2D, DepthwiseConv2D and Dense layer, nested included."""
    kernels = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, PRUNABLE) and layer.trainable:
            kernels[layer.name] = layer.kernel  # DepthwiseConv2D's depthwise kernel is `kernel` in Keras 3
    return kernels


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask zeroing the `round(sparsity * size)` smallest-magnitude weights (exactly that many)."""
    flat = np.abs(np.asarray(weights, dtype=np.float32)).ravel()
    k = int(round(sparsity * flat.size))
    mask = np.ones(flat.size, dtype=np.float32)
    if k > 0:
        mask[np.argpartition(flat, k - 1)[:k]] = 0.0
    return mask.reshape(np.shape(weights))


class MagnitudePruning(keras.callbacks.Callback):
    """Prunes `kernels` along `schedule` during `fit`: masks recomputed on the schedule, applied after every step.

    Args:
        kernels: name -> kernel variable (`prunable_kernels(model)`).
        schedule: the sparsity schedule.
    """

    def __init__(self, kernels: dict[str, keras.Variable], schedule: PolynomialDecay):
        super().__init__()
        self.kernels = kernels
        self.schedule = schedule
        self.masks = {name: np.ones(tuple(v.shape), dtype=np.float32) for name, v in kernels.items()}
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.schedule.updates_at(self.step):
            self.update_masks(self.schedule.sparsity(self.step))
        self.apply_masks()

    def update_masks(self, sparsity: float) -> None:
        for name, variable in self.kernels.items():
            # Weights already pruned are the smallest (zero): masks only grow, as in tfmot.
            self.masks[name] = magnitude_mask(variable.numpy() * self.masks[name], sparsity)

    def apply_masks(self) -> None:
        for name, variable in self.kernels.items():
            variable.assign(variable.numpy() * self.masks[name])

    def finish(self) -> None:
        """Brings every kernel to the final sparsity (if training ended before the schedule did) and applies it."""
        self.update_masks(self.schedule.final_sparsity)
        self.apply_masks()


def strip(model: keras.Model) -> keras.Model:
    """The pruned model as a plain, uncompiled copy: the same layers and weights (zeros included), no optimizer
    state (Adam's moments would double the file and do not compress)."""
    plain = model.__class__.from_config(model.get_config())  # clone_model would keep the compiled optimizer
    plain.set_weights(model.get_weights())
    return plain


def measure_sparsity(model: keras.Model) -> tuple[dict[str, float], float]:
    """The share of zeros per prunable kernel, and over all of them together (weighted by size)."""
    per_layer, zeros, total = {}, 0, 0
    for name, variable in prunable_kernels(model).items():
        values = variable.numpy()
        per_layer[name] = float(np.mean(values == 0))
        zeros += int(np.sum(values == 0))
        total += values.size
    return per_layer, (zeros / total if total else 0.0)


def schedule_for(sparsity: float, total_steps: int) -> PolynomialDecay:
    """The schedule a fine-tune of `total_steps` uses: sparsity rises over its first 70 %, masks
    recomputed about 20 times on the way (tfmot's default of every 100 steps, scaled to short runs)."""
    end = max(1, int(0.7 * total_steps))
    return PolynomialDecay(final_sparsity=float(sparsity), end_step=end, frequency=max(1, min(100, end // 20)))
