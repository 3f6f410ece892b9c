"""Interrupted-and-resumed `fit` against an uninterrupted one, deterministic ops on.

Run as ``python -m tests.reliability._resume OUT.pkl`` (a fresh process,
because `tf.config.experimental.enable_op_determinism()` is process-global).
For each scenario: an uninterrupted `fit`; then the same script "run again"
(same seed, new model) with `keras.callbacks.BackupAndRestore`, interrupted by
a callback raising at the start of epoch `INTERRUPT_AT`, and run once more to
resume. Pickles, per scenario, the final weights, optimizer step, rate and
momentum, and the logged rates, of both, or the error.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import traceback

EPOCHS = 4
INTERRUPT_AT = 2


class Interrupted(RuntimeError):
    pass


def _scenarios():
    import keras

    import keras_dnntools as kdt

    def stack(middle, activation="relu"):
        return keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(5, activation=activation),
                *middle,
                keras.layers.Dense(4, activation="relu"),
                keras.layers.Dense(2),
            ]
        )

    def sgd():
        return keras.optimizers.SGD(0.01, momentum=0.9)

    def scenario(middle, callbacks, optimizer=sgd, activation="relu"):
        def build():
            model = stack(middle(), activation)
            chosen = optimizer(model) if optimizer is not sgd else sgd()
            # Eager: these tiny runs are faster without tracing, and nothing
            # checked here depends on graph mode (XLA has its own check).
            model.compile(chosen, "mse", run_eagerly=True)
            return model, callbacks()

        return build

    def discriminative(model):
        return kdt.transfer.discriminative_optimizer(
            model, sgd(), learning_rate_range=(1e-3, 1e-1), num_groups=3
        )

    return {
        # One component each, so that a failure names its component...
        "OneCycleScheduler": scenario(
            list, lambda: [kdt.callbacks.OneCycleScheduler(0.1)]
        ),
        "PowerScheduler": scenario(
            list, lambda: [kdt.callbacks.PowerScheduler(0.05, decay_steps=2)]
        ),
        "ExponentialScheduler": scenario(
            list,
            lambda: [
                kdt.callbacks.ExponentialScheduler(
                    0.01, decay_steps=1, decay_rate=0.5, update="epoch"
                )
            ],
        ),
        "GradualUnfreezing": scenario(
            list, lambda: [kdt.transfer.GradualUnfreezing({0: 1, 2: 3})]
        ),
        "discriminative_optimizer": scenario(list, list, optimizer=discriminative),
        "MCDropout": scenario(lambda: [kdt.layers.MCDropout(0.3, seed=1)], list),
        "MCAlphaDropout": scenario(
            lambda: [kdt.layers.MCAlphaDropout(0.3, seed=1)], list
        ),
        # RReLU after a linear layer: its random slopes act on negative inputs.
        "RReLU": scenario(lambda: [kdt.layers.RReLU(seed=1)], list, activation=None),
        # ... and the model: all of them together.
        "OneCycle+GradualUnfreezing+MCDropout": scenario(
            lambda: [kdt.layers.MCDropout(0.3, seed=1)],
            lambda: [
                kdt.callbacks.OneCycleScheduler(0.1),
                kdt.transfer.GradualUnfreezing({0: 1, 2: 3}),
            ],
        ),
    }


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(16, 6)).astype("float32"),
        rng.normal(size=(16, 2)).astype("float32"),
    )


def _hyperparameters(optimizer):
    import numpy as np

    optimizers = getattr(optimizer, "optimizers", [optimizer])
    values = {"iterations": int(np.asarray(optimizer.iterations))}
    for index, sub in enumerate(optimizers):
        values[f"learning_rate_{index}"] = float(np.asarray(sub.learning_rate))
        for name in ("momentum", "beta_1"):
            if hasattr(sub, name):
                values[f"{name}_{index}"] = float(np.asarray(getattr(sub, name)))
    return values


def _fit(build, callbacks=()):
    import keras
    import numpy as np

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)  # the same script, run again
    model, own_callbacks = build()
    x, y = _data()
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[*own_callbacks, *callbacks],
    )
    return {
        "weights": [np.asarray(w) for w in model.get_weights()],
        "trainable": [layer.trainable for layer in model.layers],
        "optimizer": _hyperparameters(model.optimizer),
        "logs": {k: v for k, v in history.history.items() if k != "loss"},
        "epochs_run": len(history.history["loss"]),
    }


def _interrupted(build):
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == INTERRUPT_AT:
                raise Interrupted(f"interrupted at epoch {epoch}")

    with tempfile.TemporaryDirectory() as backup_dir:
        try:
            _fit(build, [keras.callbacks.BackupAndRestore(backup_dir), Interrupt()])
        except Interrupted:
            pass
        else:
            raise AssertionError("the interruption did not happen")
        return _fit(build, [keras.callbacks.BackupAndRestore(backup_dir)])


def main(out):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    keras.utils.disable_interactive_logging()
    results = {}
    for name, build in _scenarios().items():
        try:
            results[name] = {"full": _fit(build), "resumed": _interrupted(build)}
        except Exception:
            results[name] = {"error": traceback.format_exc()}
    with open(out, "wb") as file:
        pickle.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1])
