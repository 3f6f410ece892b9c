"""The offline demo behind ``python -m keras_dnntools demo``.

It runs on scikit-learn's bundled digits data (8x8 images, 10 classes), so it
needs no download: a plain Keras baseline against the chapter's recipe (He
initialization, RReLU, max-norm, 1cycle with momentum, MC dropout), the
learning-rate finder, the "B on A" transfer experiment, and the chapter's
vanishing-gradient experiment (a deep sigmoid MLP with a naive init, then He +
ReLU, LeCun + SELU, BatchNorm and tanh + LSUV, each checked and monitored). It prints a
results table and writes plots to the output folder.
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
DEPTH = 8  # the chapter is about *deep* nets: 8 hidden layers of 100 units
HIDDEN_UNITS = 100
MC_SAMPLES = 50
# 1cycle peaks above the finder's valley: its warm-up and annealing tolerate it.
PEAK_OVER_VALLEY = 4.0
HELD_OUT_DIGITS = (4, 9)  # model A never sees them
LABELLED_PER_DIGIT = 4  # task B: 40 labelled images


# --quick trains too little for its numbers to rank anything (at 4 epochs "B on A"
# can trail "B from scratch"): its table says so instead of making claims.
SMOKE_RUN_NOTE = (
    "SMOKE RUN (--quick, {epochs} epochs): these numbers only show that every step\n"
    "runs; they do not compare the models. Run without --quick for the comparison."
)


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
    """What a Keras user writes first: deep ReLU, Glorot init, no regularization."""
    return keras.Sequential(
        [keras.Input((num_inputs,))]
        + [keras.layers.Dense(HIDDEN_UNITS, activation="relu") for _ in range(DEPTH)]
        + [keras.layers.Dense(NUM_CLASSES, activation="softmax")]
    )


def build_recipe(num_inputs: int, seed: int):
    """The chapter's recipe on the same deep net: He init, RReLU, MC dropout on the
    top two hidden layers (max-norm is added after compiling)."""
    layers = [keras.Input((num_inputs,))]
    for index in range(DEPTH):
        layers += [
            keras.layers.Dense(HIDDEN_UNITS, kernel_initializer="he_normal"),
            kdt.layers.RReLU(seed=seed + index),
        ]
        if index >= DEPTH - 2:
            layers.append(kdt.layers.MCDropout(0.2, seed=seed + DEPTH + index))
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
        self.bar = keras.utils.Progbar(
            self.epochs, unit_name="epoch", stateful_metrics=["loss"]
        )

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(epoch + 1, values=[("loss", (logs or {}).get("loss", 0.0))])


def _fit(model, x, y, *, epochs: int, batch_size: int, label: str, callbacks=()):
    """A quiet `fit` with one progress bar over its epochs."""
    return model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[*callbacks, _EpochProgress(epochs, label)],
    )


def train_baseline(data, epochs: int, seed: int) -> tuple[Row, object]:
    keras.utils.set_random_seed(seed)
    model = build_baseline(data["x_train"].shape[1])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    _fit(
        model,
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=32,
        label="baseline (ReLU, Glorot, Adam, constant rate)",
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
    history = _fit(
        model,
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=32,
        label=f"recipe (He, RReLU, max-norm 3, MC dropout, 1cycle to {max_rate:.3g})",
        callbacks=[scheduler],
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


def _transfer_network(num_inputs: int, head):
    return keras.Sequential(
        [
            keras.Input((num_inputs,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            head,
        ]
    )


def transfer_experiment(data, epochs: int, seed: int) -> list[Row]:
    """Model A on 8 digits (never 4 or 9); task B: odd vs even from 40 images."""
    x_all = np.concatenate([data["x_train"], data["x_valid"]])
    y_all = np.concatenate([data["y_train"], data["y_valid"]])
    classes = np.array([d for d in range(NUM_CLASSES) if d not in HELD_OUT_DIGITS])
    seen = np.isin(y_all, classes)
    keras.utils.set_random_seed(seed)
    model_a = _transfer_network(
        x_all.shape[1], keras.layers.Dense(len(classes), activation="softmax")
    )
    model_a.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    _fit(
        model_a,
        x_all[seen],
        np.searchsorted(classes, y_all[seen]),
        epochs=max(epochs // 4, 1),
        batch_size=64,
        label="transfer: model A on 8 digits",
    )
    rng = np.random.default_rng(seed)
    labelled = np.concatenate(
        [
            rng.choice(np.flatnonzero(y_all == digit), LABELLED_PER_DIGIT, False)
            for digit in range(NUM_CLASSES)
        ]
    )
    x_b, y_b = x_all[labelled], (y_all[labelled] % 2).astype("float32")
    x_test, y_test = data["x_test"], data["y_test"] % 2
    freeze_epochs, tune_epochs = max(epochs // 4, 1), max(epochs // 2, 1)

    rows = []
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model_b = kdt.transfer.reuse_layers(
        model_a, drop_top=1, head=keras.layers.Dense(1, activation="sigmoid")
    )
    model_b.compile(keras.optimizers.Adam(), "binary_crossentropy")
    print("  transfer: model B on A (kdt.transfer.fine_tune)")
    kdt.transfer.fine_tune(
        model_b,
        x_b,
        y_b,
        epochs=tune_epochs,
        freeze_epochs=freeze_epochs,
        # 40 images are 5 batches an epoch: a higher rate than fastai's default.
        base_learning_rate=1e-2,
        batch_size=8,
        verbose=0,
    )
    rows.append(_binary_row("B on A (fine_tune)", model_b, x_test, y_test, start))

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    scratch = _transfer_network(
        x_all.shape[1], keras.layers.Dense(1, activation="sigmoid")
    )
    scratch.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    _fit(
        scratch,
        x_b,
        y_b,
        epochs=freeze_epochs + tune_epochs,
        batch_size=8,
        label="transfer: same network from scratch",
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
    ax.set_yscale("log")  # most predictions are confident: show the tail
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


# ---------------------------------------------------------------------------
# The chapter's first problem: unstable gradients (issue 12)
# ---------------------------------------------------------------------------
GRADIENT_DEPTH = 12  # hidden layers of the vanishing-gradient experiment
GRADIENT_UNITS = 50
LOG_EVERY = 10  # TrainingMonitor frequency in the demo


def gradient_model(name: str, num_inputs: int, seed: int):
    """One deep MLP of the vanishing-gradient experiment, compiled.

    ``name`` is one of ``"sigmoid, N(0, 1)"`` (the naive start), ``"He + ReLU"``,
    ``"LeCun + SELU"`` (on standardized inputs), ``"sigmoid + BatchNorm"`` and
    ``"tanh + LSUV"`` (naive init; call `kdt.initializers.lsuv` on it before
    training).
    """
    keras.utils.set_random_seed(seed)
    naive = keras.initializers.RandomNormal(stddev=1.0)
    activation, initializer = {
        "sigmoid, N(0, 1)": ("sigmoid", naive),
        "He + ReLU": ("relu", "he_normal"),
        "LeCun + SELU": ("selu", "lecun_normal"),
        "sigmoid + BatchNorm": ("sigmoid", naive),
        "tanh + LSUV": ("tanh", naive),
    }[name]
    layers = [keras.Input((num_inputs,))]
    for _ in range(GRADIENT_DEPTH):
        if name == "sigmoid + BatchNorm":
            layers.append(
                keras.layers.Dense(
                    GRADIENT_UNITS, kernel_initializer=initializer, use_bias=False
                )
            )
            layers.append(keras.layers.BatchNormalization())
            layers.append(keras.layers.Activation(activation))
        else:
            layers.append(
                keras.layers.Dense(
                    GRADIENT_UNITS,
                    activation=activation,
                    kernel_initializer=initializer,
                )
            )
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


GRADIENT_MODELS = (
    "sigmoid, N(0, 1)",
    "He + ReLU",
    "LeCun + SELU",
    "sigmoid + BatchNorm",
    "tanh + LSUV",
)


def gradient_experiment(
    data, epochs: int, seed: int, output: Path, max_rows: int | None = None
):
    """Trains the five nets with a `TrainingMonitor`, checks each first.

    ``max_rows`` limits the training rows (the quick demo).

    Returns:
        ``(rows, paths, findings)``: the results rows, the plots written, and
        ``{model name: [finding kinds]}`` of `kdt.diagnostics.check` at init.
    """
    import matplotlib

    matplotlib.use("Agg")
    plt = require_pyplot()
    mean = data["x_train"].mean(axis=0)
    std = data["x_train"].std(axis=0) + 1e-6
    rows, paths, findings = [], {}, {}
    print("  Unstable gradients: a deep MLP, five ways")
    for index, name in enumerate(GRADIENT_MODELS):
        start = time.perf_counter()
        scale = name == "LeCun + SELU"
        x_train = (data["x_train"] - mean) / std if scale else data["x_train"]
        x_train, y_train = x_train[:max_rows], data["y_train"][:max_rows]
        x_test = (data["x_test"] - mean) / std if scale else data["x_test"]
        model = gradient_model(name, x_train.shape[1], seed)
        if name == "tanh + LSUV":
            kdt.initializers.lsuv(model, x_train[:512])
        report = kdt.diagnostics.check(model, x_train, y_train)
        findings[name] = report.kinds()
        print(f"    {name}: check() finds {report.kinds() or 'nothing'}")
        monitor = kdt.callbacks.TrainingMonitor(frequency=LOG_EVERY)
        _fit(
            model,
            x_train,
            y_train,
            epochs=epochs,
            batch_size=32,
            label=name,
            callbacks=[monitor],
        )
        probs = model.predict(x_test, verbose=0)
        rows.append(_score(name, data["y_test"], probs, time.perf_counter() - start))
        key = f"gradients_{index}"
        figure, ax = plt.subplots(figsize=(7, 4))
        kdt.plotting.plot_gradient_norms(monitor, ax=ax)
        ax.set_title(f"{name}: gradient norm per layer")
        paths[key] = output / f"{key}.png"
        figure.savefig(paths[key], dpi=100, bbox_inches="tight")
        plt.close(figure)
        if index < 2:
            axes = kdt.plotting.plot_activation_histograms(monitor)
            figure = axes[0].figure
            figure.suptitle(f"{name}: activation histograms over training")
            paths[f"activations_{index}"] = output / f"activations_{index}.png"
            figure.savefig(paths[f"activations_{index}"], dpi=80)
            plt.close(figure)
    return rows, paths, findings


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
    max_rate = PEAK_OVER_VALLEY * finder.suggestion
    print(
        f"  suggested rate (valley) {finder.suggestion:.3g}: 1cycle peaks at "
        f"{PEAK_OVER_VALLEY:g} x the valley = {max_rate:.3g}"
    )
    baseline, _ = train_baseline(data, epochs, seed)
    single, mc_row, prediction, _ = train_recipe(
        data, epochs, seed, max_rate, mc_samples
    )
    transfer_rows = transfer_experiment(data, epochs, seed)
    gradient_rows, gradient_paths, _ = gradient_experiment(
        data, epochs, seed, folder, max_rows=320 if quick else None
    )
    rows = [baseline, single, mc_row, *transfer_rows, *gradient_rows]

    steps_per_epoch = int(np.ceil(len(data["x_train"]) / 32))
    paths = write_plots(
        folder, finder, max_rate, epochs * steps_per_epoch, prediction, data["y_test"]
    )
    paths.update(gradient_paths)
    table = format_table(rows)
    if quick:
        table = f"{SMOKE_RUN_NOTE.format(epochs=epochs)}\n\n{table}"
    print()
    print(table)
    print()
    if not quick:
        print(
            f"(first rows: {DEPTH} hidden layers, digits 0-9; transfer rows: odd vs "
            f"even from {LABELLED_PER_DIGIT * NUM_CLASSES} labelled images)"
        )
    for name, path in paths.items():
        print(f"  {name:<12} {path}")
    (folder / "results.md").write_text(table + "\n")
    (folder / "results.json").write_text(
        json.dumps([row.__dict__ for row in rows], indent=2) + "\n"
    )
    return rows
