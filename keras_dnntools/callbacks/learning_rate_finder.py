"""The learning-rate finder: an exponential sweep of the rate, then a suggestion."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_dnntools._data import check_fit_data, steps_per_epoch
from keras_dnntools._distribution import strategy_scope
from keras_dnntools._optional import require_pyplot
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_choice,
    check_float,
    check_int,
    check_positive,
    invalid_type,
    invalid_values,
)
from keras_dnntools.callbacks import _installation, _rate_owners

SMOOTHING = 0.98


class _Sweep(keras.optimizers.schedules.LearningRateSchedule):
    """`min * (max / min) ** ((t - first_step) / (steps - 1))`, then held."""

    def __init__(self, minimum: float, maximum: float, steps: int, first_step: int):
        super().__init__()
        self.minimum, self.maximum = minimum, maximum
        self.steps, self.first_step = steps, first_step

    def rate(self, step: Any) -> Any:
        span = max(self.steps - 1, 1)
        # Subtract in integers: float32 counts exactly only up to 2**24 steps.
        position = ops.clip(ops.cast(step - self.first_step, "float32"), 0.0, span)
        return self.minimum * ops.power(self.maximum / self.minimum, position / span)

    def __call__(self, step: Any) -> Any:
        return self.rate(step)

    def get_config(self) -> dict[str, Any]:
        return {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "steps": self.steps,
            "first_step": self.first_step,
        }


def valley(losses: np.ndarray) -> int:
    """fastai's "valley": the index 1/2 of the way down the longest descent.

    Finds the longest (not necessarily contiguous) decreasing run of the
    smoothed losses, and returns the index at (1/3 + 1/6) of its length from
    its start: well inside the steep part, before the minimum.
    """
    n = len(losses)
    lengths = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
        if lengths[end] < lengths[i]:
            end = i
            start = end - lengths[end]
    sections = (end - start) / 3
    return start + int(sections) + int(sections / 2)


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """The outcome of a learning-rate sweep.

    Attributes:
        learning_rates: the rate of each recorded batch (NumPy float64 array).
        losses: the smoothed loss of each recorded batch (exponential moving
            average with factor 0.98 and bias correction).
        raw_losses: the loss of each recorded batch, unsmoothed.
        suggestion: the suggested learning rate (fastai's "valley"; see
            `kdt.find_learning_rate`).
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggestion: float

    def suggest(self, method: str = "valley") -> float:
        """A suggested learning rate by one of fastai's rules.

        - `"valley"` (the default, `.suggestion`): 1/2 of the way down the
          longest descent of the smoothed loss.
        - `"slide"`: walking back from the end, the rate where the slope of
          the loss stops changing (fastai's `slide`, `lr_diff=15`,
          `thresh=0.005`).
        - `"minimum"`: the rate of the lowest loss, divided by 10 (Smith's
          rule of thumb, fastai's `minimum`).
        - `"steep"`: the rate where the loss falls fastest per decade.

        Like fastai, `slide`, `minimum` and `steep` skip the first 10% of
        the points and the last 5. For 1cycle, `OneCycleScheduler`'s
        `max_learning_rate` is the peak rate: the `valley` or `minimum`
        suggestion is a safe peak (fastai passes `valley` to
        `fit_one_cycle`); `steep` is a lower bound, and the rate of the
        minimum itself is too high (the loss is about to diverge there).

        Args:
            method: `"valley"`, `"slide"`, `"minimum"` or `"steep"`.

        Returns:
            The suggested rate, a float.

        Raises:
            ValueError: for an unknown `method`, or when the sweep recorded
                too few finite losses for the rule.
        """
        method = check_choice("method", method, SUGGESTION_METHODS)
        if method == "valley":
            return self.suggestion
        finite = np.isfinite(self.losses)
        rates, losses = self.learning_rates[finite], self.losses[finite]
        count = len(losses)
        rates, losses = rates[count // 10 : count - 5], losses[count // 10 : count - 5]
        if len(losses) < 3:
            raise ValueError(
                f"Invalid value for argument `method`: the sweep recorded {count} "
                f"finite losses, too few for the {method!r} rule (it skips the "
                "first 10% and the last 5). Run a longer sweep (`steps`), or use "
                f"method='valley'. Received: method={method!r}"
            )
        if method == "minimum":
            return float(rates[np.argmin(losses)] / 10)
        slopes = np.diff(losses) / np.diff(np.log(rates))
        if method == "steep":
            return float(rates[np.argmin(slopes)])
        return _slide(rates, losses)

    def plot(self, ax: Any = None, *, method: str = "valley") -> Any:
        """Plots the smoothed loss against the rate (log scale), marking a suggestion.

        Shows the useful range: the diverged tail (after the minimum, where
        the loss climbs above where the sweep started) is cut, and the y-axis
        spans the losses up to the minimum, so that a divergence to a huge
        loss does not flatten the curve.

        Args:
            ax: a matplotlib `Axes`; a new figure is made when `None`.
            method: the rule whose suggestion is marked (see `suggest`).

        Returns:
            The matplotlib `Axes`.

        Raises:
            ImportError: if matplotlib is not installed (it comes with the
                `examples` extra: `pip install 'keras-dnntools[examples]'`).
        """
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots()
        rates, losses = _useful_range(self.learning_rates, self.losses)
        ax.plot(rates, losses, color="tab:blue", label="smoothed loss")
        ax.set_xscale("log")
        if len(losses):
            low, high = float(np.min(losses)), float(np.max(losses))
            margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
            ax.set_ylim(low - margin, high + margin)
        suggestion = self.suggest(method)
        ax.axvline(
            suggestion,
            color="tab:red",
            linestyle="--",
            label=f"{method}: {suggestion:.2e}",
        )
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("loss (smoothed)")
        ax.set_title("Learning-rate finder")
        ax.legend(loc="upper left")
        return ax


SUGGESTION_METHODS = ("valley", "slide", "minimum", "steep")


def _slide(rates: np.ndarray, losses: np.ndarray) -> float:
    """fastai's `slide` rule (lr_diff=15, thresh=0.005)."""
    gradient = np.gradient(losses)
    lr_diff = min(15, len(losses) - 1)
    right, left = -1, -1 - lr_diff
    found = rates[left]
    while left >= -len(losses) and abs(gradient[right] - gradient[left]) > 0.005:
        found = rates[left]
        right -= 1
        left -= 1
    return float(found)


def _useful_range(
    rates: np.ndarray, losses: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The sweep up to where the loss, past its minimum, exceeds its start."""
    finite = np.isfinite(losses)
    rates, losses = rates[finite], losses[finite]
    if len(losses) < 2:
        return rates, losses
    lowest = int(np.argmin(losses))
    above = np.flatnonzero(losses[lowest:] > losses[0])
    end = lowest + int(above[0]) + 1 if len(above) else len(losses)
    return rates[:end], losses[:end]


@public("callbacks")
class LearningRateFinder(_rate_owners.RateOwner):
    """Sweeps the learning rate exponentially during `fit()`, then restores the model.

    Over `steps` optimizer steps the rate grows from `min_learning_rate` to
    `max_learning_rate`, multiplied by the same factor at every step (the
    sweep is installed in the optimizer like the scheduler callbacks', so it
    is exact at every step, also with `steps_per_execution > 1`). After each
    batch the callback records the rate and the loss of that batch, and an
    exponentially smoothed loss (factor 0.98, bias-corrected as in fastai).
    Training stops after `steps` steps, when the smoothed loss exceeds
    `stop_factor` times the best one seen, or when the loss is not finite.
    Afterwards every model variable and every optimizer variable
    (`iterations` included, and the slots of an optimizer that the sweep
    built) gets back its value from the start of `fit()`, bit for bit, and
    the optimizer its float rate: at the end of `fit()`, and also when `fit()`
    raised, at once when the exception has been handled, or otherwise at the
    next `fit`, `evaluate`, `predict`, `*_on_batch`, `save` or `save_weights`
    of the model (`kdt.callbacks.release(model)` does it explicitly). It sets
    the learning rate: no other rate-setting callback may share its `fit()`.

    Keras's batch logs hold the running mean of the loss over the epoch; the
    callback recovers each batch's loss from two consecutive means
    (`k * mean_k - (k - 1) * mean_(k-1)`), which is exact when the batches
    have the same size (the last, smaller batch of an epoch is approximate).
    With `steps_per_execution = N` it gets one point per N steps: the mean
    loss of those N batches, at the rate of the last one.

    Reference: Leslie N. Smith, "Cyclical Learning Rates for Training Neural
    Networks", 2017 (https://arxiv.org/abs/1506.01186).

    Args:
        min_learning_rate: the first rate of the sweep (> 0).
        max_learning_rate: the last rate of the sweep (> min_learning_rate).
        steps: the number of optimizer steps of the sweep (>= 2).
        stop_factor: stop when the smoothed loss exceeds this many times the
            best smoothed loss (> 1).

    Attributes:
        result: the `LRFinderResult` of the latest `fit()` (None before).

    Raises:
        ValueError: for an argument out of range (named in the message), or at
            the start of `fit()` when the optimizer's rate is a schedule.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    >>> y = x @ np.ones((4, 1), "float32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(), "mse")
    >>> finder = kdt.callbacks.LearningRateFinder(1e-4, 10.0, steps=32)
    >>> _ = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[finder])
    >>> len(finder.result.learning_rates) <= 32
    True
    >>> 1e-4 <= finder.result.suggestion <= 10.0
    True
    """

    def __init__(
        self,
        min_learning_rate: float = 1e-7,
        max_learning_rate: float = 10.0,
        steps: int = 100,
        stop_factor: float = 4.0,
    ) -> None:
        super().__init__()
        self.min_learning_rate = check_positive("min_learning_rate", min_learning_rate)
        self.max_learning_rate = check_positive("max_learning_rate", max_learning_rate)
        if self.max_learning_rate <= self.min_learning_rate:
            raise invalid_values(
                ("min_learning_rate", "max_learning_rate"),
                "min_learning_rate < max_learning_rate",
                min_learning_rate=min_learning_rate,
                max_learning_rate=max_learning_rate,
            )
        self.steps = check_int("steps", steps, low=2)
        self.stop_factor = check_float(
            "stop_factor", stop_factor, low=1.0, low_inclusive=False
        )
        self.result: LRFinderResult | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.check_sole_rate_owner()
        owner = type(self).__name__
        leaves, scales = _installation.leaves_and_scales(self.model, owner)
        optimizer = self.model.optimizer
        # Slots created during the sweep must be restored too: build first.
        if not optimizer.built:
            with strategy_scope(self.model):
                optimizer.build(self.model.trainable_variables)
        self._saved = [
            (variable, ops.convert_to_numpy(variable))
            for variable in _unique([*self.model.variables, *optimizer.variables])
        ]
        self._first_step = int(ops.convert_to_numpy(optimizer.iterations))
        self._sweep = _Sweep(
            self.min_learning_rate, self.max_learning_rate, self.steps, self._first_step
        )
        self._rates: list[float] = []
        self._raw: list[float] = []
        self._smoothed: list[float] = []
        self._average = 0.0
        self._best = math.inf
        self.open_scope(self._restore)
        for leaf, scale in zip(leaves, scales, strict=True):
            _installation.install(
                leaf, iterations=optimizer.iterations, schedule=self._sweep, scale=scale
            )
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        # Keras's running mean of the loss starts again with every epoch.
        self._previous = (0, 0.0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not logs or "loss" not in logs:
            return
        count, mean = batch + 1, float(logs["loss"])
        previous_count, previous_mean = self._previous
        self._previous = (count, mean)
        loss = (count * mean - previous_count * previous_mean) / (
            count - previous_count
        )
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
        self._rates.append(float(ops.convert_to_numpy(self._sweep.rate(step))))
        self._raw.append(loss)
        if not math.isfinite(loss):
            self._smoothed.append(math.nan)
            self.model.stop_training = True
            return
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING ** len(self._raw))
        self._smoothed.append(smoothed)
        self._best = min(self._best, smoothed)
        if smoothed > self.stop_factor * self._best:
            self.model.stop_training = True
        if step - self._first_step + 1 >= self.steps:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close_scope()
        self.result = self._result()

    def _restore(self, model: keras.Model) -> None:
        """Puts back every weight and optimizer variable, and the plain rate."""
        for leaf in _installation.leaf_optimizers(model.optimizer):
            _installation.remove(leaf)
        for variable, value in self._saved:
            variable.assign(value)
        self._saved = []
        model.make_train_function(force=True)

    def _result(self) -> LRFinderResult:
        rates = np.asarray(self._rates, dtype="float64")
        smoothed = np.asarray(self._smoothed, dtype="float64")
        raw = np.asarray(self._raw, dtype="float64")
        finite = np.isfinite(smoothed)
        if finite.any():
            kept = np.flatnonzero(finite)
            suggestion = float(rates[kept[valley(smoothed[kept])]])
        else:
            suggestion = self.min_learning_rate
        return LRFinderResult(rates, smoothed, raw, suggestion)


def _unique(variables: list) -> list:
    seen: set[int] = set()
    return [v for v in variables if not (id(v) in seen or seen.add(id(v)))]


@public("callbacks")
def find_learning_rate(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 32,
    min_learning_rate: float = 1e-7,
    max_learning_rate: float = 10.0,
    steps: int = 100,
) -> LRFinderResult:
    """Runs a learning-rate sweep on a compiled model and suggests a rate.

    Trains `model` for up to `steps` batches of `x` (and `y`) while the rate
    grows exponentially from `min_learning_rate` to `max_learning_rate`
    (see `kdt.callbacks.LearningRateFinder`), stopping early when the
    smoothed loss diverges (4 times the best) or is not finite. Afterwards the
    model's weights and the optimizer's variables (`iterations` included) are
    exactly as before the call (an optimizer built by the call itself stays
    built, with its initial values).

    The suggestion is fastai's "valley": the rate 1/2 of the way down the
    longest decreasing stretch of the smoothed loss curve. We chose it over
    the steepest descent (the minimum of the curve's slope) because the slope
    of a noisy, smoothed curve is itself noisy: a single lucky batch can make
    the steepest point jump by an order of magnitude, while the longest
    descent is a property of the whole curve. fastai's benchmarks found the
    valley the most reliable of its suggestion rules; like them, it lands
    before the minimum, where the loss still falls fast.

    Args:
        model: a compiled Keras model (a float learning rate, not a schedule).
        x: inputs, as for `model.fit` (arrays, a `tf.data.Dataset`, ...).
        y: targets, as for `model.fit`.
        batch_size: batch size when `x` is an array.
        min_learning_rate: the first rate (> 0).
        max_learning_rate: the last rate (> min_learning_rate).
        steps: the number of batches of the sweep (>= 2).

    Returns:
        An `LRFinderResult` with `.learning_rates`, `.losses` (smoothed),
        `.raw_losses`, `.suggestion` and `.plot(ax=None)`.

    Raises:
        ValueError: if an argument is out of range, the model is not
            compiled, or its learning rate is a schedule.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(512, 4)).astype("float32")
    >>> y = x @ np.ones((4, 1), "float32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(), "mse")
    >>> before = model.get_weights()
    >>> result = kdt.find_learning_rate(model, x, y, batch_size=16, steps=32,
    ...                                 min_learning_rate=1e-4)
    >>> all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    True
    >>> 1e-4 <= result.suggestion <= 10.0
    True
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    finder = LearningRateFinder(min_learning_rate, max_learning_rate, steps)
    if not isinstance(model, keras.Model):
        raise invalid_type("model", "a compiled keras.Model", model)
    if getattr(model, "optimizer", None) is None or not getattr(
        model, "compiled", True
    ):
        raise ValueError(
            "Invalid value for argument `model`: expected a compiled Keras model "
            "(call `model.compile(optimizer=..., loss=...)` first). "
            f"Received: model={model!r}, which is not compiled."
        )
    check_fit_data(model, x, y)
    per_epoch = steps_per_epoch(x, batch_size)
    if per_epoch is None:
        fit_arguments = dict(epochs=1, steps_per_epoch=steps)
    else:
        fit_arguments = dict(epochs=math.ceil(steps / per_epoch))
    if isinstance(x, (np.ndarray, list, tuple, dict)) or hasattr(x, "shape"):
        fit_arguments.update(batch_size=batch_size, shuffle=True)
    else:  # a dataset or generator batches (and shuffles) itself
        fit_arguments.update(shuffle=False)
    try:
        model.fit(x, y, verbose=0, callbacks=[finder], **fit_arguments)
    finally:
        # Restores the model at once also when fit() raised (bad data midway,
        # KeyboardInterrupt): the exception reaches the caller afterwards.
        finder.close_scope()
    return finder.result
