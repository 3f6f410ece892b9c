"""Benchmark: `mc_predict` throughput with 1 and 2 JAX processes.

The same call, ``mc_predict(model, x, n_samples=T, seed=...)`` with the same
`x` on every process, run by 1 process and by 2 processes joined by
`jax.distributed` on 127.0.0.1 (gloo CPU collectives, `DataParallel` over
both processes' devices). With 2 processes each samples its half of the
instances and the results are gathered, so every process returns the whole
`MCPrediction`. Each process runs XLA on one thread. The model is the
chapter's (Flatten-free: 784 inputs, Dropout, Dense 300, Dropout, Dense 100,
Dropout, Dense 10).

A run starts its processes, warms `mc_predict` up once (tracing), then times
`--calls` calls; runs of 1 and 2 processes alternate for `--rounds` rounds.
The script prints the best time of a call for each, the throughput in
sampled instances per second (instances x T / time) and the speed-up.
2 processes on this machine's 2 cores: the point is that the work splits,
not the absolute figure.

Usage::

    python benchmarks/bench_mc_processes.py            # 5 rounds
    python benchmarks/bench_mc_processes.py --quick    # 1 round, small
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

T = 100


def _worker(index: int, count: int, port: int, rows: int, calls: int) -> None:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if count > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=count,
            process_id=index,
            initialization_timeout=60,
        )
    import keras
    import numpy as np

    import keras_dnntools as kdt

    distribution = keras.distribution.DataParallel(devices=jax.devices())
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    x = np.random.default_rng(0).random((rows, 784), dtype=np.float32)
    kdt.uncertainty.mc_predict(model, x, T, seed=0)  # warm-up: traces
    times = []
    for call in range(calls):
        start = time.perf_counter()
        prediction = kdt.uncertainty.mc_predict(model, x, T, seed=call)
        times.append(time.perf_counter() - start)
    assert prediction.mean.shape == (rows, 10)
    if index == 0:
        print(json.dumps({"seconds": min(times)}), flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(count: int, rows: int, calls: int) -> float:
    """The best time of one `mc_predict` call with `count` processes."""
    port = _free_port()
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    }
    command = [sys.executable, __file__, "--worker"]
    processes = [
        subprocess.Popen(
            [*command, str(index), str(count), str(port), str(rows), str(calls)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for index in range(count)
    ]
    try:
        outputs = [process.communicate(timeout=600)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if any(process.returncode for process in processes):
        raise RuntimeError(f"a worker of the {count}-process run failed")
    line = [x for x in outputs[0].splitlines() if x.startswith("{")][-1]
    return json.loads(line)["seconds"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 500 rows")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--worker", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(*args.worker)
        return
    rows = args.rows or (500 if args.quick else 4000)
    rounds = args.rounds or (1 if args.quick else 5)
    times = {1: [], 2: []}
    for round_index in range(rounds):
        order = (1, 2) if round_index % 2 == 0 else (2, 1)
        for count in order:
            times[count].append(_run(count, rows, args.calls))
    print(
        f"mc_predict, T = {T}, {rows} instances of 784 features, the chapter's "
        f"model, JAX, {rounds} rounds, best of {args.calls} calls per run"
    )
    print(f"{'processes':>9} {'best s':>8} {'instances x T / s':>18} {'speed-up':>9}")
    for count in (1, 2):
        best = min(times[count])
        print(
            f"{count:>9} {best:>8.3f} {rows * T / best:>18,.0f} "
            f"{min(times[1]) / best:>8.2f}x"
        )
    ratios = [one / two for one, two in zip(times[1], times[2], strict=True)]
    print(f"median per-round speed-up: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
