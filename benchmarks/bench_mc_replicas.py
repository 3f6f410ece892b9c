"""Benchmark: `mc_predict` on 2 local replicas against 1, in one process.

TensorFlow: the same model built on one device and in a `MirroredStrategy`
over 2 logical CPUs (inter-op parallelism 2, intra-op 1, so that each replica
gets one core). JAX: the same model without and with a `DataParallel`
distribution over 2 CPU devices (``--xla_force_host_platform_device_count=2``,
XLA on one thread per device). The call is the same in both,
``mc_predict(model, x, n_samples=100, seed=0)`` with the default
`batch_size`; calls on 1 and 2 replicas alternate for `--rounds` rounds after
a warm-up. Prints the best time of each, the ratio of minima and the median of
per-round ratios (2 replicas / 1: below 1 is faster). On this 2-core machine
the ideal is 0.5.

Usage::

    python benchmarks/bench_mc_replicas.py --backend tensorflow
    python benchmarks/bench_mc_replicas.py --backend jax
    python benchmarks/bench_mc_replicas.py --backend tensorflow --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

T = 100


def _models(backend):
    """(model on one device, the same weights on 2 replicas)."""
    from bench_mc import book_model  # the chapter's model, as in bench_mc.py

    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(2)
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        import keras

        keras.utils.set_random_seed(0)
        single = book_model()
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
            replicated = book_model()
        replicated.set_weights(single.get_weights())
        return single, replicated
    import jax
    import keras

    keras.utils.set_random_seed(0)
    single = book_model()
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    keras.distribution.set_distribution(distribution)
    replicated = book_model()
    replicated.set_weights(single.get_weights())
    return single, replicated


def _run(backend, rows, rounds):
    import keras
    import numpy as np

    import keras_dnntools as kdt

    single, replicated = _models(backend)
    x = np.random.default_rng(0).random((rows, 28, 28)).astype("float32")

    def call(model):
        # The distribution is global on JAX: on only for the replicated model.
        if backend == "jax":
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(devices=_devices())
                if model is replicated
                else None
            )
        start = time.perf_counter()
        kdt.uncertainty.mc_predict(model, x, n_samples=T, seed=0)
        return time.perf_counter() - start

    for model in (single, replicated):  # warm-up: tracing and compiling
        call(model)
    ones, twos = [], []
    for round_index in range(rounds):
        order = (single, replicated) if round_index % 2 == 0 else (replicated, single)
        times = {id(model): call(model) for model in order}
        ones.append(times[id(single)])
        twos.append(times[id(replicated)])
    ratios = [two / one for one, two in zip(ones, twos, strict=True)]
    print(f"backend {backend}, N={rows}, T={T}, {rounds} rounds")
    print(
        f"1 replica:  best {min(ones):.3f} s  ({rows * T / min(ones):,.0f} samples/s)"
    )
    print(
        f"2 replicas: best {min(twos):.3f} s  ({rows * T / min(twos):,.0f} samples/s)"
    )
    print(
        f"2 replicas / 1: ratio of minima {min(twos) / min(ones):.3f}, "
        f"median of per-round ratios {statistics.median(ratios):.3f}"
    )


def _devices():
    import jax

    return jax.devices()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax"), default="tensorflow"
    )
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="1 round, 1,000 rows")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rounds = 1000, 1
    if not args.child:
        # A fresh process: devices and threads are set before the backend starts.
        env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if args.backend == "jax":
            env["XLA_FLAGS"] = (
                "--xla_force_host_platform_device_count=2 "
                "--xla_cpu_multi_thread_eigen=false"
            )
        command = [sys.executable, __file__, "--child", "--backend", args.backend]
        command += ["--rows", str(args.rows), "--rounds", str(args.rounds)]
        sys.exit(subprocess.call(command, env=env))
    _run(args.backend, args.rows, args.rounds)


if __name__ == "__main__":
    main()
