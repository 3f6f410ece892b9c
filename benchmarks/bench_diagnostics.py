"""Benchmark: what does `TrainingMonitor` cost per epoch of `fit()`?

The book's MLP (784-300-100-10, ReLU, `SGD(momentum=0.9)`), batch 32, on
synthetic rows of 784 features, timed for one epoch of `fit()`:

- plain `fit` (the baseline),
- `TrainingMonitor(frequency=100)` (target: <= 1.05x the baseline),
- `TrainingMonitor(frequency=1)` (reported; aim: <= 1.5x).

Every run builds and compiles a fresh model and fits it for 2 epochs; the
second epoch is timed (the first also holds the trace of the train step). One
CPU thread (TensorFlow's thread pools; XLA's Eigen on JAX). The
variants alternate in one process (round robin, the order rotated every
round); the script prints each variant's minimum wall time, the ratio of minima
to the baseline and the median of the per-round ratios. Run it once per
backend::

    KERAS_BACKEND=tensorflow python benchmarks/bench_diagnostics.py
    KERAS_BACKEND=jax python benchmarks/bench_diagnostics.py
    KERAS_BACKEND=jax python benchmarks/bench_diagnostics.py --rows 19200
    python benchmarks/bench_diagnostics.py --quick   # tiny: checks it runs
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import keras
import numpy as np

import keras_dnntools as kdt

if keras.backend.backend() == "tensorflow":  # one thread, as for every benchmark
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

BATCH_SIZE = 32
EPOCHS = 2
TARGET = 1.05  # frequency=100 against the plain epoch
AIM_EVERY_STEP = 1.5


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def _model():
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy"
    )
    return model


def _run(variant, x, y):
    keras.utils.set_random_seed(0)
    model = _model()
    timer = _EpochTimer()
    callbacks = [timer]
    if variant != "plain":
        callbacks.insert(0, kdt.callbacks.TrainingMonitor(frequency=variant))
    model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=EPOCHS, callbacks=callbacks, verbose=0
    )
    del model
    keras.backend.clear_session()
    gc.collect()
    return timer.seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rows = args.rows or (640 if args.quick else 60_000)
    rounds = args.rounds or (2 if args.quick else 7)
    rng = np.random.default_rng(0)
    x = rng.random((rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=rows)
    variants = ["plain", 100, 1]
    for variant in variants:  # warm-up round
        _run(variant, x, y)
    times = {variant: [] for variant in variants}
    for round_index in range(rounds):
        order = variants[round_index % 3 :] + variants[: round_index % 3]
        for variant in order:
            times[variant].append(_run(variant, x, y))
    base = min(times["plain"])
    print(
        f"backend {keras.backend.backend()}, {rows} rows, batch {BATCH_SIZE}, "
        f"{rounds} rounds (second epoch timed)"
    )
    print(f"{'variant':<28} {'min (s)':>9} {'ratio of min':>13} {'median ratio':>13}")
    for variant in variants:
        ratios = [t / b for t, b in zip(times[variant], times["plain"], strict=True)]
        name = "plain fit" if variant == "plain" else f"TrainingMonitor({variant})"
        print(
            f"{name:<28} {min(times[variant]):>9.3f} "
            f"{min(times[variant]) / base:>13.3f} {statistics.median(ratios):>13.3f}"
        )
    print(f"targets: frequency=100 <= {TARGET}x; frequency=1 aim <= {AIM_EVERY_STEP}x")


if __name__ == "__main__":
    main()
