"""`fit` under `tf.distribute.MirroredStrategy` over 2 logical CPUs vs one device.

Run as ``python -m tests.reliability._distribute OUT.pkl`` (a fresh process:
the logical devices must be configured before TensorFlow initializes them).
The model holds RReLU and MCDropout, gets `apply_max_norm`, and trains with
`OneCycleScheduler`; once on the default (single-device) strategy, once
mirrored. Pickles, per run, the logged rates, the optimizer's step, rate and
momentum, and the kernel column norms on every replica, or the error.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback

MAX_NORM = 0.5


def _run(strategy):
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_dnntools as kdt

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32") * 10
    y = rng.normal(size=(32, 2)).astype("float32") * 10
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8),
                kdt.layers.RReLU(seed=1),
                kdt.layers.MCDropout(0.2, seed=2),
                keras.layers.Dense(4, activation="relu"),
                keras.layers.Dense(2),
            ]
        )
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
        kdt.constraints.apply_max_norm(model, MAX_NORM)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[kdt.callbacks.OneCycleScheduler(0.5)],
    )
    optimizer = model.optimizer
    replicas = []
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        values = strategy.experimental_local_results(kernel.value)
        replicas.append(
            [
                np.sqrt(np.sum(np.asarray(tf.convert_to_tensor(v)) ** 2, axis=0))
                for v in values
            ]
        )
    return {
        "replicas": strategy.num_replicas_in_sync,
        "logs": {k: v for k, v in history.history.items() if k != "loss"},
        "loss": history.history["loss"],
        "iterations": int(np.asarray(optimizer.iterations)),
        "learning_rate": float(np.asarray(optimizer.learning_rate)),
        "momentum": float(np.asarray(optimizer.momentum)),
        "kernel_norms": replicas,
    }


def main(out):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    keras.utils.disable_interactive_logging()
    results = {}
    for name, make in (
        ("single", tf.distribute.get_strategy),
        ("mirrored", lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
    ):
        try:
            results[name] = _run(make())
        except Exception:
            results[name] = {"error": traceback.format_exc()}
    with open(out, "wb") as file:
        pickle.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1])
