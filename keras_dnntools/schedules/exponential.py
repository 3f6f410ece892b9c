"""Exponential scheduling: `lr0 * decay_rate ** (t / decay_steps)`."""

from __future__ import annotations

from typing import Any

from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_float,
    check_positive,
)
from keras_dnntools.schedules import _functional
from keras_dnntools.schedules._base import FunctionalSchedule, check_initial_rate


@public("schedules", serializable=True)
class ExponentialSchedule(FunctionalSchedule):
    """Exponential scheduling: the rate falls by `decay_rate` every `decay_steps`.

    At step `t` the rate is
    `initial_learning_rate * decay_rate ** (t / decay_steps)`, a smooth decay
    (the same values as `keras.optimizers.schedules.ExponentialDecay` without
    `staircase`); the book's default divides the rate by 10 every
    `decay_steps` steps.

    Args:
        initial_learning_rate: the rate at step 0 (> 0).
        decay_steps: the step scale s (> 0).
        decay_rate: the factor applied every `decay_steps` steps, in (0, 1].
        name: the schedule's name (defaults to the class name).

    Call arguments:
        step: the optimizer step (an integer or a scalar tensor).

    Returns:
        The learning rate at `step`, a float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range (the message names it).
        TypeError: if an argument is not a number.

    Example:

    >>> schedule = kdt.schedules.ExponentialSchedule(0.01, decay_steps=100)
    >>> round(float(schedule(100)), 6), round(float(schedule(200)), 6)
    (0.001, 0.0001)
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        decay_rate: float = 0.1,
        name: str | None = None,
    ) -> None:
        super().__init__()
        initial_learning_rate = check_initial_rate(initial_learning_rate)
        self._set_arguments(
            name,
            initial_learning_rate=initial_learning_rate,
            decay_steps=check_positive("decay_steps", decay_steps),
            decay_rate=check_float(
                "decay_rate", decay_rate, low=0.0, high=1.0, low_inclusive=False
            ),
        )

    def _value(self, step: Any) -> Any:
        return _functional.exponential_decay(step, **self._arguments)
