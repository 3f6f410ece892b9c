"""What every schedule shares: call the pure function, keep a complete config."""

from __future__ import annotations

from typing import Any

import keras

from keras_dnntools._validation import invalid_type


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
