"""Benchmark: `kdt.uncertainty.mc_predict` against the book's Monte Carlo loop.

Two models, T = 100 samples, N instances (2,000 to 10,000):

* ``book``: the chapter's model (Flatten, Dropout, Dense 300, Dropout,
  Dense 100, Dropout, Dense 10 softmax on 28x28 inputs). Targets:
  mc_predict >= 2x faster than the book's eager loop, and <= 1.6x the cost of
  T compiled deterministic passes.
* ``trunk``: a deterministic trunk holding most of the compute (Dense 1024,
  1024, 512) and one Dropout right before the head. Targets: >= 8x faster than
  the book's loop and <= 0.25x the cost of T deterministic passes.

Variants, all on the same model and data:

* ``book loop``: ``np.stack([model(X, training=True) for _ in range(T)])``,
  the seeds' code (eager);
* ``tf.function loop``: the same loop with the forward pass compiled by
  `tf.function` (what a user would try first), for reference;
* ``deterministic``: T calls of a compiled ``model(X, training=False)``: the
  cost of the same arithmetic without any randomness;
* ``mc_predict``: ``kdt.uncertainty.mc_predict(model, X, T)``.

TensorFlow runs on one thread. The variants run interleaved, round after
round, in an order reversed every other round, so that a change of machine
load hits all of them alike; for each comparison the script prints the ratio
of the minima and the median of the per-round ratios. Every compiled variant
is warmed up (traced) once before the timings; mc_predict keeps its compiled
loop per model, so only a user's first call pays the tracing (about 0.5 s).

Run (about 5 minutes on 2 CPU cores)::

    python benchmarks/bench_mc.py            # N=10000 (book), N=2000 (trunk)
    python benchmarks/bench_mc.py --rounds 3 --n-book 5000   # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import keras_dnntools as kdt

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

T = 100


def book_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(300, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def trunk_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def variants(model: keras.Model, x: np.ndarray) -> dict:
    x_tensor = tf.constant(x)
    deterministic = tf.function(lambda inputs: model(inputs, training=False))
    stochastic = tf.function(lambda inputs: model(inputs, training=True))
    deterministic(x_tensor)  # trace once, outside the timings
    stochastic(x_tensor)

    def book_loop():
        return np.stack([model(x, training=True) for _ in range(T)])

    def function_loop():
        return np.stack([stochastic(x_tensor).numpy() for _ in range(T)])

    def deterministic_passes():
        for _ in range(T):
            deterministic(x_tensor).numpy()

    seeds = iter(range(10**6))

    def mc():
        return kdt.uncertainty.mc_predict(model, x, T, seed=next(seeds)).mean

    mc()  # traces once; later calls reuse the compiled loop

    return {
        "book loop": book_loop,
        "tf.function loop": function_loop,
        "deterministic": deterministic_passes,
        "mc_predict": mc,
    }


def measure(name: str, model: keras.Model, x: np.ndarray, rounds: int) -> dict:
    runs = variants(model, x)
    times: dict[str, list[float]] = {key: [] for key in runs}
    for round_index in range(rounds):
        order = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
        for key in order:
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    print(f"\n## {name}: N={len(x)}, T={T}, {rounds} rounds (seconds)")
    for key, values in times.items():
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {key:18s} min {min(values):7.3f}   [{spread}]")

    def ratios(numerator: str, denominator: str) -> tuple[float, float]:
        """(ratio of minima, median of per-round ratios)."""
        pairs = zip(times[numerator], times[denominator], strict=True)
        return (
            min(times[numerator]) / min(times[denominator]),
            statistics.median(a / b for a, b in pairs),
        )

    speedup = ratios("book loop", "mc_predict")
    cost = ratios("mc_predict", "deterministic")
    function_speedup = ratios("book loop", "tf.function loop")
    function_cost = ratios("tf.function loop", "deterministic")
    print("  (ratio of minima / median of per-round ratios)")
    print(f"  mc_predict speed-up over the book loop:   {_pair(speedup, 'x')}")
    print(f"  mc_predict cost / T deterministic passes: {_pair(cost, '')}")
    print(
        f"  tf.function loop: {_pair(function_speedup, 'x')} the book loop's "
        f"speed, {_pair(function_cost, '')} x deterministic"
    )
    return {"speedup": speedup, "cost": cost}


def _pair(values: tuple[float, float], unit: str) -> str:
    return f"{values[0]:.2f}{unit} / {values[1]:.2f}{unit}"


def _verdict(name: str, result: dict, min_speedup: float, max_cost: float) -> bool:
    passed = result["speedup"][0] >= min_speedup and result["cost"][0] <= max_cost
    print(
        f"  {name:6s} speed-up {_pair(result['speedup'], 'x')} (>= {min_speedup}), "
        f"cost {_pair(result['cost'], '')} (<= {max_cost}): "
        f"{'PASS' if passed else 'FAIL'}"
    )
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n-book", type=int, default=10_000)
    parser.add_argument("--n-trunk", type=int, default=2_000)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs"
    )
    book = measure(
        "book model",
        book_model(),
        rng.random((args.n_book, 28, 28), dtype="float32"),
        args.rounds,
    )
    trunk = measure(
        "trunk model (one Dropout before the head)",
        trunk_model(),
        rng.random((args.n_trunk, 28, 28), dtype="float32"),
        args.rounds,
    )
    print("\n## targets (ratio of minima decides)")
    _verdict("book", book, 2.0, 1.6)
    _verdict("trunk", trunk, 8.0, 0.25)


if __name__ == "__main__":
    main()
