"""The measuring sides of bench_training.py; each runs in a fresh process (`bench_training.py --worker NAME`).

Each worker returns one JSON-able dict, which bench_training.py prints and reads back.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

BATCH_SIZE = 32
IMAGE_SIZE = 32
PIPELINE_SIZE = 64


def training_config(epochs: int, model: dict | None = None):
    from engine.config import RunConfig

    # Constant learning rate in both scripts; no augmentation, float32 (mixed precision is off on a CPU).
    return RunConfig.from_dict({
        "name": "bench",
        "data": {"source": "digits", "image_size": IMAGE_SIZE},
        "model": model or {"name": "lenet5"},
        "augment": {"rotation": 0, "shift": 0, "zoom": 0, "flip": False},
        "train": {"epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": "adam", "schedule": "constant",
                  "mixed_precision": "off"},
    })


def job_niceness() -> int:
    """The CPU niceness a job process gives itself (so the dashboard stays quick on a shared machine)."""
    try:
        from engine.jobs.worker import JOB_NICENESS
    except ImportError:  # an engine from before engine/jobs/
        from engine.jobs import JOB_NICENESS
    return JOB_NICENESS


def worker_plain_fit(epochs: int, model: dict | None = None) -> dict:
    """The same model, data and split as the Aperture job, in a plain model.fit script.

    At the job's CPU niceness: on a machine with any other load, a plain fit at niceness 0 would
    get more of the CPU than the job it is compared with.
    """
    os.nice(max(0, job_niceness() - os.nice(0)))
    import keras
    import numpy as np
    import tensorflow as tf

    from engine.data import load_images, split_indices
    from engine.models import make_model
    from tests.benchmarks.epoch_timer import EpochTimer

    config = training_config(epochs, model)
    keras.utils.set_random_seed(config.train.seed)
    images = load_images(config.data.source, config.data.image_size, max_per_class=config.data.max_per_class,
                         seed=config.data.seed)
    split = split_indices(images.labels, config.data.val_fraction, config.data.test_fraction, config.data.seed)
    num_classes = len(images.class_names)
    x = np.asarray(images.images, dtype=np.float32)
    y = keras.utils.to_categorical(images.labels, num_classes).astype(np.float32)
    n = len(split.train)
    train_ds = (tf.data.Dataset.from_tensor_slices((x[split.train], y[split.train])).shuffle(n)
                .batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x[split.val], y[split.val])).batch(BATCH_SIZE).prefetch(
        tf.data.AUTOTUNE)

    model = make_model(config.model, (IMAGE_SIZE, IMAGE_SIZE, 3), num_classes, seed=config.train.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])

    timer = EpochTimer()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[timer], verbose=0)
    return {"rates": [n / seconds for seconds in timer.training], "train_size": n, "after": timer.after, "validation": timer.validation}


def worker_idg(folder: str, epochs: int) -> dict:
    """The seed's recipe: legacy ImageDataGenerator with augmentation, from the folder."""
    import tensorflow as tf

    started = time.monotonic()
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rescale=1 / 255, rotation_range=20, width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True,
        zoom_range=0.2)
    iterator = generator.flow_from_directory(folder, target_size=(PIPELINE_SIZE, PIPELINE_SIZE),
                                             batch_size=BATCH_SIZE)
    seconds, count = [], 0
    for epoch in range(epochs):
        count = 0
        for _ in range(len(iterator)):
            x, _y = next(iterator)
            count += len(x)
        now = time.monotonic()
        seconds.append(now - started)
        started = now
    return {"images": count, "seconds": seconds}


def worker_aperture_pipeline(folder: str, epochs: int, cache_dir: str) -> dict:
    """Aperture: decode + cache the folder (counted in epoch 1), then the augmented tf.data pipeline."""
    from engine.config import AugmentConfig
    from engine.data import load_images, make_dataset

    import tensorflow as tf  # noqa: F401 - imported before the clock starts, as the IDG worker does

    started = time.monotonic()
    images = load_images(folder, PIPELINE_SIZE, cache_dir=Path(cache_dir))
    dataset = make_dataset(images.images, images.labels, batch_size=BATCH_SIZE, training=True,
                           augment=AugmentConfig(rotation=20, shift=0.2, flip=True, zoom=0.2))
    load_seconds = time.monotonic() - started
    seconds, count = [], 0
    for epoch in range(epochs):
        count = 0
        for x, _y in dataset:
            count += int(x.shape[0])
        now = time.monotonic()
        seconds.append(now - started)
        started = now
    return {"images": count, "seconds": seconds, "load_seconds": load_seconds,
            "memmap": type(images.images).__name__}


WORKERS = {"plain_fit": worker_plain_fit, "idg": worker_idg, "aperture_pipeline": worker_aperture_pipeline}
