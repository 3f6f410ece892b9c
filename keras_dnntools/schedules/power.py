"""Power scheduling: `lr0 / (1 + t / decay_steps) ** power`."""

from __future__ import annotations

from typing import Any

from keras_dnntools._registry import public
from keras_dnntools._validation import check_positive
from keras_dnntools.schedules import _functional
from keras_dnntools.schedules._base import FunctionalSchedule, check_initial_rate


@public("schedules", serializable=True)
class PowerSchedule(FunctionalSchedule):
    """Power scheduling: the rate decays as `(1 + t / decay_steps) ** -power`.

    At step `t` the rate is
    `initial_learning_rate / (1 + t / decay_steps) ** power`: it halves after
    `decay_steps` steps when `power=1`, then falls ever more slowly. With
    `power=1` this is `keras.optimizers.schedules.InverseTimeDecay` with
    `decay_rate=1`; `power` is the exponent c of the book's power scheduling.

    Args:
        initial_learning_rate: the rate at step 0 (> 0).
        decay_steps: the step scale s (> 0).
        power: the exponent c (> 0).
        name: the schedule's name (defaults to the class name).

    Call arguments:
        step: the optimizer step (an integer or a scalar tensor).

    Returns:
        The learning rate at `step`, a float32 scalar tensor.

    Raises:
        ValueError: if an argument is not positive (the message names it).
        TypeError: if an argument is not a number.

    Example:

    >>> schedule = kdt.schedules.PowerSchedule(0.01, decay_steps=100, power=1.0)
    >>> round(float(schedule(100)), 6)
    0.005
    >>> round(float(kdt.schedules.PowerSchedule(0.01, 100, power=2.0)(100)), 6)
    0.0025
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        power: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        initial_learning_rate = check_initial_rate(initial_learning_rate)
        self._set_arguments(
            name,
            initial_learning_rate=initial_learning_rate,
            decay_steps=check_positive("decay_steps", decay_steps),
            power=check_positive("power", power),
        )

    def _value(self, step: Any) -> Any:
        return _functional.power_decay(step, **self._arguments)
