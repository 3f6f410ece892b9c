"""Callbacks that set the learning rate: one per `fit()`, and owned state."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras

from keras_dnntools import _keras_compat
from keras_dnntools.callbacks import _fit_scope

# Keras's own callbacks that set the optimizer's learning rate during fit().
KERAS_RATE_SETTERS = (
    keras.callbacks.ReduceLROnPlateau,
    keras.callbacks.LearningRateScheduler,
)


def sets_learning_rate(callback: Any) -> bool:
    """Whether `callback` changes the optimizer's learning rate during `fit()`."""
    if isinstance(callback, KERAS_RATE_SETTERS):
        return True
    return bool(getattr(callback, "sets_learning_rate", False))


def check_sole_rate_owner(owner: Any) -> None:
    """Raises if another callback of the running `fit()` also sets the rate.

    Called from `on_train_begin`, before anything is changed: the first of
    two such callbacks raises, so `fit()` stops before its first step.
    """
    callback_list = _keras_compat.running_callback_list()
    if callback_list is None:
        return
    setters = [cb for cb in callback_list.callbacks if sets_learning_rate(cb)]
    if len(setters) > 1:
        names = ", ".join(type(cb).__name__ for cb in setters)
        raise ValueError(
            f"{type(owner).__name__}: more than one callback of this `fit()` sets "
            f"the learning rate ({names}); each would overwrite the others' "
            "rates. Pass only one of them to `fit()` (run "
            "`kdt.find_learning_rate` before `fit()`, not as a callback beside a "
            "scheduler)."
        )


class RateOwner(keras.callbacks.Callback):
    """A callback that installs state on the model for one `fit()` and owns it.

    Subclasses call `open_scope(undo)` once they have changed something, and
    `close_scope()` from `on_train_end`. `undo(model)` runs exactly once, also
    when `fit()` raised (see `keras_dnntools.callbacks._fit_scope`).
    """

    sets_learning_rate = True

    def __init__(self) -> None:
        super().__init__()
        self._scope: _fit_scope.FitScope | None = None

    def check_sole_rate_owner(self) -> None:
        check_sole_rate_owner(self)

    def open_scope(self, undo: Callable[[Any], None]) -> None:
        self.close_scope()
        model_ref = weakref.ref(self.model)

        def undo_if_alive() -> None:
            model = model_ref()
            if model is not None:
                undo(model)

        self._scope = _fit_scope.open_scope(self.model, self, undo_if_alive)

    def close_scope(self) -> None:
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.close()
