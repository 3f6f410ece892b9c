"""The offline demo behind ``python -m keras_dnntools demo``.

It runs on scikit-learn's bundled digits data (8x8 images, 10 classes), so it
needs no download: a plain Keras baseline against the chapter's recipe (He
initialization, RReLU, max-norm, 1cycle with momentum, MC dropout), the
learning-rate finder, and the "B on A" transfer experiment. It prints a results
table and writes plots to the output folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import keras_dnntools as kdt
from keras_dnntools._optional import require_pyplot, require_sklearn_digits

NUM_CLASSES = 10
MC_SAMPLES = 50
TRANSFER_LABELLED = 40


@dataclass
class Row:
    """One line of the results table."""

    name: str
    accuracy: float
    nll: float
    ece: float
    seconds: float


def load_splits(seed: int) -> dict[str, np.ndarray]:
    """Digits scaled to [0, 1], split 60/20/20 into train, validation and test."""
    load_digits = require_sklearn_digits()
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train, n_valid = int(0.6 * len(x)), int(0.2 * len(x))
    return {
        "x_train": x[:n_train],
        "y_train": y[:n_train],
        "x_valid": x[n_train : n_train + n_valid],
        "y_valid": y[n_train : n_train + n_valid],
        "x_test": x[n_train + n_valid :],
        "y_test": y[n_train + n_valid :],
    }


def _nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    picked = probs[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def _score(name: str, y_true, probs, seconds: float) -> Row:
    return Row(
        name=name,
        accuracy=float(np.mean(probs.argmax(axis=-1) == y_true)),
        nll=_nll(y_true, probs),
        ece=float(kdt.metrics.expected_calibration_error(y_true, probs)),
        seconds=seconds,
    )


def build_baseline(num_inputs: int):
    """What a Keras user writes first: ReLU, Glorot init, Adam, no regularization."""
    return keras.Sequential(
        [
            keras.Input((num_inputs,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )


def build_recipe(num_inputs: int, seed: int):
    """The chapter's recipe: He init, RReLU, MC dropout (max-norm is added later)."""
    layers = [keras.Input((num_inputs,))]
    for index in range(2):
        layers += [
            keras.layers.Dense(128, kernel_initializer="he_normal"),
            kdt.layers.RReLU(seed=seed + index),
            kdt.layers.MCDropout(0.2, seed=seed + 10 + index),
        ]
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax"))
    return keras.Sequential(layers)


class _EpochProgress(keras.callbacks.Callback):
    """One progress bar over the epochs of a fit (the demo's fits are quiet)."""

    def __init__(self, epochs: int, label: str):
        super().__init__()
        self.epochs = epochs
        self.label = label

    def on_train_begin(self, logs=None):
        print(f"  {self.label}")
        self.bar = keras.utils.Progbar(self.epochs, unit_name="epoch")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(epoch + 1, values=[("loss", (logs or {}).get("loss", 0.0))])


def train_baseline(data, epochs: int, seed: int) -> tuple[Row, object]:
    keras.utils.set_random_seed(seed)
    model = build_baseline(data["x_train"].shape[1])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[_EpochProgress(epochs, "baseline (ReLU, Adam, constant rate)")],
    )
    probs = model.predict(data["x_test"], verbose=0)
    return _score("baseline", data["y_test"], probs, time.perf_counter() - start), model


def find_rate(data, seed: int, steps: int):
    keras.utils.set_random_seed(seed)
    model = build_recipe(data["x_train"].shape[1], seed)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    print("  learning-rate finder")
    return kdt.find_learning_rate(
        model,
        data["x_train"],
        data["y_train"],
        batch_size=32,
        min_learning_rate=1e-4,
        max_learning_rate=10.0,
        steps=steps,
    )


def train_recipe(data, epochs: int, seed: int, max_rate: float, mc_samples: int):
    keras.utils.set_random_seed(seed)
    model = build_recipe(data["x_train"].shape[1], seed)
    model.compile(
        optimizer=keras.optimizers.SGD(max_rate, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    kdt.constraints.apply_max_norm(model, max_value=3.0)
    scheduler = kdt.callbacks.OneCycleScheduler(max_rate)
    start = time.perf_counter()
    history = model.fit(
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[
            scheduler,
            _EpochProgress(epochs, f"recipe (1cycle to {max_rate:.3g}, max-norm 3)"),
        ],
    )
    seconds = time.perf_counter() - start
    one_pass = model.predict(data["x_test"], verbose=0)
    single = _score("recipe, 1 stochastic pass", data["y_test"], one_pass, seconds)
    start = time.perf_counter()
    prediction = kdt.uncertainty.mc_predict(
        model, data["x_test"], n_samples=mc_samples, seed=seed
    )
    mc_row = _score(
        f"recipe + MC dropout ({mc_samples} samples)",
        data["y_test"],
        np.asarray(prediction.mean),
        seconds + time.perf_counter() - start,
    )
    return single, mc_row, prediction, history


def transfer_experiment(data, epochs: int, seed: int) -> list[Row]:
    """Model A on digits 0-7; task B: odd vs even from 40 labelled images."""
    x_all = np.concatenate([data["x_train"], data["x_valid"]])
    y_all = np.concatenate([data["y_train"], data["y_valid"]])
    seen = y_all < 8
    keras.utils.set_random_seed(seed)
    model_a = keras.Sequential(
        [
            keras.Input((x_all.shape[1],)),
            keras.layers.Dense(128, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(8, activation="softmax"),
        ]
    )
    model_a.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model_a.fit(
        x_all[seen],
        y_all[seen],
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[_EpochProgress(epochs, "transfer: model A on digits 0-7")],
    )
    rng = np.random.default_rng(seed)
    few = rng.choice(len(x_all), TRANSFER_LABELLED, replace=False)
    x_b, y_b = x_all[few], (y_all[few] % 2).astype("float32")
    x_test, y_test = data["x_test"], data["y_test"] % 2

    def binary_head():
        return keras.layers.Dense(1, activation="sigmoid")

    rows = []
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model_b = kdt.transfer.reuse_layers(model_a, drop_top=1, head=binary_head())
    model_b.compile(optimizer="adam", loss="binary_crossentropy")
    print("  transfer: model B on A (kdt.transfer.fine_tune)")
    kdt.transfer.fine_tune(
        model_b,
        x_b,
        y_b,
        epochs=max(epochs // 2, 2),
        freeze_epochs=max(epochs // 4, 1),
        batch_size=8,
        verbose=0,
    )
    rows.append(_binary_row("B on A (fine_tune)", model_b, x_test, y_test, start))

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    scratch = keras.Sequential(
        [
            keras.Input((x_all.shape[1],)),
            keras.layers.Dense(128, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal"),
            binary_head(),
        ]
    )
    scratch.compile(optimizer="adam", loss="binary_crossentropy")
    scratch.fit(
        x_b,
        y_b,
        epochs=epochs,
        batch_size=8,
        verbose=0,
        callbacks=[_EpochProgress(epochs, "transfer: same model from scratch")],
    )
    rows.append(_binary_row("B from scratch", scratch, x_test, y_test, start))
    return rows


def _binary_row(name, model, x_test, y_test, start) -> Row:
    positive = model.predict(x_test, verbose=0).reshape(-1)
    probs = np.stack([1.0 - positive, positive], axis=-1)
    return _score(name, y_test, probs, time.perf_counter() - start)


def format_table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| model | test accuracy | NLL | ECE | wall time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.accuracy:.3f} | {row.nll:.3f} | {row.ece:.3f} "
            f"| {row.seconds:.1f} |"
        )
    return "\n".join(lines)


def write_plots(output: Path, finder, max_rate, total_steps, prediction, y_test):
    import matplotlib

    matplotlib.use("Agg")
    plt = require_pyplot()

    paths = {}
    figure, ax = plt.subplots(figsize=(6, 4))
    finder.plot(ax=ax)
    paths["lr_finder"] = output / "lr_finder.png"
    figure.savefig(paths["lr_finder"], dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, ax = plt.subplots(figsize=(6, 4))
    kdt.plotting.plot_schedule(
        kdt.schedules.OneCycleSchedule(max_rate, total_steps),
        momentum=kdt.schedules.OneCycleMomentum(total_steps),
        ax=ax,
    )
    paths["one_cycle"] = output / "one_cycle.png"
    figure.savefig(paths["one_cycle"], dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, ax = plt.subplots(figsize=(6, 4))
    kdt.plotting.plot_uncertainty_histogram(prediction, y_test, ax=ax)
    ax.set_title("MC dropout: predictive entropy on the test split")
    paths["uncertainty"] = output / "uncertainty_histogram.png"
    figure.savefig(paths["uncertainty"], dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, ax = plt.subplots(figsize=(5, 5))
    kdt.plotting.plot_reliability_diagram(y_test, np.asarray(prediction.mean), ax=ax)
    paths["reliability"] = output / "reliability_diagram.png"
    figure.savefig(paths["reliability"], dpi=100, bbox_inches="tight")
    plt.close(figure)
    return paths


def run_demo(
    epochs: int = 40, output: str = "demo_output", seed: int = 42, quick=False
) -> list[Row]:
    """Runs the whole demo and returns the rows of the results table."""
    # Fail before any training when the `examples` extra is missing.
    require_sklearn_digits()
    require_pyplot()
    if quick:
        epochs = min(epochs, 4)
    mc_samples = 10 if quick else MC_SAMPLES
    finder_steps = 30 if quick else 100
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)

    data = load_splits(seed)
    print(
        f"keras_dnntools demo: digits, {len(data['x_train'])} train / "
        f"{len(data['x_test'])} test images, {epochs} epochs, seed {seed}"
    )
    finder = find_rate(data, seed, finder_steps)
    max_rate = float(np.clip(finder.suggestion * 10.0, 1e-3, 1.0))
    print(
        f"  suggested rate {finder.suggestion:.3g}: 1cycle peaks at {max_rate:.3g}"
        " (10x the steepest-descent point, as fastai advises)"
    )
    baseline, _ = train_baseline(data, epochs, seed)
    single, mc_row, prediction, _ = train_recipe(
        data, epochs, seed, max_rate, mc_samples
    )
    transfer_rows = transfer_experiment(data, epochs, seed)
    rows = [baseline, single, mc_row, *transfer_rows]

    steps_per_epoch = int(np.ceil(len(data["x_train"]) / 32))
    paths = write_plots(
        folder, finder, max_rate, epochs * steps_per_epoch, prediction, data["y_test"]
    )
    table = format_table(rows)
    print()
    print(table)
    print()
    print("(transfer rows: odd-vs-even accuracy from 40 labelled images)")
    for name, path in paths.items():
        print(f"  {name:<12} {path}")
    (folder / "results.md").write_text(table + "\n")
    (folder / "results.json").write_text(
        json.dumps([row.__dict__ for row in rows], indent=2) + "\n"
    )
    return rows
