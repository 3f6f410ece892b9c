"""Benchmark: what freezing saves, and what `GradualUnfreezing` costs.

Two cases (float32, the device TensorFlow picks: the CPU unless a GPU is
visible; ``CUDA_VISIBLE_DEVICES=`` forces the CPU):

* ``frozen base``: a model whose base holds almost all the parameters (Dense
  2048-2048-2048-2048 on 2048 inputs, 16.8M parameters) under a Dense 10 head
  (20k parameters), trained one epoch at a time (4,096 examples, batch 256)
  with the base frozen (`kdt.transfer.freeze(model, until=base)` and
  `recompile`) and fully trainable. A frozen base needs neither gradients nor
  optimizer updates. Target: frozen epoch <= 0.7x the trainable one.
* ``unfreeze event``: `kdt.transfer.GradualUnfreezing` on a 6-layer MLP
  (Dense 1024 x 5 and a head, 2,048 examples, batch 128), one more layer
  unfrozen every other epoch (5 events in 12 epochs), with Adam and with a
  `discriminative_optimizer` (`MultiOptimizer`). The overhead of an event is
  the time of the epoch where it happens minus the time of the next epoch,
  which trains the same layers without an event; it includes the callback's
  own work (setting the flags, shown separately) and retracing the train step.
  The optimizer gets its slots once, at the start of `fit()`. For scale, the
  script also prints the cost of doing the same by hand: a new `fit()` call
  after `recompile` (a fresh optimizer, a retrace).

The variants of the first case take turns epoch by epoch, so that a change of
machine load hits both alike; the script prints each variant's median epoch
time and the median of the ratios of paired epochs.

Run (about 2 minutes on 2 idle CPU cores)::

    python benchmarks/bench_transfer.py
    python benchmarks/bench_transfer.py --rounds 3   # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

import keras_dnntools as kdt

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)


def frozen_base_model() -> keras.Model:
    base = keras.Sequential(
        [keras.Input((2048,))]
        + [keras.layers.Dense(2048, activation="relu") for _ in range(4)],
        name="base",
    )
    return keras.Sequential(
        [keras.Input((2048,)), base, keras.layers.Dense(10, name="head")]
    )


def bench_frozen_base(rounds: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 2048)).astype("float32")
    y = rng.integers(0, 10, size=(4096,))
    models = {}
    for variant in ("trainable", "frozen"):
        keras.utils.set_random_seed(0)
        model = frozen_base_model()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        if variant == "frozen":
            kdt.transfer.freeze(model, until="base")
            kdt.transfer.recompile(model)
        model.fit(x, y, epochs=1, batch_size=256, verbose=0)  # trace, build
        models[variant] = model
    params = {
        name: (
            sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            model.count_params(),
        )
        for name, model in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(rounds):
        order = list(models) if round_index % 2 == 0 else list(models)[::-1]
        for name in order:
            start = time.perf_counter()
            models[name].fit(x, y, epochs=1, batch_size=256, verbose=0)
            times[name].append(time.perf_counter() - start)
    ratios = [
        frozen / trainable
        for frozen, trainable in zip(times["frozen"], times["trainable"], strict=True)
    ]
    print("frozen base: one epoch, 4,096 examples, batch 256, TensorFlow on 1 thread")
    for name, samples in times.items():
        trainable, total = params[name]
        print(
            f"  {name:<10} min {min(samples) * 1e3:8.1f} ms"
            f"   ({trainable:,} of {total:,} parameters trainable)"
        )
    ratio = min(times["frozen"]) / min(times["trainable"])
    verdict = "PASS" if ratio <= 0.7 else "FAIL"
    print(
        f"  frozen / trainable: ratio of minima {ratio:.2f}x, median of per-round "
        f"ratios {statistics.median(ratios):.2f}x (target <= 0.7x: {verdict})"
    )
    return ratio


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.perf_counter() - self._start)


class TimedUnfreezing(kdt.transfer.GradualUnfreezing):
    """GradualUnfreezing that records how long its own work takes."""

    def __init__(self, schedule):
        super().__init__(schedule)
        self.own: dict[int, float] = {}

    def on_epoch_begin(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_begin(epoch, logs)
        self.own[epoch] = time.perf_counter() - start


def unfreezing_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((1024,))]
        + [keras.layers.Dense(1024, activation="relu") for _ in range(5)]
        + [keras.layers.Dense(10)]
    )


def optimizer_for(kind: str, model: keras.Model) -> keras.optimizers.Optimizer:
    if kind == "adam":
        return keras.optimizers.Adam(1e-4)
    return kdt.transfer.discriminative_optimizer(
        model, keras.optimizers.Adam(), learning_rate_range=(1e-6, 1e-4)
    )


def bench_unfreezing(kind: str, x: np.ndarray, y: np.ndarray) -> None:
    keras.utils.set_random_seed(0)
    model = unfreezing_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer_for(kind, model), loss=loss)
    schedule = {0: 1, 2: 2, 4: 3, 6: 4, 8: 5, 10: 6}
    unfreezing, timer = TimedUnfreezing(schedule), EpochTimer()
    # The timer comes first: the epoch's clock starts before the unfreezing.
    model.fit(x, y, epochs=12, batch_size=128, verbose=0, callbacks=[timer, unfreezing])
    events = sorted(epoch for epoch in schedule if epoch > 0)
    overheads = [timer.durations[e] - timer.durations[e + 1] for e in events]
    own = [unfreezing.own[e] for e in events]
    plain = statistics.median(timer.durations[e + 1] for e in events)
    print(
        f"  {kind:<15} event overhead median {statistics.median(overheads) * 1e3:7.1f}"
        f" ms (callback's own work {statistics.median(own) * 1e3:6.1f} ms);"
        f" epoch without event {plain * 1e3:7.1f} ms"
    )


def bench_refit(x: np.ndarray, y: np.ndarray) -> None:
    """The by-hand alternative: unfreeze, recompile, and a new fit() call."""
    keras.utils.set_random_seed(0)
    model = unfreezing_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    kdt.transfer.unfreeze(model, top=1)
    kdt.transfer.recompile(model)
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    firsts, seconds = [], []
    for top in range(2, 7):
        kdt.transfer.unfreeze(model, top=top)
        kdt.transfer.recompile(model)
        timer = EpochTimer()
        start = time.perf_counter()
        model.fit(x, y, epochs=2, batch_size=128, verbose=0, callbacks=[timer])
        total = time.perf_counter() - start
        firsts.append(total - timer.durations[1])
        seconds.append(timer.durations[1])
    overheads = [a - b for a, b in zip(firsts, seconds, strict=True)]
    median = statistics.median(overheads) * 1e3
    print(
        f"  {'by hand':<15} event overhead median {median:7.1f}"
        " ms (recompile + a new fit() call, for scale)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=7, help="timed epochs per variant"
    )
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    bench_frozen_base(args.rounds)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 1024)).astype("float32")
    y = rng.integers(0, 10, size=(2048,))
    print("GradualUnfreezing: 6-layer MLP, 2,048 examples, batch 128, 5 events")
    for kind in ("adam", "discriminative"):
        bench_unfreezing(kind, x, y)
    bench_refit(x, y)


if __name__ == "__main__":
    main()
