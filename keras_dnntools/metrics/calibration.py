"""Expected calibration error: a function and a streaming Keras metric.

Both bin the predictions by confidence (the largest class probability) into
`n_bins` equal-width bins, bin ``b`` holding confidences in
``(b / n_bins, (b + 1) / n_bins]`` (a confidence of 0 falls in the first bin),
and return

    ECE = sum over bins of (count_b / n) * |accuracy_b - confidence_b|

(Naeini et al., 2015; Guo et al., 2017, "On Calibration of Modern Neural
Networks"). This is the binning of `kdt.plotting.plot_reliability_diagram`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_dtype,
    check_int,
    check_name,
    check_tensor_input,
    invalid_value,
    invalid_values,
)

# Probabilities computed in float32 may overshoot [0, 1] by rounding.
_PROBABILITY_TOLERANCE = 1e-6
# Softmax rows sum to 1 within rounding: a few ulps per class, which for
# bfloat16 outputs (8-bit significand) reaches ~0.005.
_ROW_SUM_TOLERANCE = 1e-2
#: The most bins accepted (each bin is a few float64 accumulators).
MAX_BINS = 10**6


def check_probabilities(y_prob: Any) -> tuple[np.ndarray, int]:
    """Returns (probabilities with >= 2 columns, the number of columns given)."""
    try:
        probs = np.asarray(y_prob, dtype="float64")
    except (TypeError, ValueError) as error:
        raise invalid_value(
            "y_prob", "an array of class probabilities", type(y_prob).__name__
        ) from error
    if probs.ndim == 1:
        probs = probs[:, None]
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise invalid_value(
            "y_prob",
            "class probabilities of shape (n, classes) with n >= 1, or (n,) "
            "probabilities of class 1",
            f"an array of shape {probs.shape}",
        )
    if not np.all(np.isfinite(probs)):
        raise invalid_value("y_prob", "finite probabilities", "NaN or inf values")
    low, high = float(probs.min()), float(probs.max())
    if low < -_PROBABILITY_TOLERANCE or high > 1 + _PROBABILITY_TOLERANCE:
        raise invalid_value(
            "y_prob",
            "probabilities within [0, 1] (apply a softmax or sigmoid to logits)",
            f"values from {low} to {high}",
        )
    columns = probs.shape[1]
    if columns > 1:
        worst = float(np.max(np.abs(probs.sum(axis=1) - 1.0)))
        if worst > _ROW_SUM_TOLERANCE:
            raise invalid_value(
                "y_prob",
                "class probabilities whose rows sum to 1 (apply a softmax to logits)",
                f"rows summing to 1 +- {worst:.3g}",
            )
    probs = np.clip(probs, 0.0, 1.0)
    if columns == 1:  # P(class 1) of a binary classifier.
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    return probs, columns


def check_labels(y_true: Any, n_instances: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.ndim == 2 and labels.shape[1] == n_classes and n_classes > 1:
        if labels.shape[0] != n_instances:
            raise invalid_values(
                ("y_true", "y_prob"),
                "one label per row of y_prob",
                y_true=f"{labels.shape[0]} one-hot rows",
                y_prob=f"{n_instances} rows",
            )
        return labels.argmax(axis=1)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise invalid_value(
            "y_true",
            f"integer labels of shape (n,) or one-hot labels of shape (n, {n_classes})",
            f"an array of shape {labels.shape}",
        )
    if labels.shape[0] != n_instances:
        raise invalid_values(
            ("y_true", "y_prob"),
            "one label per row of y_prob",
            y_true=f"{labels.shape[0]} labels",
            y_prob=f"{n_instances} rows",
        )
    if labels.dtype == np.bool_:
        labels = labels.astype("int64")
    if not np.issubdtype(labels.dtype, np.number) or np.issubdtype(
        labels.dtype, np.complexfloating
    ):
        raise invalid_value("y_true", "integer class labels", labels.dtype)
    if np.any(labels != np.round(labels)):
        raise invalid_value("y_true", "integer class labels", "non-integer values")
    classes = max(n_classes, 2)
    if labels.min() < 0 or labels.max() >= classes:
        raise invalid_value(
            "y_true",
            f"labels in [0, {classes - 1}] (one column of y_prob per class)",
            f"labels from {labels.min()} to {labels.max()}",
        )
    return labels.astype("int64")


@public("metrics")
def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 15) -> float:
    """Expected calibration error of predicted class probabilities.

    The predictions are binned by confidence (their largest probability) into
    `n_bins` equal-width bins, ``(b / n_bins, (b + 1) / n_bins]``; the ECE is
    the mean over instances of ``|accuracy - confidence|`` of their bin:
    ``sum_b (count_b / n) |accuracy_b - confidence_b|`` (Guo et al., 2017, "On
    Calibration of Modern Neural Networks"). 0 is perfect calibration.

    Args:
        y_true: integer class labels, shape ``(n,)`` (or ``(n, 1)``), or
            one-hot labels of shape ``(n, classes)``.
        y_prob: class probabilities, shape ``(n, classes)``; ``(n,)`` or
            ``(n, 1)`` is read as P(class 1) of a binary classifier.
        n_bins: number of equal-width confidence bins (>= 1).

    Returns:
        The ECE, a float in [0, 1].

    Raises:
        ValueError: if `n_bins < 1`, the shapes do not match, the labels are
            not integers in range, or `y_prob` is not within [0, 1] or its
            rows do not sum to 1 (within 0.01, the rounding of bfloat16
            softmax outputs): logits, not probabilities.
        TypeError: if `n_bins` is not an integer.

    Example:

    >>> probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.55, 0.45]])
    >>> labels = np.array([0, 1, 1, 0])
    >>> round(kdt.metrics.expected_calibration_error(labels, probs, n_bins=5), 4)
    0.4
    """
    n_bins = check_int("n_bins", n_bins, low=1, high=MAX_BINS)
    probs, columns = check_probabilities(y_prob)
    labels = check_labels(y_true, probs.shape[0], columns)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype("float64")
    bins = np.clip(np.ceil(confidence * n_bins).astype("int64") - 1, 0, n_bins - 1)
    gap = np.bincount(bins, correct - confidence, minlength=n_bins)
    return float(np.sum(np.abs(gap)) / probs.shape[0])


def _concrete(value: Any) -> np.ndarray | None:
    """`value` as NumPy when it holds values (eager), None inside a trace."""
    if isinstance(value, np.ndarray):
        return value
    if not keras.ops.is_tensor(value):
        return np.asarray(value)
    try:
        return keras.ops.convert_to_numpy(value)
    except Exception:  # a traced tensor (tf.function, jax.jit): no values yet
        return None


class _CompensatedSum:
    """A float32 vector sum with Neumaier's compensation (two variables).

    The running total carries no accumulated rounding error: ``total + carry``
    is the exact sum of the added float32 batch sums to about 2**-48 relative,
    whatever the number of batches (a plain float32 count stops growing at
    2**24).
    """

    def __init__(self, metric: keras.metrics.Metric, size: int, name: str) -> None:
        self.total = metric.add_variable(
            shape=(size,), initializer="zeros", dtype="float32", name=name
        )
        self.carry = metric.add_variable(
            shape=(size,), initializer="zeros", dtype="float32", name=f"{name}_carry"
        )

    def add(self, value: Any) -> None:
        total = self.total.value
        new_total = total + value
        bigger = ops.greater_equal(ops.abs(total), ops.abs(value))
        error = ops.where(
            bigger, (total - new_total) + value, (value - new_total) + total
        )
        self.total.assign(new_total)
        self.carry.assign(self.carry.value + error)

    def value(self) -> Any:
        return self.total.value + self.carry.value


@public("metrics", serializable=True)
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error as a streaming Keras metric.

    Accumulates, over batches, the count, summed confidence and summed
    accuracy of each confidence bin, so the value after several batches equals
    `kdt.metrics.expected_calibration_error` of all of them at once. Bins and
    formula are those of that function: ``(b / n_bins, (b + 1) / n_bins]``,
    ``ECE = sum_b (count_b / n) |accuracy_b - confidence_b|``. The sums are
    float32 with Neumaier compensation: exact (to float32 rounding of each
    batch) after any number of batches, on every backend and device (no
    float64 state, which JAX without x64 and TPUs lack).

    Use it in ``model.compile(metrics=[kdt.metrics.ExpectedCalibrationError()])``
    for a classifier whose outputs are probabilities (softmax; or one sigmoid
    output, read as P(class 1)).

    Args:
        n_bins: number of equal-width confidence bins (>= 1).
        name: name of the metric instance.
        dtype: dtype of the result.

    Call arguments (`update_state`):
        y_true: integer labels ``(batch,)`` / ``(batch, 1)``, or one-hot
            labels ``(batch, classes)``; with extra axes, labels shaped like
            `y_pred` without its last axis (or one-hot like `y_pred`).
        y_pred: class probabilities ``(batch, classes)``. Extra leading axes
            (e.g. a sequence axis) are flattened: every position counts.
        sample_weight: optional weights ``(batch,)``, or shaped like `y_pred`
            without its last axis (e.g. ``(batch, steps)``); an instance of
            weight w counts as w instances.

    Raises:
        ValueError: from `update_state` called eagerly, when `y_pred` is not
            probabilities (values outside [0, 1], e.g. logits, or rows not
            summing to 1) or the labels are out of range. Inside a compiled
            `fit`/`evaluate` values cannot raise: the metric then returns NaN
            from the first invalid batch on, so the mistake cannot go unseen.

    Example:

    >>> metric = kdt.metrics.ExpectedCalibrationError(n_bins=5)
    >>> metric.update_state([0, 1], [[0.95, 0.05], [0.85, 0.15]])
    >>> metric.update_state([1, 0], [[0.35, 0.65], [0.55, 0.45]])
    >>> round(float(metric.result()), 4)
    0.4
    """

    def __init__(
        self,
        n_bins: int = 15,
        name: str = "expected_calibration_error",
        dtype: Any = None,
    ) -> None:
        self_name = check_name("name", name)
        dtype = check_dtype("dtype", dtype)
        if dtype is not None and "float" not in str(
            keras.dtype_policies.get(dtype).variable_dtype
        ):
            raise invalid_value("dtype", "None or a floating-point dtype", dtype)
        n_bins = check_int("n_bins", n_bins, low=1, high=MAX_BINS)
        super().__init__(name=self_name, dtype=dtype)
        self.n_bins = n_bins
        self.bin_counts = _CompensatedSum(self, self.n_bins, "counts")
        self.bin_confidence = _CompensatedSum(self, self.n_bins, "confidence_sums")
        self.bin_correct = _CompensatedSum(self, self.n_bins, "correct")
        self.invalid = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="invalid"
        )

    def _check_eagerly(self, labels: Any, probs: Any, n_classes: int) -> None:
        values = _concrete(probs)
        if values is None:
            return
        values = values.astype("float64")
        if not np.all(np.isfinite(values)):
            raise invalid_value(
                "y_pred", "finite probabilities (no NaN or inf)", "non-finite values"
            )
        if values.size and (values.min() < -1e-6 or values.max() > 1 + 1e-6):
            raise invalid_value(
                "y_pred",
                "probabilities within [0, 1] (these look like logits: apply a "
                "softmax, or a sigmoid for one output, first)",
                f"values from {values.min()} to {values.max()}",
            )
        if n_classes > 1 and values.size:
            worst = float(np.max(np.abs(values.sum(axis=-1) - 1.0)))
            if worst > _ROW_SUM_TOLERANCE:
                raise invalid_value(
                    "y_pred",
                    "class probabilities whose rows sum to 1 (apply a softmax)",
                    f"rows summing to 1 +- {worst:.3g}",
                )
        label_values = _concrete(labels)
        if label_values is not None and label_values.size:
            classes = max(n_classes, 2)
            if label_values.min() < 0 or label_values.max() >= classes:
                raise invalid_value(
                    "y_true",
                    f"labels in [0, {classes - 1}] (one column of y_pred per class)",
                    f"labels from {label_values.min()} to {label_values.max()}",
                )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_pred = ops.cast(
            ops.convert_to_tensor(check_tensor_input("y_pred", y_pred)), "float32"
        )
        y_true = ops.convert_to_tensor(check_tensor_input("y_true", y_true))
        n_classes = y_pred.shape[-1]
        if n_classes is None:
            raise ValueError(
                "Invalid value for argument `y_pred`: expected a known number of "
                f"classes on its last axis. Received: y_pred.shape={y_pred.shape}"
            )
        one_hot = (
            n_classes > 1
            and len(y_true.shape) == len(y_pred.shape)
            and y_true.shape[-1] == n_classes
        )
        if one_hot:
            labels = ops.argmax(ops.reshape(y_true, (-1, n_classes)), axis=-1)
        else:
            labels = ops.reshape(y_true, (-1,))
        rows = ops.reshape(y_pred, (-1, n_classes)).shape[0]
        if labels.shape[0] is not None and rows is not None and labels.shape[0] != rows:
            raise invalid_values(
                ("y_true", "y_pred"),
                "one label per row of y_pred",
                y_true=f"{labels.shape[0]} labels",
                y_pred=f"{rows} rows",
            )
        self._check_eagerly(labels, y_pred, n_classes)
        raw = ops.reshape(y_pred, (-1, n_classes))
        if n_classes == 1:  # A sigmoid output: P(class 1).
            y_pred = ops.concatenate([1.0 - y_pred, y_pred], axis=-1)
        classes = max(n_classes, 2)
        probs = ops.reshape(y_pred, (-1, classes))
        labels = ops.cast(labels, "int32")
        # Traced batches cannot raise: count the invalid rows instead.
        bad_rows = ops.logical_or(
            ops.logical_or(
                ops.any(raw < -1e-6, axis=-1), ops.any(raw > 1 + 1e-6, axis=-1)
            ),
            ops.logical_or(labels < 0, labels >= classes),
        )
        if n_classes > 1:
            bad_rows = ops.logical_or(
                bad_rows,
                ops.abs(ops.sum(raw, axis=-1) - 1.0) > _ROW_SUM_TOLERANCE,
            )
        self.invalid.assign(self.invalid.value + ops.sum(ops.cast(bad_rows, "float32")))
        confidence = ops.clip(ops.max(probs, axis=-1), 0.0, 1.0)
        correct = ops.cast(
            ops.equal(ops.cast(ops.argmax(probs, axis=-1), "int32"), labels),
            "float32",
        )
        bins = ops.cast(ops.ceil(confidence * self.n_bins), "int32") - 1
        bins = ops.clip(bins, 0, self.n_bins - 1)
        members = ops.one_hot(bins, self.n_bins, dtype="float32")
        if sample_weight is not None:
            weight = self._weights(sample_weight, y_pred)
            members = members * ops.reshape(weight, (-1, 1))
        self.bin_counts.add(ops.sum(members, axis=0))
        self.bin_confidence.add(ops.sum(members * confidence[:, None], axis=0))
        self.bin_correct.add(ops.sum(members * correct[:, None], axis=0))

    @staticmethod
    def _weights(sample_weight: Any, y_pred: Any) -> Any:
        """Weights broadcast to one per position of `y_pred` (without classes)."""
        weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
        target = tuple(y_pred.shape[:-1])
        rank = len(target)
        if len(weight.shape) > rank:
            weight = ops.reshape(weight, ops.shape(weight)[:rank])
        while len(weight.shape) < rank:
            weight = ops.expand_dims(weight, -1)
        return ops.reshape(ops.broadcast_to(weight, ops.shape(y_pred)[:-1]), (-1,))

    def reset_state(self) -> None:
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def result(self) -> Any:
        counts = self.bin_counts.value()
        total = ops.sum(counts)
        gap = ops.sum(ops.abs(self.bin_correct.value() - self.bin_confidence.value()))
        value = ops.where(total > 0, gap / ops.maximum(total, 1e-30), 0.0)
        value = ops.where(self.invalid.value > 0, float("nan"), value)
        return ops.cast(value, self.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "n_bins": self.n_bins}
