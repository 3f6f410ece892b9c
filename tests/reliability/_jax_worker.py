"""One process of a multi-process JAX run under `keras.distribution`.

Run as ``python -m tests.reliability._jax_worker SCENARIOS PROCESS_ID
PROCESS_COUNT PORTS OUT.pkl`` (SCENARIOS: names, comma-separated, run in
turn in the same processes) (`_processes.run` starts them). With more
than one process it joins `jax.distributed` on 127.0.0.1 at the first of PORTS
(gloo CPU
collectives); every scenario then runs under `DataParallel` over all the
processes' devices, with `auto_shard_dataset = False`: each process feeds its
share of every global batch of `GLOBAL_BATCH` rows, so that 1 process and 2
processes train on the same global batches. With PROCESS_COUNT 1 it is the
single-process reference. The scenario's result (NumPy values, fetched as
global arrays) is pickled to OUT.pkl.
"""

from __future__ import annotations

import pickle
import sys
import time

import numpy as np

GLOBAL_BATCH = 16
ROWS = 64
MAX_NORM = 0.5
MC_ROWS, MC_SAMPLES = 200, 300


def _initialize(process_id: int, process_count: int, port: int) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if process_count > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=process_count,
            process_id=process_id,
            initialization_timeout=30,
        )


def _data_parallel():
    import jax
    import keras

    distribution = keras.distribution.DataParallel(devices=jax.devices())
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)


def _global(value) -> np.ndarray:
    """A variable's or array's global value, on every process."""
    import jax
    from jax.experimental import multihost_utils

    value = getattr(value, "value", value)
    if isinstance(value, jax.Array) and not (
        value.is_fully_addressable or value.is_fully_replicated
    ):
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.array(value)


def _local_rows(rows: int, process_id: int, process_count: int) -> np.ndarray:
    """This process's share of every global batch, in batch order."""
    share = GLOBAL_BATCH // process_count
    return np.concatenate(
        [
            np.arange(start + process_id * share, start + (process_id + 1) * share)
            for start in range(0, rows, GLOBAL_BATCH)
        ]
    )


def _regression_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 6)).astype("float32") * 3
    y = rng.normal(size=(ROWS, 2)).astype("float32") * 3
    return x, y


def _model(seed: int = 1, middle=()):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="dense_a"),
            *middle,
            keras.layers.Dense(8, activation="relu", name="dense_b"),
            keras.layers.Dense(2, name="head"),
        ]
    )


def _weights(model) -> list[np.ndarray]:
    return [_global(variable) for variable in model.weights]


def _optimizer_state(model) -> dict[str, np.ndarray]:
    return {v.path: _global(v) for v in model.optimizer.variables}


def _fit(model, x, y, process_id, process_count, **kwargs):
    rows = _local_rows(len(x), process_id, process_count)
    kwargs.setdefault("epochs", 3)
    return model.fit(
        x[rows],
        y[rows],
        batch_size=GLOBAL_BATCH // process_count,
        shuffle=False,
        verbose=0,
        **kwargs,
    )


def schedules(process_id, process_count):
    """Each scheduler callback: the weights, the logged rates and momentum."""
    import keras

    import keras_dnntools as kdt

    x, y = _regression_data()
    makers = {
        "one_cycle": lambda: kdt.callbacks.OneCycleScheduler(0.2),
        "power": lambda: kdt.callbacks.PowerScheduler(0.05, decay_steps=3),
        "exponential": lambda: kdt.callbacks.ExponentialScheduler(
            0.05, decay_steps=1, update="epoch"
        ),
    }
    results = {}
    for name, make in makers.items():
        model = _model()
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
        history = _fit(model, x, y, process_id, process_count, callbacks=[make()])
        results[name] = {
            "weights": _weights(model),
            "history": {k: np.array(v) for k, v in history.history.items()},
            "iterations": int(_global(model.optimizer.iterations)),
            "learning_rate": float(_global(model.optimizer.learning_rate)),
            "momentum": float(model.optimizer.momentum),
        }
    return results


def finder(process_id, process_count):
    """The finder (function and callback) from a fresh and a trained model."""
    import keras

    import keras_dnntools as kdt

    x, y = _regression_data()
    rows = _local_rows(len(x), process_id, process_count)
    results = {}
    for state in ("fresh", "trained", "callback"):
        model = _model()
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
        if state != "fresh":
            _fit(model, x, y, process_id, process_count, epochs=1)
        before = (_weights(model), _optimizer_state(model))
        if state == "callback":
            finder = kdt.callbacks.LearningRateFinder(steps=6, min_learning_rate=1e-4)
            _fit(model, x, y, process_id, process_count, epochs=2, callbacks=[finder])
            result = finder.result
        else:
            result = kdt.find_learning_rate(
                model,
                x[rows],
                y[rows],
                batch_size=GLOBAL_BATCH // process_count,
                steps=8,
                min_learning_rate=1e-4,
            )
        results[state] = {
            "before": before,
            "after": (_weights(model), _optimizer_state(model)),
            "learning_rates": np.array(result.learning_rates),
            "losses": np.array(result.losses),
            "optimizer_built": bool(model.optimizer.built),
        }
    return results


def unfreezing(process_id, process_count):
    """GradualUnfreezing: the trainable flags at every epoch, and the weights."""
    import keras

    import keras_dnntools as kdt

    x, y = _regression_data()
    model = _model()
    kdt.transfer.freeze(model)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    flags = []

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            flags.append([layer.trainable for layer in model.layers])

    unfreezing = kdt.transfer.GradualUnfreezing({0: 1, 1: 2, 2: 3})
    _fit(model, x, y, process_id, process_count, callbacks=[unfreezing, Recorder()])
    return {"flags": flags, "weights": _weights(model)}


def metric(process_id, process_count):
    """ExpectedCalibrationError as a compiled metric, in `evaluate` and `fit`."""
    import keras

    import keras_dnntools as kdt

    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, 6)).astype("float32")
    y = rng.integers(0, 3, size=ROWS)
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(
        "sgd",
        "sparse_categorical_crossentropy",
        metrics=[kdt.metrics.ExpectedCalibrationError(n_bins=5)],
    )
    reference = None
    if process_count == 1:  # the function on the whole data, at these weights
        probabilities = model.predict(x, batch_size=GLOBAL_BATCH, verbose=0)
        reference = kdt.metrics.expected_calibration_error(y, probabilities, n_bins=5)
    rows = _local_rows(len(x), process_id, process_count)
    evaluated = model.evaluate(
        x[rows],
        y[rows],
        batch_size=GLOBAL_BATCH // process_count,
        return_dict=True,
        verbose=0,
    )
    history = _fit(model, x, y, process_id, process_count, epochs=1)
    return {
        "reference": reference,
        "evaluate": evaluated["expected_calibration_error"],
        "fit": history.history["expected_calibration_error"][-1],
    }


def layers(process_id, process_count):
    """RReLU, the MC dropout family and max-norm in a trained model."""
    import keras

    import keras_dnntools as kdt

    x, y = _regression_data()
    model = _model(
        middle=[
            kdt.layers.RReLU(seed=2),
            kdt.layers.MCDropout(0.2, seed=3),
            kdt.layers.MCAlphaDropout(0.1, seed=4),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    kdt.constraints.apply_max_norm(model, MAX_NORM)
    _fit(model, x, y, process_id, process_count)
    return {
        "weights": _weights(model),
        "kernel_norms": [
            np.linalg.norm(_global(layer.kernel), axis=0)
            for layer in model.layers
            if hasattr(layer, "kernel")
        ],
    }


def model_parallel(process_id, process_count):
    """ModelParallel, `dense_a`'s kernel sharded along its fan-in, max-norm."""
    import jax
    import keras

    import keras_dnntools as kdt

    mesh = keras.distribution.DeviceMesh(
        shape=(1, len(jax.devices())),
        axis_names=("batch", "model"),
        devices=jax.devices(),
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*dense_a/kernel"] = ("model", None)  # a full match
    distribution = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    x, y = _regression_data()
    x = np.concatenate([x, np.zeros((ROWS, 2), "float32")], axis=1)  # 8 rows: 2 shards
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, activation="relu", name="dense_a"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    kdt.constraints.apply_max_norm(model, MAX_NORM)
    # The batch axis has one device: every process feeds the whole batch.
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=3, shuffle=False, verbose=0)
    kernel = model.get_layer("dense_a").kernel
    return {
        "sharded": not kernel.value.is_fully_replicated,
        "weights": _weights(model),
        "kernel_norms": np.linalg.norm(_global(kernel), axis=0),
    }


def _mc_model():
    import keras

    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def mc_predict(process_id, process_count):
    """`mc_predict` with the same `x` on every process: who samples what."""
    import keras

    import keras_dnntools as kdt
    from keras_dnntools.uncertainty import monte_carlo

    rng = np.random.default_rng(5)
    x = rng.normal(size=(MC_ROWS, 6)).astype("float32")
    model = _mc_model()
    sampled = []  # the rows of every chunk this process samples
    compiled = monte_carlo._compiled

    def counting(*args, **kwargs):
        interpreter, run_chunk = compiled(*args, **kwargs)

        def counted(chunk, key):
            sampled.append(int(keras.tree.flatten(chunk)[0].shape[0]))
            return run_chunk(chunk, key)

        return interpreter, counted

    monte_carlo._compiled = counting
    kwargs = dict(n_samples=MC_SAMPLES, seed=3, batch_size=40, return_samples=True)
    first = kdt.uncertainty.mc_predict(model, x, **kwargs)
    rows_sampled = sum(sampled)
    again = kdt.uncertainty.mc_predict(model, x, **kwargs)
    return {
        "rows_sampled": rows_sampled,
        "output_kind": first.output_kind,
        "mean": first.mean,
        "std": first.std,
        "samples": first.samples,
        "mutual_information": first.mutual_information,
        "reproducible": bool(np.array_equal(first.samples, again.samples)),
    }


def mc_local_devices(process_id, process_count):
    """One process with 2 local devices: `mc_predict` samples its chunks on
    both, with the chunks' own keys (the single-device result, exactly)."""
    import jax
    import keras

    import keras_dnntools as kdt
    from keras_dnntools.uncertainty import _backend_jax

    del process_id, process_count
    rng = np.random.default_rng(5)
    x = rng.normal(size=(MC_ROWS, 6)).astype("float32")
    model = _mc_model()
    placed = []  # per call of the replicas: (rows, device) of each chunk
    run = _backend_jax._DeviceReplicas.run

    def spy(self, calls):
        outputs = run(self, calls)
        placed.append(
            [
                (int(inputs.shape[0]), str(next(iter(states[0]["mean"].devices()))))
                for (inputs, _), (states, _) in zip(calls, outputs, strict=True)
            ]
        )
        return outputs

    _backend_jax._DeviceReplicas.run = spy
    kwargs = dict(n_samples=MC_SAMPLES, seed=3, batch_size=64, return_samples=True)
    sharded = kdt.uncertainty.mc_predict(model, x, **kwargs)
    default = kdt.uncertainty.mc_predict(model, x, n_samples=MC_SAMPLES, seed=3)
    keras.distribution.set_distribution(None)
    one_device = kdt.uncertainty.mc_predict(model, x, **kwargs)
    return {
        "local_devices": len(jax.local_devices()),
        "placed": placed,
        "samples": sharded.samples,
        "one_device_samples": one_device.samples,
        "default_mean": default.mean,
        "one_device_mean": one_device.mean,
    }


SCENARIOS = {
    "mc_local_devices": mc_local_devices,
    "mc_predict": mc_predict,
    "schedules": schedules,
    "finder": finder,
    "unfreezing": unfreezing,
    "metric": metric,
    "layers": layers,
    "model_parallel": model_parallel,
}


def main(argv):
    scenario, process_id, process_count, ports, out = argv
    process_id, process_count = int(process_id), int(process_count)
    if scenario == "one_fails":  # the launcher's own test: 1 fails, 0 hangs
        if process_id == 1:
            sys.exit(3)
        time.sleep(600)
    _initialize(process_id, process_count, int(ports.split(",")[0]))
    _data_parallel()
    import jax

    results = {}
    for name in scenario.split(","):
        results[name] = SCENARIOS[name](process_id, process_count)
        _data_parallel()  # a scenario may have set another distribution
    result = {
        "process_index": jax.process_index(),
        "devices": len(jax.devices()),
        "result": results,
    }
    with open(out, "wb") as file:
        pickle.dump(result, file)


if __name__ == "__main__":
    main(sys.argv[1:])
