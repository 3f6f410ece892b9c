"""What can be known about `fit()` data without iterating it."""

from __future__ import annotations

import math
from typing import Any

from keras import ops


def steps_per_epoch(x: Any, batch_size: int) -> int | None:
    """Batches per epoch of `x` when it can be known without iterating it."""
    length = getattr(x, "__len__", None)
    if length is not None and hasattr(x, "__getitem__") and hasattr(x, "on_epoch_end"):
        return int(length())  # a keras.utils.PyDataset: its number of batches
    cardinality = getattr(x, "cardinality", None)
    if callable(cardinality):  # tf.data.Dataset
        value = int(ops.convert_to_numpy(cardinality()))
        return value if value > 0 else None
    first = x
    while isinstance(first, (list, tuple, dict)) and first:
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) > 0 and shape[0] is not None:
        return max(1, math.ceil(int(shape[0]) / batch_size))
    return None


def fit_steps_per_epoch(x: Any, fit_kwargs: dict[str, Any]) -> int | None:
    """The optimizer steps of one epoch of `model.fit(x, **fit_kwargs)`, if known."""
    if fit_kwargs.get("steps_per_epoch"):
        return int(fit_kwargs["steps_per_epoch"])
    batch_size = fit_kwargs.get("batch_size") or 32
    steps = steps_per_epoch(x, batch_size)
    split = fit_kwargs.get("validation_split") or 0.0
    if steps is None or not split or getattr(x, "cardinality", None) is not None:
        return steps
    first = x
    while isinstance(first, (list, tuple, dict)) and first:
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    samples = math.ceil(int(first.shape[0]) * (1.0 - split))  # as Keras splits
    return max(1, math.ceil(samples / batch_size))


def check_fit_data(model: Any, x: Any, y: Any = None) -> int | None:
    """Checks in-memory `x` (and `y`) before a fit-like function touches `model`.

    Numeric, non-empty, finite arrays with as many rows in `y` as in `x`,
    and an `x` whose shape matches the model's input (when the model has one
    known input). Datasets and generators pass unchecked.

    Returns:
        The number of examples in `x`, or None when it is not in memory.

    Raises:
        TypeError: if `x` or `y` is not numeric.
        ValueError: if one is empty, non-finite, or the shapes disagree.
    """
    from keras_dnntools._validation import check_examples

    rows = check_examples("x", x)
    if y is not None and rows is not None:
        check_examples("y", y, rows=rows)
    if rows is not None and hasattr(x, "shape"):
        from keras_dnntools.uncertainty.monte_carlo import _check_against_inputs

        _check_against_inputs(model, x, [x], x)
    return rows
