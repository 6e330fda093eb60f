"""Knowledge distillation in Keras 3: a `Distiller` that trains a small student on a teacher's softened answers.

As in the Keras example (keras-io `examples/vision/knowledge_distillation.py`): the loss is
`alpha * hard-label loss + (1 - alpha) * T² * KL(teacher_T || student_T)`, where `_T` is a
softmax at temperature T. Our models end in a softmax, so their logits are recovered as
`log(p)` (a softmax of `log(p) / T` is p softened at temperature T).
"""

from __future__ import annotations

import keras
from keras import ops

_EPSILON = 1e-7


def soften(probabilities, temperature: float):
    """Probabilities softened at `temperature`: `softmax(log(p) / T)` (T = 1 gives p back)."""
    logits = ops.log(ops.clip(ops.cast(probabilities, "float32"), _EPSILON, 1.0))
    return ops.softmax(logits / temperature, axis=-1)


class Distiller(keras.Model):
    """Trains `student` on the labels and on `teacher`'s softened probabilities; `call` is the student's.

    Args:
        student: the model being trained (probabilities out).
        teacher: the trained model whose answers guide it (frozen; probabilities out).
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False

    def compile(self, optimizer, metrics=None, *, student_loss_fn=None, distillation_loss_fn=None,
                alpha: float = 0.1, temperature: float = 4.0, **kwargs):
        """Args (beyond `keras.Model.compile`'s):
            student_loss_fn: the hard-label loss on one-hot labels. Default categorical cross-entropy.
            distillation_loss_fn: the soft loss between softened probabilities. Default KL divergence.
            alpha: the hard-label loss's weight, 0 to 1. Default 0.1.
            temperature: the softening temperature, above 0. Default 4.
        """
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.student_loss_fn = student_loss_fn or keras.losses.CategoricalCrossentropy()
        self.distillation_loss_fn = distillation_loss_fn or keras.losses.KLDivergence()
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def call(self, x, training=False):
        return self.student(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_pred = self.teacher(x, training=False)
        student_loss = self.student_loss_fn(y, y_pred)
        distillation_loss = self.distillation_loss_fn(soften(teacher_pred, self.temperature),
                                                      soften(y_pred, self.temperature)) * self.temperature ** 2
        loss = self.alpha * student_loss + (1 - self.alpha) * distillation_loss
        regularization = self.student.losses  # the student's L2 terms, if its config has weight decay
        return loss + ops.sum(regularization) if regularization else loss
