"""Benchmark: our random layers against their Keras baselines, with and without XLA.

Cases (CPU, float32):

* ``rrelu``: an MLP 784-1024-1024-10 (batch 256) with ``kdt.layers.RReLU()``
  activations against the same MLP with ``keras.layers.LeakyReLU``; a training
  step (``train_on_batch``, SGD) and inference (``predict_on_batch``), each
  compiled with and without ``jit_compile``. Targets: train <= 1.15x,
  inference <= 1.05x LeakyReLU.
* ``dropout layer``: ``kdt.layers.MCDropout(0.5)(x)`` against
  ``keras.layers.Dropout(0.5)(x, training=True)`` on a (256, 1024) tensor,
  inside ``tf.function`` with and without ``jit_compile``. Target: <= 1.05x.
* ``dropout mlp``: the same MLP with a dropout layer (rate 0.5) after each
  hidden layer, training step, MCDropout against Keras Dropout. Target <= 1.05x.
* ``dropout step``: a hand-written training step (``tf.function`` with a
  ``GradientTape``): Dense 1024, ReLU, dropout, Dense 1024 on (256, 1024)
  inputs, MCDropout and no dropout against Keras Dropout. Target <= 1.05x.
* ``xla``: Keras Dropout with XLA against Keras Dropout without it, and the
  same for MCDropout; the dropout MLP against the same MLP without dropout.
  Documents the slowdown of ``keras.random`` under XLA on CPU, and our fix
  (see ``keras_dnntools/_random.py``).

TensorFlow runs on one thread. The variants of a case take turns call by call
(in a rotating order), so that a change of machine load hits all of them
alike; the script prints each variant's minimum time per call, the ratio of
minima to the baseline (which decides PASS/FAIL) and the median of the ratios
of paired calls.

Run (about 3 minutes on 2 idle CPU cores)::

    python benchmarks/bench_layers.py
    python benchmarks/bench_layers.py --rounds 5 --calls 5   # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

import keras_dnntools as kdt

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

BATCH = 256
LOWER, UPPER = 1.0 / 8.0, 1.0 / 3.0


def mlp(hidden: Callable[[], list[keras.layers.Layer]]) -> keras.Model:
    """784-1024-1024-10, with ``hidden()`` layers after each hidden Dense."""
    layers: list[keras.layers.Layer] = [keras.Input((784,))]
    for _ in range(2):
        layers += [keras.layers.Dense(1024), *hidden()]
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers)


def compiled(model: keras.Model, jit: bool) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def time_rounds(
    variants: dict[str, Callable[[], object]], rounds: int, calls: int
) -> dict[str, list[float]]:
    """Seconds per call of each variant, ``rounds * calls`` figures each.

    The variants take turns call by call (in a rotating order), so that figure
    ``i`` of every variant was measured at about the same time: the ratios of
    paired figures are robust to changes of machine load.
    """
    for run in variants.values():  # warm-up: tracing and compilation
        for _ in range(3):
            _finish(run())
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds * calls):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            _finish(variants[name]())
            times[name].append(time.perf_counter() - start)
    return times


def _finish(result: object) -> None:
    if isinstance(result, tf.Tensor):
        result.numpy()


def report(
    case: str,
    times: dict[str, list[float]],
    baseline: str,
    target: float | None,
    untargeted: tuple[str, ...] = (),
) -> list[tuple[str, float, float | None]]:
    """Prints each variant's minimum, its ratio of minima to ``baseline`` and the
    median of the paired per-call ratios; the ratio of minima decides.

    ``target`` applies to every variant but ``untargeted`` ones.
    """
    rows = []
    for name, values in times.items():
        best_ms = min(values) * 1e3
        if name == baseline:
            print(f"  {case:<22} {name:<34} {best_ms:9.2f} ms   (baseline)")
            continue
        ratio = min(values) / min(times[baseline])
        median_ratio = statistics.median(
            value / base for value, base in zip(values, times[baseline], strict=True)
        )
        target_here = None if name in untargeted else target
        verdict = ""
        if target_here is not None:
            verdict = f"target <= {target_here:.2f}x: " + (
                "PASS" if ratio <= target_here else "FAIL"
            )
        print(
            f"  {case:<22} {name:<34} {best_ms:9.2f} ms   "
            f"{ratio:6.2f}x / {median_ratio:5.2f}x {baseline}   {verdict}"
        )
        rows.append((f"{case}: {name}", ratio, target_here))
    return rows


def bench_rrelu(jit: bool, rounds: int, calls: int) -> list:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(BATCH, 784)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=(BATCH,)).astype("int32"))
    keras.utils.set_random_seed(0)
    slope = (LOWER + UPPER) / 2
    leaky = compiled(mlp(lambda: [keras.layers.LeakyReLU(negative_slope=slope)]), jit)
    rrelu = compiled(mlp(lambda: [kdt.layers.RReLU(LOWER, UPPER, seed=0)]), jit)
    tag = "jit" if jit else "no jit"
    rows = []
    times = time_rounds(
        {
            "LeakyReLU train step": lambda: leaky.train_on_batch(x, y),
            "RReLU train step": lambda: rrelu.train_on_batch(x, y),
        },
        rounds,
        calls,
    )
    rows += report(f"rrelu ({tag})", times, "LeakyReLU train step", 1.15)
    times = time_rounds(
        {
            "LeakyReLU inference": lambda: leaky.predict_on_batch(x),
            "RReLU inference": lambda: rrelu.predict_on_batch(x),
        },
        rounds,
        calls * 3,
    )
    rows += report(f"rrelu ({tag})", times, "LeakyReLU inference", 1.05)
    return rows


def bench_dropout_layer(rounds: int, calls: int) -> list:
    x = tf.random.normal((BATCH, 1024), seed=0)
    variants = {}
    for jit in (False, True):
        tag = "jit" if jit else "no jit"
        keras_layer = keras.layers.Dropout(0.5, seed=0)
        mc_layer = kdt.layers.MCDropout(0.5, seed=0)
        variants[f"keras Dropout ({tag})"] = tf.function(
            lambda layer=keras_layer: layer(x, training=True), jit_compile=jit
        )
        variants[f"MCDropout ({tag})"] = tf.function(
            lambda layer=mc_layer: layer(x), jit_compile=jit
        )
    times = time_rounds(variants, rounds, calls * 2)
    rows = []
    for tag in ("no jit", "jit"):
        subset = {
            name: values for name, values in times.items() if name.endswith(f"({tag})")
        }
        rows += report("dropout layer", subset, f"keras Dropout ({tag})", 1.05)
    rows += report(
        "xla",
        {
            name: times[name]
            for name in ("keras Dropout (no jit)", "keras Dropout (jit)")
        },
        "keras Dropout (no jit)",
        None,
    )
    rows += report(
        "xla",
        {name: times[name] for name in ("MCDropout (no jit)", "MCDropout (jit)")},
        "MCDropout (no jit)",
        None,
    )
    return rows


def bench_dropout_mlp(rounds: int, calls: int) -> list:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(BATCH, 784)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=(BATCH,)).astype("int32"))
    keras.utils.set_random_seed(0)
    models = {}
    for jit in (False, True):
        tag = "jit" if jit else "no jit"
        models[f"keras Dropout ({tag})"] = compiled(
            mlp(lambda: [keras.layers.ReLU(), keras.layers.Dropout(0.5)]), jit
        )
        models[f"MCDropout ({tag})"] = compiled(
            mlp(lambda: [keras.layers.ReLU(), kdt.layers.MCDropout(0.5)]), jit
        )
        models[f"no dropout ({tag})"] = compiled(
            mlp(lambda: [keras.layers.ReLU()]), jit
        )
    times = time_rounds(
        {
            name: (lambda model=model: model.train_on_batch(x, y))
            for name, model in models.items()
        },
        rounds,
        calls,
    )
    rows = []
    for tag in ("no jit", "jit"):
        subset = {
            name: times[name]
            for name in (f"keras Dropout ({tag})", f"MCDropout ({tag})")
        }
        rows += report("dropout mlp", subset, f"keras Dropout ({tag})", 1.05)
        subset = {
            f"MLP {name}": times[name]
            for name in (f"no dropout ({tag})", f"keras Dropout ({tag})")
        }
        rows += report("xla", subset, f"MLP no dropout ({tag})", None)
    return rows


def bench_dropout_step(rounds: int, calls: int) -> list:
    """A hand-written training step, Dense-ReLU-dropout-Dense, in tf.function."""
    x = tf.random.normal((BATCH, 1024), seed=0)
    kernel = tf.Variable(tf.random.normal((1024, 1024), seed=1) * 0.03)
    keras_layer = keras.layers.Dropout(0.5, seed=0)
    mc_layer = kdt.layers.MCDropout(0.5, seed=0)
    dropouts = {
        "keras Dropout": lambda h: keras_layer(h, training=True),
        "MCDropout": mc_layer,
        "no dropout": lambda h: h,
    }

    def step(dropout, jit):
        @tf.function(jit_compile=jit)
        def run():
            with tf.GradientTape() as tape:
                hidden = dropout(tf.nn.relu(x @ kernel))
                loss = tf.reduce_sum(hidden @ kernel)
            return loss, tape.gradient(loss, kernel)

        return run

    variants = {
        f"{name} ({'jit' if jit else 'no jit'})": step(dropout, jit)
        for jit in (False, True)
        for name, dropout in dropouts.items()
    }
    times = time_rounds(variants, rounds, max(calls // 2, 1))
    rows = []
    for tag in ("no jit", "jit"):
        subset = {
            name: times[f"{name} ({tag})"]
            for name in ("keras Dropout", "MCDropout", "no dropout")
        }
        rows += report(
            f"dropout step ({tag})",
            subset,
            "keras Dropout",
            1.05,
            untargeted=("no dropout",),
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds")
    parser.add_argument("--calls", type=int, default=10, help="calls per round")
    args = parser.parse_args()
    keras.utils.disable_interactive_logging()
    print(
        f"keras {keras.__version__}, tensorflow {tf.__version__}, "
        "TensorFlow on 1 thread; "
        f"{args.rounds} x {args.calls} paired calls (x2 for the dropout layer, x3 "
        "for inference); ratio of minima / median of paired ratios"
    )
    rows = []
    for jit in (False, True):
        rows += bench_rrelu(jit, args.rounds, args.calls)
    rows += bench_dropout_layer(args.rounds, args.calls)
    rows += bench_dropout_mlp(args.rounds, args.calls)
    rows += bench_dropout_step(args.rounds, args.calls)
    missed = [name for name, ratio, target in rows if target and ratio > target]
    print("targets missed:", ", ".join(missed) if missed else "none")


if __name__ == "__main__":
    main()
