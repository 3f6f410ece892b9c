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
from keras_dnntools._validation import check_int, invalid_type, invalid_value


def _axes(ax: Any) -> Any:
    plt = require_pyplot()
    if ax is None:
        _, ax = plt.subplots()
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
    total_steps = check_int("total_steps", total_steps, low=1)
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
    probs = np.asarray(y_prob, dtype="float64")
    if probs.ndim != 2:
        raise invalid_value(
            "y_prob", "a 2-D array of class probabilities (n, classes)", probs.shape
        )
    labels = np.asarray(y_true)
    if labels.ndim == 2:
        labels = labels.argmax(axis=-1)
    labels = labels.reshape(-1)
    if labels.shape[0] != probs.shape[0]:
        raise invalid_value(
            "y_true",
            f"as many labels as rows of y_prob ({probs.shape[0]})",
            labels.shape[0],
        )
    return labels, probs


def reliability_bins(y_true: Any, y_prob: Any, n_bins: int = 15) -> dict:
    """Per-bin confidence, accuracy and count (equal-width confidence bins).

    Bin ``b`` holds predictions with confidence in ``(b / n_bins, (b+1) / n_bins]``
    (confidence 0 falls in the first bin), the binning used by
    `kdt.metrics.expected_calibration_error`.
    """
    n_bins = check_int("n_bins", n_bins, low=1)
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
    if measure not in choices:
        raise invalid_value("measure", f"one of {choices}", measure)
    bins = check_int("bins", bins, low=1)
    values = np.asarray(getattr(prediction, measure), dtype="float64")
    if measure == "std":
        values = values.reshape(values.shape[0], -1).mean(axis=-1)
    ax = _axes(ax)
    if y_true is None:
        ax.hist(values, bins=bins, color="tab:blue")
    else:
        labels = np.asarray(y_true)
        if labels.ndim == 2:
            labels = labels.argmax(axis=-1)
        correct = np.asarray(prediction.predicted_class) == labels.reshape(-1)
        edges = np.histogram_bin_edges(values, bins=bins)
        ax.hist(values[correct], bins=edges, alpha=0.6, label="correct")
        ax.hist(values[~correct], bins=edges, alpha=0.6, label="wrong")
        ax.legend()
    ax.set_xlabel(measure.replace("_", " ") + " (nats)" if measure != "std" else "std")
    ax.set_ylabel("instances")
    ax.set_title(f"MC dropout: {measure.replace('_', ' ')} per instance")
    return ax
