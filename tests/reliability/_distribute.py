"""Every component under `tf.distribute.MirroredStrategy` on 2 logical CPUs.

Run as ``python -m tests.reliability._distribute OUT.pkl`` (a fresh process:
the logical devices must be configured before TensorFlow initializes them).
Each scenario below runs twice, on the default (single-device) strategy and
mirrored over 2 logical CPUs, with the model built in the strategy's scope
and the helpers called outside it, as a user does between `fit` calls.
Pickles ``{scenario: {"single": result, "mirrored": result}}`` (each result
a dict of NumPy values, or ``{"error": traceback}``); `test_distribute.py`
compares them.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback

MAX_NORM = 0.5
DEVICES = ["/cpu:0", "/cpu:1"]


def _data(rows=32, features=6, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype("float32")
    labels = rng.integers(0, 3, rows)
    return x, labels


def _values(variables):
    import numpy as np

    return [np.array(v.numpy()) for v in variables]


def _optimizer_values(model):
    return {
        v.path: value
        for v, value in zip(
            model.optimizer.variables, _values(model.optimizer.variables), strict=True
        )
    }


def _classifier(strategy, seed=0, middle=(), width=8):
    import keras

    with strategy.scope():
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(width, activation="relu", name="hidden_a"),
                *middle,
                keras.layers.Dense(width, activation="relu", name="hidden_b"),
                keras.layers.Dense(3, activation="softmax", name="top"),
            ]
        )
        model.compile(
            keras.optimizers.SGD(0.05, momentum=0.9),
            "sparse_categorical_crossentropy",
        )
    return model


def training(strategy):
    """RReLU, MCDropout, apply_max_norm and OneCycleScheduler in one `fit`."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_dnntools as kdt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32") * 10
    y = rng.normal(size=(32, 2)).astype("float32") * 10
    with strategy.scope():
        keras.utils.set_random_seed(0)
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


def layers(strategy):
    """Every random layer: trains, and each replica draws its own masks."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_dnntools as kdt

    makers = {
        "MCDropout": (lambda: kdt.layers.MCDropout(0.5, seed=1), (12,)),
        "MCAlphaDropout": (lambda: kdt.layers.MCAlphaDropout(0.5, seed=1), (12,)),
        "MCSpatialDropout1D": (
            lambda: kdt.layers.MCSpatialDropout1D(0.5, seed=1),
            (4, 12),
        ),
        "MCSpatialDropout2D": (
            lambda: kdt.layers.MCSpatialDropout2D(0.5, seed=1),
            (2, 2, 12),
        ),
        "MCSpatialDropout3D": (
            lambda: kdt.layers.MCSpatialDropout3D(0.5, seed=1),
            (2, 2, 2, 12),
        ),
        "RReLU": (lambda: kdt.layers.RReLU(0.1, 0.3, seed=1), (12,)),
    }
    result = {}
    for name, (make, shape) in makers.items():
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input(shape),
                    keras.layers.Dense(12),
                    make(),
                    keras.layers.Flatten(),
                    keras.layers.Dense(2),
                ]
            )
            model.compile(keras.optimizers.SGD(0.01), "mse")
        rng = np.random.default_rng(1)
        x = rng.normal(size=(16, *shape)).astype("float32")
        y = rng.normal(size=(16, 2)).astype("float32")
        loss = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"]
        prediction = model.predict(x, verbose=0)
        # The same inputs on every replica, in one training step's graph.
        layer = model.layers[1]

        @tf.function
        def draw(inputs, layer=layer):
            return strategy.run(lambda t: layer(t, training=True), args=(inputs,))

        ones = -np.ones((4, *shape), "float32")  # RReLU acts on negatives
        inputs = strategy.experimental_distribute_values_from_function(
            lambda context, ones=ones: tf.constant(ones)
        )
        draws = [
            np.asarray(v) for v in strategy.experimental_local_results(draw(inputs))
        ]
        result[name] = {
            "loss": loss,
            "finite": bool(np.all(np.isfinite(prediction))),
            "draws": draws,
        }
    return result


def schedulers(strategy):
    """PowerScheduler and ExponentialScheduler; `release` after a failed fit."""
    import keras
    import numpy as np

    import keras_dnntools as kdt

    x, labels = _data()
    result = {}
    for name, make in {
        "power": lambda: kdt.callbacks.PowerScheduler(0.1, decay_steps=2),
        "exponential": lambda: kdt.callbacks.ExponentialScheduler(
            0.1, decay_steps=3, decay_rate=0.5
        ),
    }.items():
        model = _classifier(strategy)
        history = model.fit(
            x,
            labels,
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[make()],
        )
        result[name] = {
            "learning_rate": history.history["learning_rate"],
            "iterations": int(np.asarray(model.optimizer.iterations)),
            "weights": _values(model.weights),
        }

    class Fail(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("interrupted")

    model = _classifier(strategy)
    try:
        model.fit(
            x,
            labels,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[kdt.callbacks.OneCycleScheduler(0.5), Fail()],
        )
    except RuntimeError:
        pass
    released = kdt.callbacks.release(model)
    rate = float(np.asarray(model.optimizer.learning_rate))
    before = int(np.asarray(model.optimizer.iterations))
    history = model.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    result["release"] = {
        "released": released,
        "rate": rate,
        "rate_after_fit": float(np.asarray(model.optimizer.learning_rate)),
        "steps": int(np.asarray(model.optimizer.iterations)) - before,
        "loss": history.history["loss"],
    }
    return result


def schedules(strategy):
    """Each `kdt.schedules` object as the optimizer's rate, in plain Keras."""
    import keras
    import numpy as np

    import keras_dnntools as kdt

    x, labels = _data()
    result = {}
    for schedule in (
        kdt.schedules.PowerSchedule(0.1, decay_steps=3, power=1.5),
        kdt.schedules.ExponentialSchedule(0.1, decay_steps=3, decay_rate=0.5),
        kdt.schedules.PiecewiseConstantSchedule([2, 4], [0.1, 0.05, 0.01]),
        kdt.schedules.OneCycleSchedule(0.1, total_steps=8),
        kdt.schedules.OneCycleMomentum(total_steps=8),  # a rate of 0.85-0.95
    ):
        model = _classifier(strategy)
        with strategy.scope():
            model.compile(
                keras.optimizers.SGD(learning_rate=schedule, momentum=0.5),
                "sparse_categorical_crossentropy",
            )
        model.fit(x, labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
        result[type(schedule).__name__] = {
            "iterations": int(np.asarray(model.optimizer.iterations)),
            "rate": float(np.asarray(model.optimizer.learning_rate)),
            "weights": _values(model.weights),
        }
    return result


def finder(strategy):
    """The finder, function and callback, on a trained model: restored exactly."""
    import keras
    import numpy as np

    import keras_dnntools as kdt

    x, labels = _data()
    model = _classifier(strategy)
    model.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    weights, slots = _values(model.weights), _optimizer_values(model)
    found = kdt.callbacks.find_learning_rate(
        model, x, labels, batch_size=8, steps=6, max_learning_rate=1.0
    )
    after_function = (_values(model.weights), _optimizer_values(model))
    callback = kdt.callbacks.LearningRateFinder(steps=6, max_learning_rate=1.0)
    model.fit(
        x,
        labels,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[callback],
    )
    after_callback = (_values(model.weights), _optimizer_values(model))
    fresh = _classifier(strategy, seed=1)  # compiled, optimizer not built
    fresh_weights = _values(fresh.weights)
    kdt.callbacks.find_learning_rate(
        fresh, x, labels, batch_size=8, steps=6, max_learning_rate=1.0
    )
    fresh_restored = _values(fresh.weights)
    fresh.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    twin = _classifier(strategy, seed=1)
    twin.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    del keras
    return {
        "fresh": (fresh_weights, fresh_restored),
        "fresh_then_fit": _values(fresh.weights),
        "twin_fit": _values(twin.weights),
        "before": (weights, slots),
        "after_function": after_function,
        "after_callback": after_callback,
        "function_losses": np.asarray(found.losses),
        "function_rates": np.asarray(found.learning_rates),
        "callback_losses": np.asarray(callback.result.losses),
    }


def transfer(strategy):
    """reuse_layers, clone, freeze/unfreeze, discriminative rates with
    GradualUnfreezing and 1cycle, recompile, fine_tune: as on one device."""
    import keras
    import numpy as np

    import keras_dnntools as kdt

    x, labels = _data()
    source = _classifier(strategy)
    source.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    with strategy.scope():
        clone = kdt.transfer.clone_with_weights(source)
        keras.utils.set_random_seed(3)
        model = kdt.transfer.reuse_layers(
            source, drop_top=1, head=keras.layers.Dense(3, activation="softmax")
        )
    clone_equal = all(
        np.array_equal(a, b)
        for a, b in zip(_values(clone.weights), _values(source.weights), strict=True)
    )
    model.compile(
        kdt.transfer.discriminative_optimizer(
            model,
            keras.optimizers.SGD(momentum=0.9),
            learning_rate_range=(1e-3, 1e-1),
            num_groups=2,
        ),
        "sparse_categorical_crossentropy",
    )
    trainable_at = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            trainable_at.append(
                [layer.trainable for layer in model.layers if layer.weights]
            )

    frozen_before = _values(model.layers[0].weights)
    model.fit(
        x,
        labels,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[
            kdt.transfer.GradualUnfreezing({0: 1, 1: 2, 2: 3}),
            kdt.callbacks.OneCycleScheduler(0.1),
            Record(),
        ],
    )
    unfrozen = _values(model.weights)
    kdt.transfer.freeze(model, until=0)
    kdt.transfer.recompile(model, learning_rate=0.01)
    bottom = _values(model.layers[0].weights)
    model.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    bottom_kept = all(
        np.array_equal(a, b)
        for a, b in zip(bottom, _values(model.layers[0].weights), strict=True)
    )
    kdt.transfer.unfreeze(model)
    tuned = _classifier(strategy, seed=4)
    head, body = kdt.transfer.fine_tune(
        tuned, x, labels, epochs=1, batch_size=8, shuffle=False, verbose=0
    )
    return {
        "clone_equal": clone_equal,
        "trainable_at": trainable_at,
        "frozen_before": frozen_before,
        "unfrozen": unfrozen,
        "bottom_kept": bottom_kept,
        "recompiled": _values(model.weights),
        "all_trainable": all(layer.trainable for layer in model.layers),
        "fine_tune_loss": head.history["loss"] + body.history["loss"],
        "fine_tuned": _values(tuned.weights),
    }


def metric(strategy):
    """The ECE metric in `evaluate` and `fit`: the whole data's value."""
    import keras
    import numpy as np

    import keras_dnntools as kdt

    x, labels = _data(rows=40)
    model = _classifier(strategy)
    with strategy.scope():
        model.compile(
            "sgd",
            "sparse_categorical_crossentropy",
            metrics=[kdt.metrics.ExpectedCalibrationError(n_bins=5)],
        )
    evaluated = model.evaluate(x, labels, batch_size=8, verbose=0, return_dict=True)
    probabilities = model.predict(x, batch_size=8, verbose=0)
    del keras
    return {
        "evaluated": evaluated["expected_calibration_error"],
        "function": kdt.metrics.expected_calibration_error(
            labels, probabilities, n_bins=5
        ),
        "probabilities": probabilities,
        "replicas": np.int64(strategy.num_replicas_in_sync),
    }


def uncertainty(strategy):
    """`mc_predict` shards its chunks over the replicas; `to_mc_dropout`."""
    import keras
    import numpy as np

    import keras_dnntools as kdt
    from keras_dnntools.uncertainty import _backend_tensorflow

    x, _ = _data(rows=300)
    # Untrained: trained with dropout, the single and mirrored weights differ.
    model = _classifier(strategy, middle=(keras.layers.Dropout(0.3),))
    shares = []  # per call of the replicas: the rows each replica sampled
    run = _backend_tensorflow._MirroredReplicas.run

    def spy(self, calls):
        shares.append([int(inputs.shape[0]) for inputs, _ in calls])
        return run(self, calls)

    _backend_tensorflow._MirroredReplicas.run = spy
    try:
        fixed = kdt.uncertainty.mc_predict(
            model, x, n_samples=40, batch_size=64, seed=5, return_samples=True
        )
        fixed_shares = list(shares)
        again = kdt.uncertainty.mc_predict(
            model, x, n_samples=40, batch_size=64, seed=5, return_samples=True
        )
        shares.clear()
        default = kdt.uncertainty.mc_predict(model, x, n_samples=40, seed=5)
        default_shares = list(shares)
    finally:
        _backend_tensorflow._MirroredReplicas.run = run
    placed = set()
    for functions in _backend_tensorflow._DISTRIBUTED.values():
        for _, function in functions.values():
            # strategy.run of a tf.function calls one function holding every
            # replica's ops: their devices are in the graph's library.
            for concrete in function._list_all_concrete_functions():
                library = concrete.graph.as_graph_def().library
                placed |= {n.device for f in library.function for n in f.node_def}
    with strategy.scope():
        converted = kdt.uncertainty.to_mc_dropout(model)
    first, second = (converted.predict(x, verbose=0) for _ in range(2))
    return {
        "mean": fixed.mean,
        "samples": fixed.samples,
        "reproducible": bool(np.array_equal(fixed.samples, again.samples)),
        "fixed_shares": fixed_shares,
        "default_mean": default.mean,
        "default_shares": default_shares,
        "devices": sorted(d.split("/")[-1] for d in placed if d),
        "converted_stochastic": bool(np.any(first != second)),
        "converted_finite": bool(np.all(np.isfinite(first))),
    }


def diagnostics(strategy):
    """TrainingMonitor (global-batch statistics), check, lsuv."""
    import numpy as np

    import keras_dnntools as kdt

    x, labels = _data()
    model = _classifier(strategy)
    kdt.initializers.lsuv(model, x)
    after_lsuv = _values(model.weights)
    monitor = kdt.callbacks.TrainingMonitor(frequency=1)
    model.fit(
        x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor]
    )
    report = kdt.diagnostics.check(model, x, labels)
    names = [layer.name for layer in model.layers]
    return {
        "lsuv": after_lsuv,
        "monitor_steps": monitor.steps,
        # Layer names differ between runs (the same model built twice): by
        # position.
        "monitor": [
            monitor.layer_stats[name] for name in names if name in monitor.layer_stats
        ],
        "check": [
            value
            for row in report.layers
            for value in (row.activation_std, row.gradient_norm)
        ]
        + [report.loss],
        "findings": sorted(finding.kind for finding in report.findings),
        "weights": _values(model.weights),
        "replicas": np.int64(strategy.num_replicas_in_sync),
    }


SCENARIOS = {
    "training": training,
    "layers": layers,
    "schedules": schedules,
    "schedulers": schedulers,
    "finder": finder,
    "transfer": transfer,
    "metric": metric,
    "uncertainty": uncertainty,
    "diagnostics": diagnostics,
}


def main(out, names=None):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    keras.utils.disable_interactive_logging()
    # One MirroredStrategy for the whole process: a second instance's
    # collective ops can collide with the first one's.
    strategies = {
        "single": tf.distribute.get_strategy(),
        "mirrored": tf.distribute.MirroredStrategy(DEVICES),
    }
    results = {}
    for name in names or SCENARIOS:
        results[name] = {}
        for strategy_name, strategy in strategies.items():
            start = time.perf_counter()
            try:
                results[name][strategy_name] = SCENARIOS[name](strategy)
            except Exception:
                results[name][strategy_name] = {"error": traceback.format_exc()}
            print(f"{name} {strategy_name}: {time.perf_counter() - start:.1f} s")
    with open(out, "wb") as file:
        pickle.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 else None)
