"""Plot helpers: schedule curves, reliability diagrams, uncertainty histograms.

matplotlib is optional (``pip install 'keras-dnntools[examples]'``); it is
imported only when a plot is drawn, and a missing install raises an
``ImportError`` that names the extra to install.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_dnntools._optional import require_pyplot
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_choice,
    check_int,
    check_sequence,
    element_of_type,
    invalid_type,
    invalid_value,
)
from keras_dnntools.metrics.calibration import (
    MAX_BINS,
    check_labels,
    check_probabilities,
)

#: The longest schedule `plot_schedule` evaluates (one float64 per step).
MAX_PLOTTED_STEPS = 10**7


def _axes(ax: Any) -> Any:
    plt = require_pyplot()
    if ax is None:
        _, ax = plt.subplots()
        return ax
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise invalid_type("ax", "None or a matplotlib Axes", ax)
    return ax


def _evaluate(schedule: Any, steps: np.ndarray) -> np.ndarray:
    if not callable(schedule):
        raise invalid_type(
            "schedule", "a LearningRateSchedule or a callable of the step", schedule
        )

    def one(step: int) -> float:
        return float(np.asarray(schedule(int(step))))

    # Keras schedules are elementwise in the step: one call on all the steps
    # (a step at a time costs seconds for a long schedule). Kept only when it
    # agrees with step-by-step calls at a few steps, else step by step.
    if _is_keras_schedule(schedule) and len(steps) > 8:
        try:
            values = np.asarray(_to_numpy(schedule(steps)), dtype="float64")
        except Exception:  # any failure: evaluate step by step
            values = None
        if values is not None and values.shape == steps.shape:
            probes = np.unique(np.linspace(0, len(steps) - 1, 5).astype(int))
            expected = [one(steps[i]) for i in probes]
            if np.allclose(values[probes], expected, rtol=1e-5, atol=0.0):
                return values
    return np.asarray([one(step) for step in steps], dtype="float64")


def _is_keras_schedule(schedule: Any) -> bool:
    import keras

    return isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)


def _to_numpy(value: Any) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(value)


@public("plotting")
def plot_schedule(
    schedule: Any,
    total_steps: int | None = None,
    *,
    momentum: Any = None,
    ax: Any = None,
) -> Any:
    """Plots a learning-rate schedule (and optionally its momentum) over steps.

    Args:
        schedule: a `keras.optimizers.schedules.LearningRateSchedule` (or any
            callable of the step returning a number).
        total_steps: number of steps to draw. Defaults to the schedule's own
            `total_steps` when it has one (1cycle), else required.
        momentum: optional companion schedule (e.g. `kdt.schedules.OneCycleMomentum`)
            drawn on a second y axis.
        ax: a matplotlib `Axes` to draw on; a new figure is made when `None`.

    Returns:
        The matplotlib `Axes` holding the learning-rate curve.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if `total_steps` is missing or not positive.
        TypeError: if `schedule` or `momentum` is not callable.

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> schedule = kdt.schedules.OneCycleSchedule(0.1, total_steps=100)
    >>> ax = kdt.plotting.plot_schedule(schedule)
    >>> ax.get_ylabel()
    'learning rate'
    """
    if total_steps is None:
        total_steps = getattr(schedule, "total_steps", None)
        if total_steps is None:
            raise invalid_value(
                "total_steps",
                "a positive integer (this schedule has no total_steps of its own)",
                total_steps,
            )
    total_steps = check_int("total_steps", total_steps, low=1, high=MAX_PLOTTED_STEPS)
    steps = np.arange(total_steps)
    rates = _evaluate(schedule, steps)
    ax = _axes(ax)
    ax.plot(steps, rates, color="tab:blue", label="learning rate")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    if momentum is not None:
        if not callable(momentum):
            raise invalid_type("momentum", "a schedule or a callable", momentum)
        other = ax.twinx()
        other.plot(steps, _evaluate(momentum, steps), color="tab:orange")
        other.set_ylabel("momentum", color="tab:orange")
    ax.set_title(type(schedule).__name__)
    return ax


def _as_probabilities(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    # The rules of `kdt.metrics.expected_calibration_error`, which it draws.
    probs, columns = check_probabilities(y_prob)
    labels = check_labels(y_true, probs.shape[0], columns)
    return labels, probs


def reliability_bins(y_true: Any, y_prob: Any, n_bins: int = 15) -> dict:
    """Per-bin confidence, accuracy and count (equal-width confidence bins).

    Bin ``b`` holds predictions with confidence in ``(b / n_bins, (b+1) / n_bins]``
    (confidence 0 falls in the first bin), the binning used by
    `kdt.metrics.expected_calibration_error`.
    """
    n_bins = check_int("n_bins", n_bins, low=1, high=MAX_BINS)
    labels, probs = _as_probabilities(y_true, y_prob)
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype("float64")
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype("float64")
    safe = np.maximum(counts, 1.0)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "confidence": np.bincount(index, confidence, n_bins) / safe,
        "accuracy": np.bincount(index, correct, n_bins) / safe,
        "count": counts,
    }


@public("plotting")
def plot_reliability_diagram(
    y_true: Any, y_prob: Any, n_bins: int = 15, *, ax: Any = None
) -> Any:
    """Draws a reliability diagram: accuracy against confidence per bin.

    A perfectly calibrated classifier lies on the diagonal; bars below it are
    over-confident. Each bar is labelled with the number of predictions in its
    bin (a bin of 3 predictions says far less than one of 300), the title
    carries the expected calibration error, and the legend sits below the
    axes, where it hides no bar.

    Args:
        y_true: integer labels `(n,)` or one-hot `(n, classes)`.
        y_prob: class probabilities `(n, classes)`.
        n_bins: number of equal-width confidence bins.
        ax: a matplotlib `Axes`; a new figure is made when `None`.

    Returns:
        The matplotlib `Axes`.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if the shapes do not match or `n_bins < 1`.

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> ax = kdt.plotting.plot_reliability_diagram([0, 1, 1], probs, n_bins=5)
    >>> ax.get_xlabel()
    'confidence (largest predicted probability)'
    >>> [text.get_text() for text in ax.texts]  # predictions per bin
    ['1', '1', '1']
    """
    bins = reliability_bins(y_true, y_prob, n_bins)
    total = max(bins["count"].sum(), 1.0)
    ece = float(
        np.sum(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"])) / total
    )
    ax = _axes(ax)
    edges = bins["edges"]
    width = edges[1] - edges[0]
    filled = bins["count"] > 0
    ax.bar(
        edges[:-1][filled],
        bins["accuracy"][filled],
        width=width,
        align="edge",
        edgecolor="black",
        label="accuracy per bin (label: predictions in the bin)",
    )
    for left, height, count in zip(
        edges[:-1][filled],
        bins["accuracy"][filled],
        bins["count"][filled],
        strict=True,
    ):
        ax.text(
            left + width / 2,
            height + 0.01,
            f"{int(count)}",
            ha="center",
            va="bottom",
            fontsize=7 if n_bins <= 20 else 5,
            rotation=0 if n_bins <= 20 else 90,
        )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1)  # room for the counts above bars of height 1
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("confidence (largest predicted probability)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"Reliability diagram (ECE = {ece:.3f}, n = {int(total)})")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=1,
        frameon=False,
        fontsize="small",
    )
    return ax


@public("plotting")
def plot_uncertainty_histogram(
    prediction: Any,
    y_true: Any = None,
    *,
    measure: str = "predictive_entropy",
    bins: int = 30,
    ax: Any = None,
) -> Any:
    """Histogram of an MC-dropout uncertainty measure, split by correctness.

    Args:
        prediction: a `kdt.uncertainty.MCPrediction`.
        y_true: optional integer or one-hot labels; when given, correct and wrong
            predictions are drawn as two histograms (wrong ones should sit to the
            right: more uncertain).
        measure: `"predictive_entropy"`, `"mutual_information"`,
            `"expected_entropy"` or `"std"` (mean std over outputs).
        bins: number of histogram bins.
        ax: a matplotlib `Axes`; a new figure is made when `None`.

    Returns:
        The matplotlib `Axes`.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if `measure` is unknown.

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5),
    ...                           keras.layers.Dense(3, activation="softmax")])
    >>> prediction = kdt.uncertainty.mc_predict(
    ...     model, np.ones((8, 4)), n_samples=5, seed=0)
    >>> ax = kdt.plotting.plot_uncertainty_histogram(prediction, [0] * 8)
    >>> ax.get_xlabel()
    'predictive entropy (nats)'
    """
    choices = ("predictive_entropy", "mutual_information", "expected_entropy", "std")
    check_choice("measure", measure, choices)
    if not hasattr(prediction, measure) or not hasattr(prediction, "predicted_class"):
        raise invalid_type(
            "prediction", "a kdt.uncertainty.MCPrediction (from mc_predict)", prediction
        )
    bins = check_int("bins", bins, low=1, high=MAX_BINS)
    if y_true is not None:
        shape = np.shape(getattr(prediction, "mean", prediction.predicted_class))
        n_classes = int(shape[-1]) if len(shape) > 1 else 1
        y_true = check_labels(y_true, int(shape[0]), n_classes)
    values = np.asarray(getattr(prediction, measure), dtype="float64")
    if measure == "std":
        values = values.reshape(values.shape[0], -1).mean(axis=-1)
    ax = _axes(ax)
    if y_true is None:
        ax.hist(values, bins=bins, color="tab:blue")
    else:
        correct = np.asarray(prediction.predicted_class) == y_true
        edges = np.histogram_bin_edges(values, bins=bins)
        ax.hist(values[correct], bins=edges, alpha=0.6, label="correct")
        ax.hist(values[~correct], bins=edges, alpha=0.6, label="wrong")
        ax.legend()
    ax.set_xlabel(measure.replace("_", " ") + " (nats)" if measure != "std" else "std")
    ax.set_ylabel("instances")
    ax.set_title(f"MC dropout: {measure.replace('_', ' ')} per instance")
    return ax


# ---------------------------------------------------------------------------
# Unstable gradients: TrainingMonitor and diagnostics.check (issue 12)
# ---------------------------------------------------------------------------


def _recorded(monitor: Any) -> Any:
    if not hasattr(monitor, "layer_stats") or not hasattr(monitor, "steps"):
        raise invalid_type("monitor", "a kdt.callbacks.TrainingMonitor", monitor)
    if len(monitor.steps) == 0:
        raise invalid_value(
            "monitor",
            "a TrainingMonitor that has recorded a fit (pass it to model.fit first)",
            monitor,
        )
    return monitor


def _chosen_layers(monitor: Any, layers: Any) -> list[str]:
    names = list(monitor.layer_stats)
    if layers is None:
        return names
    if isinstance(layers, str):
        chosen = [layers]
    else:
        chosen = list(
            check_sequence(
                "layers",
                layers,
                element_of_type(str, "a layer name (a string)"),
                min_length=1,
                expected="None, a layer name or a list of layer names",
            )
        )
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise invalid_value("layers", f"names among {names}", layers)
    return chosen


@public("plotting")
def plot_activation_histograms(
    monitor: Any, *, layers: Any = None, max_columns: int = 4
) -> Any:
    """Per-layer activation histograms over the steps ("colorful dimension").

    One panel per layer: the x axis is the optimizer step, the y axis the
    activation value (the monitor's fixed bins), and the colour the log of the
    number of activations in that bin at that step. A healthy layer shows a
    wide band; a vanishing one collapses onto one line; saturated sigmoid
    units pile up at 0 and 1 and dead ReLU units at 0.

    Args:
        monitor: a `kdt.callbacks.TrainingMonitor` after `fit`.
        layers: names of the layers to draw; None for all.
        max_columns: panels per row.

    Returns:
        A NumPy array of matplotlib `Axes`, one per layer.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if the monitor recorded nothing or ``layers`` names a
            layer it did not watch.

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="sigmoid"), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> monitor = kdt.callbacks.TrainingMonitor()
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4,
    ...               callbacks=[monitor], verbose=0)
    >>> axes = kdt.plotting.plot_activation_histograms(monitor)
    >>> axes[0].get_ylabel()
    'activation'
    """
    monitor = _recorded(monitor)
    names = _chosen_layers(monitor, layers)
    max_columns = check_int("max_columns", max_columns, low=1, high=10_000)
    plt = require_pyplot()
    columns = min(max_columns, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.2 * columns, 2.6 * rows),
        squeeze=False,
        constrained_layout=True,
    )
    steps = np.asarray(monitor.steps)
    step_edges = np.append(steps, steps[-1] + max(1, steps[-1] - steps[-2]))
    if len(steps) == 1:
        step_edges = np.array([steps[0], steps[0] + 1])
    for ax, name in zip(axes.flat, names, strict=False):
        edges, counts = monitor.activation_histograms[name]
        image = ax.pcolormesh(
            step_edges, edges, np.log1p(counts.T), cmap="viridis", shading="flat"
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("activation")
        figure.colorbar(image, ax=ax, label="log(1 + count)")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    figure.suptitle("Activation histograms over training")
    return axes.flat[: len(names)]


@public("plotting")
def plot_gradient_norms(
    monitor: Any, *, layers: Any = None, stat: str = "gradient_norm", ax: Any = None
) -> Any:
    """Per-layer gradient norms (or another statistic) over the steps.

    Lines run from the bottom layer (dark) to the top one (light), on a log
    scale: vanishing gradients show as a fan with the bottom layers far below
    the top ones, exploding ones as lines shooting up.

    Args:
        monitor: a `kdt.callbacks.TrainingMonitor` after `fit`.
        layers: names of the layers to draw; None for all.
        stat: which statistic to draw (``"gradient_norm"``,
            ``"update_ratio"``, ``"activation_std"``, ...).
        ax: a matplotlib `Axes`; a new figure is made when None.

    Returns:
        The matplotlib `Axes`.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if the monitor recorded nothing, or ``layers``/``stat`` is
            unknown.

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> monitor = kdt.callbacks.TrainingMonitor()
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4,
    ...               callbacks=[monitor], verbose=0)
    >>> kdt.plotting.plot_gradient_norms(monitor).get_ylabel()
    'gradient norm'
    """
    monitor = _recorded(monitor)
    names = _chosen_layers(monitor, layers)
    known = tuple(next(iter(monitor.layer_stats.values())))
    if stat not in known:
        raise invalid_value("stat", f"one of {known}", stat)
    plt = require_pyplot()
    ax = _axes(ax)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(names)))
    for colour, name in zip(colours, names, strict=True):
        values = np.asarray(monitor.layer_stats[name][stat], "float64")
        ax.plot(monitor.steps, values, color=colour, label=name)
    if stat in ("gradient_norm", "update_ratio", "activation_std"):
        ax.set_yscale("symlog", linthresh=1e-8)
    ax.set_xlabel("step")
    ax.set_ylabel(stat.replace("_", " "))
    ax.set_title(f"{stat.replace('_', ' ')} per layer (bottom: dark, top: light)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.figure.tight_layout()
    return ax


@public("plotting")
def plot_diagnostic_report(report: Any, *, ax: Any = None) -> Any:
    """A `kdt.diagnostics.check` report as a chart.

    Bars: each layer's gradient rms per weight (log scale, bottom layer on
    the left); markers on the right axis: the dead and saturated fractions
    and the activation std. The title lists the findings.

    Args:
        report: a `kdt.diagnostics.DiagnosticReport`.
        ax: a matplotlib `Axes`; a new figure is made when None.

    Returns:
        The matplotlib `Axes` of the bars.

    Raises:
        ImportError: if matplotlib is not installed.
        TypeError: if ``report`` is not a report.

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> ax = kdt.diagnostics.check(model, np.ones((8, 4))).plot()
    >>> ax.get_ylabel()
    'gradient rms per weight'
    """
    if not hasattr(report, "layers") or not hasattr(report, "findings"):
        raise invalid_type("report", "a kdt.diagnostics.DiagnosticReport", report)
    ax = _axes(ax)
    rows = report.layers
    positions = np.arange(len(rows))
    rms = np.array([row.gradient_rms for row in rows], "float64")
    ax.bar(positions, np.where(rms > 0, rms, np.nan), color="tab:blue", alpha=0.7)
    ax.set_yscale("log")
    ax.set_ylabel("gradient rms per weight")
    ax.set_xticks(positions)
    ax.set_xticklabels([row.name for row in rows], rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("layer (bottom to top)")
    other = ax.twinx()
    for attribute, marker, colour in (
        ("dead_fraction", "v", "tab:red"),
        ("saturated_fraction", "^", "tab:orange"),
        ("activation_std", "o", "tab:green"),
    ):
        values = [getattr(row, attribute) for row in rows]
        other.plot(
            positions,
            values,
            marker=marker,
            linestyle="none",
            color=colour,
            label=attribute.replace("_", " "),
        )
    other.set_ylabel("fraction / activation std")
    other.set_ylim(bottom=0)
    other.legend(fontsize=7, loc="upper left", framealpha=0.8)
    kinds = list(dict.fromkeys(finding.kind for finding in report.findings))
    ax.set_title("findings: " + (", ".join(kinds) if kinds else "none"), fontsize=9)
    return ax
