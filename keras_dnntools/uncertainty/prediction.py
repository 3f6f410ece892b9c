"""`MCPrediction`: the summary of T Monte Carlo samples of a model's output."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from keras_dnntools._validation import check_float, invalid_value

CATEGORICAL = "categorical"
BINARY = "binary"
REGRESSION = "regression"
HETEROSCEDASTIC = "heteroscedastic"

#: The values of `mc_predict`'s `output_kind` (besides None: detect).
OUTPUT_KINDS = (CATEGORICAL, BINARY, REGRESSION, HETEROSCEDASTIC)
_KINDS = OUTPUT_KINDS
_PROBABILITY_KINDS = (CATEGORICAL, BINARY)


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


def _logmeanexp(values: np.ndarray) -> np.ndarray:
    """``log mean_t exp(values[t])`` over the first axis, without overflow."""
    top = np.max(values, axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.mean(np.exp(values - top), axis=0)) + top


def _gaussian_log_density(y: np.ndarray, mean: np.ndarray, variance: Any) -> Any:
    return -0.5 * (np.log(2 * math.pi * variance) + (y - mean) ** 2 / variance)


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
      to 1, or `output_kind="regression"`). `mean`, `std`, `interval` and
      `log_likelihood` (with the observation noise, `noise_std`) exist;
      `predictive_entropy`, `expected_entropy`, `mutual_information` and
      `predicted_class` raise an `AttributeError` that says why (so
      ``hasattr`` is False).
    * ``"heteroscedastic"``: a regression head whose last axis holds D means
      then D log-variances (Kendall & Gal, 2017). `mean` and `std` are those
      of the sampled means (shape ``(..., D)``); `aleatoric_variance` is the
      mean of the predicted variances, `epistemic_variance` the variance of
      the sampled means, `variance` their sum (the variance of the predictive
      distribution). `samples` keep the raw ``2D`` outputs.

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
        aleatoric_variance: heteroscedastic only, ``mean_t exp(log_var_t)``.
        epistemic_variance: heteroscedastic only, ``std ** 2``.
        variance: heteroscedastic only, aleatoric plus epistemic.
        n_samples: T.
        output_kind: ``"categorical"``, ``"binary"``, ``"regression"`` or
            ``"heteroscedastic"``.

    Example:

    >>> samples = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])  # T=2, one instance
    >>> prediction = kdt.uncertainty.MCPrediction.from_samples(samples)
    >>> prediction.mean
    array([[0.7, 0.3]])
    >>> prediction.predicted_class
    array([0])
    >>> bool(prediction.mutual_information[0] > 0)
    True
    >>> np.round(prediction.log_likelihood([0]), 4)  # log((0.9 + 0.5) / 2)
    array([-0.3567])
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
        aleatoric_variance: np.ndarray | None = None,
    ) -> None:
        if output_kind not in _KINDS:
            raise invalid_value("output_kind", f"one of {_KINDS}", output_kind)
        if output_kind in _PROBABILITY_KINDS and expected_entropy is None:
            raise invalid_value(
                "expected_entropy",
                f"an array for a {output_kind!r} output",
                expected_entropy,
            )
        if output_kind == HETEROSCEDASTIC and aleatoric_variance is None:
            raise invalid_value(
                "aleatoric_variance",
                "an array for a 'heteroscedastic' output",
                aleatoric_variance,
            )
        self.mean = mean
        self.std = std
        self.n_samples = n_samples
        self.output_kind = output_kind
        self._samples = samples
        self._expected_entropy = expected_entropy
        self._aleatoric_variance = aleatoric_variance
        self._predictive_entropy = None

    @classmethod
    def from_samples(cls, samples: Any, *, output_kind: str | None = None):
        """Summarizes an array of samples shaped ``(n_samples, n_instances, ...)``.

        Args:
            samples: the samples (e.g. the book's ``y_probas``, or the
                predictions of an ensemble).
            output_kind: ``"categorical"``, ``"binary"``, ``"regression"`` or
                ``"heteroscedastic"``; categorical, binary or regression is
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
        if output_kind is not None and output_kind not in _KINDS:
            raise invalid_value("output_kind", f"None or one of {_KINDS}", output_kind)
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
        dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else "float64"
        if output_kind == HETEROSCEDASTIC:
            if values.ndim < 3 or values.shape[-1] % 2:
                raise invalid_value(
                    "samples",
                    "D means then D log-variances on the last axis (an even size)",
                    f"an array of shape {array.shape}",
                )
            half = values.shape[-1] // 2
            means = values[..., :half]
            return cls(
                mean=means.mean(axis=0).astype(dtype),
                std=means.std(axis=0).astype(dtype),
                n_samples=array.shape[0],
                output_kind=output_kind,
                samples=array,
                aleatoric_variance=np.exp(values[..., half:]).mean(0).astype(dtype),
            )
        expected = None
        if output_kind in _PROBABILITY_KINDS:
            expected = _drop_unit_axis(
                entropy(values, output_kind).mean(axis=0), array.shape[1:]
            )
        return cls(
            mean=values.mean(axis=0).astype(dtype),
            std=values.std(axis=0).astype(dtype),
            n_samples=array.shape[0],
            output_kind=output_kind,
            expected_entropy=None if expected is None else expected.astype(dtype),
            samples=array,
        )

    def _require_probabilities(self, name: str) -> None:
        if self.output_kind not in _PROBABILITY_KINDS:
            raise AttributeError(
                f"`{name}` is defined for class probabilities only, and these "
                "outputs are not probabilities (values outside [0, 1], or rows "
                "that do not sum to 1 over the last axis, or a regression "
                f"output_kind): output_kind={self.output_kind!r}. Use `mean`, "
                "`std` and `interval` for regression outputs."
            )

    def _require_heteroscedastic(self, name: str) -> None:
        if self.output_kind != HETEROSCEDASTIC:
            raise AttributeError(
                f"`{name}` exists for heteroscedastic outputs only (means and "
                "log-variances: mc_predict(..., output_kind='heteroscedastic')). "
                f"Received: output_kind={self.output_kind!r}"
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
            values = _drop_unit_axis(
                entropy(self.mean, self.output_kind), self.mean.shape
            )
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

    @property
    def aleatoric_variance(self) -> np.ndarray:
        self._require_heteroscedastic("aleatoric_variance")
        return self._aleatoric_variance

    @property
    def epistemic_variance(self) -> np.ndarray:
        self._require_heteroscedastic("epistemic_variance")
        return np.square(self.std)

    @property
    def variance(self) -> np.ndarray:
        self._require_heteroscedastic("variance")
        return self._aleatoric_variance + np.square(self.std)

    def interval(self, coverage: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Central predictive interval of a regression output.

        The normal interval with the predictive mean and variance:
        ``mean +- z * sqrt(variance)`` with ``z`` the normal quantile of
        ``(1 + coverage) / 2``. For ``"heteroscedastic"`` outputs the variance
        is `variance` (aleatoric plus epistemic), so the interval is meant to
        hold `coverage` of the observations; for ``"regression"`` outputs it is
        ``std ** 2``, the spread of the model's output only (observation noise
        is not part of a plain regression head: widen the interval by it, or
        train a heteroscedastic head).

        Args:
            coverage: the probability the interval holds, in (0, 1).

        Returns:
            ``(lower, upper)``, two arrays shaped like `mean`.

        Raises:
            ValueError: if `coverage` is outside (0, 1), or the output is
                class probabilities.

        Example:

        >>> samples = np.array([[[1.0]], [[3.0]]])  # T=2: mean 2, std 1
        >>> prediction = kdt.uncertainty.MCPrediction.from_samples(samples)
        >>> lower, upper = prediction.interval(0.95)
        >>> round(float(lower[0, 0]), 3), round(float(upper[0, 0]), 3)
        (0.04, 3.96)
        """
        coverage = check_float(
            "coverage",
            coverage,
            low=0.0,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        if self.output_kind in _PROBABILITY_KINDS:
            raise invalid_value(
                "output_kind",
                "'regression' or 'heteroscedastic' for an interval (class "
                "probabilities have `predictive_entropy` instead; if these are "
                "regression outputs in [0, 1], pass output_kind='regression' to "
                "mc_predict)",
                self.output_kind,
            )
        z = NormalDist().inv_cdf(0.5 + coverage / 2.0)
        variance = self.variance if self.output_kind == HETEROSCEDASTIC else self.std**2
        half = z * np.sqrt(np.asarray(variance, "float64"))
        mean = np.asarray(self.mean, "float64")
        return (mean - half).astype(self.mean.dtype), (mean + half).astype(
            self.mean.dtype
        )

    def log_likelihood(self, y_true: Any, *, noise_std: Any = None) -> np.ndarray:
        """Monte Carlo estimate of the predictive log-likelihood, per instance.

        ``log mean_t p(y | sample t)``, the quantity MC dropout papers report
        (averaged over a test set): with ``categorical``/``binary`` outputs
        ``p`` is the probability of the true class; with ``regression`` outputs
        a Gaussian of standard deviation `noise_std` around each sample (the
        homoscedastic observation noise: Gal & Ghahramani's estimator,
        ``logsumexp_t(-tau/2 ||y - y_t||^2) - log T - D/2 log(2 pi) +
        D/2 log tau`` with ``tau = noise_std ** -2``); with
        ``heteroscedastic`` outputs a Gaussian with each sample's own mean and
        variance. Several outputs per instance (D > 1, or a sequence axis)
        are independent given a sample: their log-densities add up.

        Args:
            y_true: the observed values: class labels (integers, or one-hot)
                for probabilities; values shaped like `mean` (or
                ``(n_instances,)`` for a single output) for regression.
            noise_std: regression only (and required there): the observation
                noise standard deviation, a positive number or an array
                broadcastable to `mean`'s shape.

        Returns:
            A float64 array of shape ``(n_instances,)``.

        Raises:
            ValueError: if the samples were not kept (``mc_predict(...,
                return_samples=True)``), `y_true` does not match, or
                `noise_std` is missing for regression, given for another
                kind, or not positive.

        Example:

        >>> samples = np.array([[[0.0]], [[2.0]]])  # T=2, one instance
        >>> prediction = kdt.uncertainty.MCPrediction.from_samples(samples)
        >>> np.round(prediction.log_likelihood([1.0], noise_std=1.0), 4)
        array([-1.4189])
        """
        if self._samples is None:
            raise invalid_value(
                "y_true",
                "a prediction that kept its samples: the Monte Carlo "
                "log-likelihood needs every sample (call mc_predict(..., "
                "return_samples=True))",
                "a prediction without samples",
            )
        samples = np.asarray(self._samples, "float64")
        kind = self.output_kind
        if kind == REGRESSION:
            if noise_std is None:
                raise invalid_value(
                    "noise_std",
                    "the observation noise standard deviation for a regression "
                    "output (e.g. the RMSE on validation data)",
                    noise_std,
                )
        elif noise_std is not None:
            raise invalid_value(
                "noise_std",
                f"None for a {kind!r} output (its noise is in the outputs)",
                noise_std,
            )
        if kind in _PROBABILITY_KINDS:
            log_p = self._log_probability_of(samples, y_true)
        else:
            y = self._regression_targets(y_true)
            if kind == HETEROSCEDASTIC:
                half = samples.shape[-1] // 2
                means, variance = samples[..., :half], np.exp(samples[..., half:])
            else:
                means, variance = samples, self._noise_variance(noise_std)
            log_p = _gaussian_log_density(y[None], means, variance)
        per_sample = log_p.reshape(log_p.shape[0], log_p.shape[1], -1).sum(axis=-1)
        return _logmeanexp(per_sample)

    def _noise_variance(self, noise_std: Any) -> np.ndarray:
        try:
            std = np.asarray(noise_std, "float64")
        except (TypeError, ValueError) as error:
            raise invalid_value("noise_std", "a positive number", noise_std) from error
        if not np.all(np.isfinite(std)) or np.any(std <= 0):
            raise invalid_value("noise_std", "positive finite values", noise_std)
        try:
            np.broadcast_shapes(std.shape, self.mean.shape)
        except ValueError as error:
            raise invalid_value(
                "noise_std",
                f"a number or an array broadcastable to {self.mean.shape}",
                f"an array of shape {std.shape}",
            ) from error
        return std**2

    def _regression_targets(self, y_true: Any) -> np.ndarray:
        y = np.asarray(y_true, "float64")
        shape = self.mean.shape
        if y.shape != shape and y.size == math.prod(shape) and y.shape[:1] == shape[:1]:
            y = y.reshape(shape)  # (n,) for (n, 1) outputs, and the like
        if y.shape != shape:
            raise invalid_value(
                "y_true",
                f"values of shape {shape} (one per output)",
                f"an array of shape {y.shape}",
            )
        return y

    def _log_probability_of(self, samples: np.ndarray, y_true: Any) -> np.ndarray:
        """``log p_t(y)`` per sample and position, shape ``(T, n, ...)``."""
        labels = np.asarray(y_true)
        if self.output_kind == BINARY:
            p = samples.reshape((*samples.shape[:2], -1))
            labels = labels.reshape((*labels.shape[:1], -1))
            if labels.shape != p.shape[1:]:
                raise invalid_value(
                    "y_true",
                    f"one 0/1 label per output ({p.shape[1:]} values)",
                    f"an array of shape {np.asarray(y_true).shape}",
                )
            if not np.isin(labels, (0, 1)).all():
                raise invalid_value("y_true", "binary labels 0 or 1", "other values")
            chosen = np.where(labels[None] == 1, p, 1.0 - p)
        else:
            classes = samples.shape[-1]
            if labels.shape == samples.shape[1:]:  # one-hot
                labels = labels.argmax(axis=-1)
            if labels.shape != samples.shape[1:-1]:
                raise invalid_value(
                    "y_true",
                    f"integer labels of shape {samples.shape[1:-1]} or one-hot "
                    f"labels of shape {samples.shape[1:]}",
                    f"an array of shape {np.asarray(y_true).shape}",
                )
            if (
                not np.issubdtype(labels.dtype, np.number)
                or np.any(labels != np.round(labels))
                or labels.min() < 0
                or labels.max() >= classes
            ):
                raise invalid_value(
                    "y_true", f"integer labels in [0, {classes - 1}]", "other values"
                )
            index = np.broadcast_to(
                labels.astype("int64")[None, ..., None],
                (samples.shape[0], *labels.shape, 1),
            )
            chosen = np.take_along_axis(samples, index, axis=-1)[..., 0]
        with np.errstate(divide="ignore"):
            return np.log(np.clip(chosen, 0.0, 1.0))

    def __repr__(self) -> str:
        return (
            f"MCPrediction(n_samples={self.n_samples}, "
            f"n_instances={self.mean.shape[0]}, "
            f"output_shape={self.mean.shape[1:]}, "
            f"output_kind={self.output_kind!r}, "
            f"samples_kept={self._samples is not None})"
        )
