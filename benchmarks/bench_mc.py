"""Benchmark: `kdt.uncertainty.mc_predict` against the seeds' Monte Carlo loop.

Runs on the Keras backend of ``KERAS_BACKEND`` (TensorFlow, JAX or PyTorch);
every ratio compares variants on the same backend, in the same run. Two
models, T = 100 samples:

* ``book``: the chapter's model (Flatten, Dropout, Dense 300, Dropout,
  Dense 100, Dropout, Dense 10 softmax on 28x28 inputs). Target: mc_predict
  <= 0.5x the seeds' eager loop.
* ``trunk``: a deterministic trunk holding most of the compute (Dense 1024,
  1024, 512) and one Dropout right before the head. Target: <= 0.125x the
  seeds' loop.

Variants, on the same model and data:

* ``seeds loop``: ``np.stack([model(X, training=True) for _ in range(T)])``,
  the seeds' code (eager), with the outputs converted to NumPy;
* ``mc_predict``: ``kdt.uncertainty.mc_predict(model, X, T)`` with a new
  seed per call (its samples are T independent passes, like the loop's);
* ``forward floor``: T deterministic forward passes of the same rows (no
  dropout at all; a ``tf.function`` on TensorFlow): the matrix products alone,
  which an exact sampler cannot skip when dropout acts on the input (the book
  model): its ratio to the seeds loop is the best any exact sampler reaches
  there.

One CPU thread per backend. The variants run interleaved, round after round,
in an order reversed every other round, so that a change of machine load hits
both alike; the script prints the ratio of the minima and the median of the
per-round ratios. mc_predict is warmed up once (its compiled loop is kept per
model, so only a user's first call pays the tracing).

Run (a few minutes per backend on 2 CPU cores)::

    KERAS_BACKEND=tensorflow python benchmarks/bench_mc.py
    KERAS_BACKEND=jax python benchmarks/bench_mc.py
    KERAS_BACKEND=torch python benchmarks/bench_mc.py
    KERAS_BACKEND=jax python benchmarks/bench_mc.py --quick   # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import keras
import numpy as np

import keras_dnntools as kdt

T = 100


def _one_thread() -> None:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    elif backend == "torch":
        import torch

        torch.set_num_threads(1)


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


def variants(model: keras.Model, x: np.ndarray, samples: int) -> dict:
    x_tensor = keras.ops.convert_to_tensor(x)

    def seeds_loop():
        return np.stack(
            [
                keras.ops.convert_to_numpy(model(x_tensor, training=True))
                for _ in range(samples)
            ]
        )

    seeds = iter(range(10**6))

    def mc():
        return kdt.uncertainty.mc_predict(model, x, samples, seed=next(seeds)).mean

    forward = model
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        forward = tf.function(lambda v: model(v, training=False))

    def forward_floor():
        for _ in range(samples):
            keras.ops.convert_to_numpy(forward(x_tensor))

    mc()  # traces once; later calls reuse the compiled loop
    forward(x_tensor)
    return {"seeds loop": seeds_loop, "mc_predict": mc, "forward floor": forward_floor}


def measure(name: str, model: keras.Model, x: np.ndarray, rounds: int, samples: int):
    runs = variants(model, x, samples)
    times: dict[str, list[float]] = {key: [] for key in runs}
    for round_index in range(rounds):
        order = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
        for key in order:
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    print(f"\n## {name}: N={len(x)}, T={samples}, {rounds} rounds (seconds)")
    for key, values in times.items():
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {key:12s} min {min(values):7.3f}   [{spread}]")
    pairs = zip(times["mc_predict"], times["seeds loop"], strict=True)
    return (
        min(times["mc_predict"]) / min(times["seeds loop"]),
        statistics.median(a / b for a, b in pairs),
        min(times["forward floor"]) / min(times["seeds loop"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-book", type=int, default=10_000)
    parser.add_argument("--n-trunk", type=int, default=2_000)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks the script runs"
    )
    args = parser.parse_args()
    samples = T
    if args.quick:
        args.rounds, args.n_book, args.n_trunk, samples = 1, 64, 32, 5
    _one_thread()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    print(
        f"Keras {keras.__version__} on {keras.backend.backend()}, "
        f"{os.cpu_count()} CPUs (one thread used)"
    )
    rows = []
    for name, model, n, target in (
        ("book", book_model(), args.n_book, 0.5),
        ("trunk", trunk_model(), args.n_trunk, 0.125),
    ):
        x = rng.random((n, 28, 28), dtype="float32")
        ratio = measure(f"{name} model", model, x, args.rounds, samples)
        rows.append((name, ratio, target))
    print(f"\n## mc_predict / seeds loop on {keras.backend.backend()}")
    print(
        "| model | ratio of minima | median ratio | forward floor | target | verdict |"
    )
    print("|---|---|---|---|---|---|")
    for name, (minima, median, floor), target in rows:
        verdict = "PASS" if minima <= target else "FAIL"
        print(
            f"| {name} | {minima:.3f} | {median:.3f} | {floor:.3f} | <= {target} "
            f"| {verdict} |"
        )
    print(
        "forward floor: T deterministic forward passes of the same rows (no "
        "dropout; compiled on TensorFlow), over the seeds loop. When dropout acts "
        "on the input (book), every sample needs every matrix product: no exact "
        "sampler goes below it. A deterministic trunk (trunk) runs once per chunk "
        "in mc_predict, below this floor."
    )


if __name__ == "__main__":
    main()
