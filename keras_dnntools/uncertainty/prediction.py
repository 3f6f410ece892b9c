"""`MCPrediction`: the summary of T Monte Carlo samples of a model's output."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_dnntools._validation import invalid_value

CATEGORICAL = "categorical"
BINARY = "binary"
REGRESSION = "regression"

_KINDS = (CATEGORICAL, BINARY, REGRESSION)


def _xlogx(p: np.ndarray) -> np.ndarray:
    positive = p > 0
    return np.where(positive, p * np.log(np.where(positive, p, 1.0)), 0.0)


def entropy(p: np.ndarray, kind: str) -> np.ndarray:
    """Entropy in nats of categorical (last axis) or Bernoulli probabilities."""
    p = np.clip(np.asarray(p, dtype="float64"), 0.0, 1.0)
    if kind == CATEGORICAL:
        return -np.sum(_xlogx(p), axis=-1)
    return -(_xlogx(p) + _xlogx(1.0 - p))


def _drop_unit_axis(values: np.ndarray, mean_shape: tuple) -> np.ndarray:
    # Binary outputs of shape (n, ..., 1) get per-instance fields (n, ...).
    if len(mean_shape) >= 2 and mean_shape[-1] == 1:
        return values.reshape(mean_shape[:-1])
    return values


def detect_output_kind(samples_low, samples_high, deviation, shape, tolerance) -> str:
    """Tells class probabilities (categorical or binary) from other outputs.

    Categorical: every sample is in [0, 1] and sums to 1 over a last axis of
    size >= 2. Binary: a single output per instance (last axis of size 1, or no
    class axis) in [0, 1], read as P(class 1) as a sigmoid gives it.
    Anything else is a regression output.
    """
    in_range = samples_low >= -tolerance and samples_high <= 1.0 + tolerance
    if not in_range:
        return REGRESSION
    if len(shape) >= 2 and shape[-1] >= 2:
        return CATEGORICAL if deviation <= tolerance else REGRESSION
    return BINARY


class MCPrediction:
    """The summary of T Monte Carlo dropout samples of a model's output.

    Returned by `kdt.uncertainty.mc_predict`. Arrays are NumPy arrays with the
    instances on the first axis. All entropies are in nats (natural logs) and
    are safe at probability 0 (``0 log 0 = 0``).

    What the output is decides which fields exist (`output_kind`):

    * ``"categorical"``: every sample sums to 1 over the last axis (softmax);
      the entropies are over that axis, so they have the shape of `mean`
      without its last axis, ``(n_instances,)`` for a classifier.
    * ``"binary"``: one probability per instance (last axis of size 1, as a
      sigmoid gives it), read as P(class 1); entropies are Bernoulli
      entropies, shape ``(n_instances,)``.
    * ``"regression"``: anything else (values outside [0, 1], or not summing
      to 1). Only `mean`, `std` and `samples` exist; `predictive_entropy`,
      `expected_entropy`, `mutual_information` and `predicted_class` raise an
      `AttributeError` that says why (so ``hasattr`` is False).

    Attributes:
        mean: the mean of the samples, shape ``(n_instances, ...)``.
        std: their population standard deviation (ddof=0) over samples.
        samples: all samples, shape ``(n_samples, n_instances, ...)``, as the
            book's ``y_probas``; only with ``mc_predict(...,
            return_samples=True)`` (otherwise an `AttributeError`).
        predictive_entropy: ``H[mean]``, total uncertainty.
        expected_entropy: the mean over samples of ``H[sample]``, aleatoric
            uncertainty.
        mutual_information: ``predictive_entropy - expected_entropy``
            (BALD), epistemic uncertainty; never negative.
        predicted_class: ``argmax`` of `mean` (categorical), or
            ``mean > 0.5`` (binary), as integers.
        n_samples: T.
        output_kind: ``"categorical"``, ``"binary"`` or ``"regression"``.

    Example:

    >>> samples = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])  # T=2, one instance
    >>> prediction = kdt.uncertainty.MCPrediction.from_samples(samples)
    >>> prediction.mean
    array([[0.7, 0.3]])
    >>> prediction.predicted_class
    array([0])
    >>> bool(prediction.mutual_information[0] > 0)
    True
    """

    def __init__(
        self,
        *,
        mean: np.ndarray,
        std: np.ndarray,
        n_samples: int,
        output_kind: str,
        expected_entropy: np.ndarray | None = None,
        samples: np.ndarray | None = None,
    ) -> None:
        if output_kind not in _KINDS:
            raise invalid_value("output_kind", f"one of {_KINDS}", output_kind)
        if output_kind != REGRESSION and expected_entropy is None:
            raise invalid_value(
                "expected_entropy",
                f"an array for a {output_kind!r} output",
                expected_entropy,
            )
        self.mean = mean
        self.std = std
        self.n_samples = n_samples
        self.output_kind = output_kind
        self._samples = samples
        self._expected_entropy = expected_entropy
        self._predictive_entropy = None

    @classmethod
    def from_samples(cls, samples: Any, *, output_kind: str | None = None):
        """Summarizes an array of samples shaped ``(n_samples, n_instances, ...)``.

        Args:
            samples: the samples (e.g. the book's ``y_probas``, or the
                predictions of an ensemble).
            output_kind: ``"categorical"``, ``"binary"`` or ``"regression"``;
                detected from the values when None.

        Returns:
            An `MCPrediction` that keeps `samples`.
        """
        array = np.asarray(samples)
        if array.ndim < 2 or array.shape[0] < 1 or array.shape[1] < 1:
            raise invalid_value(
                "samples",
                "an array of shape (n_samples, n_instances, ...) with both >= 1",
                getattr(array, "shape", None),
            )
        values = array.astype("float64")
        if output_kind is None:
            deviation = (
                float(np.max(np.abs(values.sum(axis=-1) - 1.0)))
                if values.ndim >= 3
                else 0.0
            )
            tolerance = 1e-2 if array.dtype in (np.float16,) else 1e-3
            output_kind = detect_output_kind(
                values.min(), values.max(), deviation, array.shape[1:], tolerance
            )
        expected = None
        if output_kind != REGRESSION:
            kind = CATEGORICAL if output_kind == CATEGORICAL else BINARY
            expected = _drop_unit_axis(
                entropy(values, kind).mean(axis=0), array.shape[1:]
            )
        dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else "float64"
        return cls(
            mean=values.mean(axis=0).astype(dtype),
            std=values.std(axis=0).astype(dtype),
            n_samples=array.shape[0],
            output_kind=output_kind,
            expected_entropy=None if expected is None else expected.astype(dtype),
            samples=array,
        )

    def _require_probabilities(self, name: str) -> None:
        if self.output_kind == REGRESSION:
            raise AttributeError(
                f"`{name}` is defined for class probabilities only, and these "
                "outputs are not probabilities (values outside [0, 1], or rows "
                "that do not sum to 1 over the last axis): output_kind="
                f"'regression'. Use `mean` and `std` for regression outputs."
            )

    @property
    def samples(self) -> np.ndarray:
        if self._samples is None:
            raise AttributeError(
                "The samples were not kept: call "
                "`mc_predict(..., return_samples=True)` to get them."
            )
        return self._samples

    @property
    def predictive_entropy(self) -> np.ndarray:
        self._require_probabilities("predictive_entropy")
        if self._predictive_entropy is None:
            kind = CATEGORICAL if self.output_kind == CATEGORICAL else BINARY
            values = _drop_unit_axis(entropy(self.mean, kind), self.mean.shape)
            self._predictive_entropy = values.astype(self._expected_entropy.dtype)
        return self._predictive_entropy

    @property
    def expected_entropy(self) -> np.ndarray:
        self._require_probabilities("expected_entropy")
        return self._expected_entropy

    @property
    def mutual_information(self) -> np.ndarray:
        self._require_probabilities("mutual_information")
        difference = np.asarray(self.predictive_entropy, "float64") - np.asarray(
            self._expected_entropy, "float64"
        )
        # Never negative in exact arithmetic (Jensen); clip rounding noise.
        return np.maximum(difference, 0.0).astype(self._expected_entropy.dtype)

    @property
    def predicted_class(self) -> np.ndarray:
        self._require_probabilities("predicted_class")
        if self.output_kind == CATEGORICAL:
            return np.argmax(self.mean, axis=-1)
        return _drop_unit_axis((self.mean > 0.5).astype("int64"), self.mean.shape)

    def __repr__(self) -> str:
        return (
            f"MCPrediction(n_samples={self.n_samples}, "
            f"n_instances={self.mean.shape[0]}, "
            f"output_shape={self.mean.shape[1:]}, "
            f"output_kind={self.output_kind!r}, "
            f"samples_kept={self._samples is not None})"
        )
