"""What every schedule shares: call the pure function, keep a complete config."""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np

from keras_dnntools._validation import (
    as_numeric_array,
    check_float,
    check_int,
    check_positive,
    check_rates_finite,
    invalid_type,
    is_integer,
)


def check_step(step: Any) -> Any:
    """A step is a number >= 0, an array of them, or a tensor (unchecked)."""
    if isinstance(step, np.ndarray) and step.ndim > 0:
        as_numeric_array("step", step)
        return step
    if isinstance(step, (numbers.Number, np.generic, np.ndarray)) or step is None:
        if is_integer(step):  # kept an int: steps past 2**53 stay exact
            return check_int("step", step, low=0)
        # Beyond int64 no optimizer counts: a float that large is garbage.
        return check_float("step", step, low=0.0, high=2.0**63, float32=False)
    if not (hasattr(step, "shape") and hasattr(step, "dtype")):  # not a tensor
        raise invalid_type("step", "a number >= 0, an array or a tensor", step)
    return step


def check_initial_rate(value: Any) -> float:
    """An `initial_learning_rate`: positive, finite and non-zero in float32."""
    value = check_positive("initial_learning_rate", value)
    check_rates_finite(("initial_learning_rate",), value, initial_learning_rate=value)
    return value


class FunctionalSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A `LearningRateSchedule` whose value is a pure function of the step.

    Subclasses store their (validated, JSON-able) arguments with
    `_set_arguments` and implement `_value(step)` with the functions of
    `keras_dnntools.schedules._functional`. The config is those arguments plus
    `name`, so `from_config(get_config())` rebuilds an equal schedule.
    """

    def _set_arguments(self, name: str | None, **arguments: Any) -> None:
        if name is not None and not isinstance(name, str):
            raise invalid_type("name", "a string or None", name)
        self._arguments = arguments
        self.name = name or type(self).__name__
        for key, value in arguments.items():
            setattr(self, key, value)

    def _value(self, step: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, step: Any) -> Any:
        step = check_step(step)
        with keras.name_scope(self.name):
            return self._value(step)

    def get_config(self) -> dict[str, Any]:
        config = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in self._arguments.items()
        }
        config["name"] = self.name
        return config

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self._arguments.items())
        return f"{type(self).__name__}({arguments})"
