"""What a callback changed on a model for one `fit()` call, and its undo.

A callback that installs anything on a model or its optimizer opens a
`FitScope` with the undo. The scope closes exactly once, on the first of:
the callback's `on_train_end`; the release of the `fit()` call's
`CallbackList` (a `fit()` that raised, once its exception is handled); the
next `fit`, `evaluate`, `predict`, `*_on_batch`, `save` or `save_weights` of
the model while no `fit()` of it is running; or `release(model)`. See
`keras_dnntools._keras_compat` for why these are the routes Keras leaves.
"""

from __future__ import annotations

import functools
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import keras

from keras_dnntools import _keras_compat
from keras_dnntools._registry import public
from keras_dnntools._validation import invalid_type

# model -> the scopes open on it, oldest first.
_open_scopes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# model -> {method name: the instance attribute the guard replaced (or None)}.
_guards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class FitScope:
    """One callback's changes to one model, for one `fit()` call."""

    def __init__(self, model: Any, owner: Any, undo: Callable[[], None]) -> None:
        self.model_ref = weakref.ref(model)
        self.owner = owner
        self._undo: Callable[[], None] | None = undo
        self._finalizer: Any = None
        self._callback_list_ref: Any = None
        self._thread = threading.get_ident()  # the thread that runs the fit()

    def fit_running(self) -> bool:
        """Whether the `fit()` call that opened this scope is still running."""
        model = self.model_ref()
        if model is None:
            return False
        if self._callback_list_ref is None:  # opened outside a CallbackList
            return _keras_compat.fit_in_progress(model)
        callback_list = self._callback_list_ref()
        if callback_list is None:
            return False
        return _keras_compat.fit_in_progress(model, callback_list)

    @property
    def closed(self) -> bool:
        return self._undo is None

    def close(self) -> None:
        """Runs the undo (once) and forgets the scope."""
        undo, self._undo = self._undo, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        model = self.model_ref()
        if model is not None:
            scopes = _open_scopes.get(model, [])
            if self in scopes:
                scopes.remove(self)
            if not scopes:
                _open_scopes.pop(model, None)
                _remove_guards(model)
        if undo is not None:
            undo()


def open_scope(model: Any, owner: Any, undo: Callable[[], None]) -> FitScope:
    """Records `undo` for what `owner` installed on `model` in the running fit."""
    scope = FitScope(model, owner, undo)
    callback_list = _keras_compat.running_callback_list()
    if callback_list is not None:
        scope._callback_list_ref = weakref.ref(callback_list)
        scope._finalizer = weakref.finalize(callback_list, _close_later, scope)
    _open_scopes.setdefault(model, []).append(scope)
    _install_guards(model)
    return scope


def open_scopes(model: Any) -> list[FitScope]:
    """The scopes open on `model`, oldest first."""
    return list(_open_scopes.get(model, []))


@public("callbacks")
def release(model: keras.Model) -> int:
    """Undoes at once what `kdt.callbacks` left installed by a `fit()` that raised.

    Keras runs no callback hook after an exception in `fit()`, so a scheduler
    or `LearningRateFinder` of a `fit()` that raised cannot clean up in
    `on_train_end`. keras_dnntools undoes what it installed on the first of:
    the end of `fit()`; the moment the failed `fit()`'s frames are freed (a
    handled exception: at once); the next `fit`, `evaluate`, `predict`,
    `*_on_batch`, `save` or `save_weights` of the model. Between a `fit()`
    that raised (its exception still held, as an interactive session does)
    and those calls, a direct `model(x)` sees the interrupted state: call
    `release(model)` first. After it, the optimizer has its plain float rate
    (and momentum), the value of the last step taken, and an interrupted
    `LearningRateFinder` has put back every weight and optimizer variable.

    Args:
        model: the Keras model that was being trained.

    Returns:
        The number of interrupted installations undone (0 when none).

    Raises:
        TypeError: if `model` is not a `keras.Model`.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(momentum=0.9), "mse")
    >>> kdt.callbacks.release(model)
    0
    """
    if not isinstance(model, keras.Model):
        raise invalid_type("model", "a keras.Model", model)
    return _release(model)


def _close_later(scope: FitScope) -> None:
    # Runs when the CallbackList of a fit() that raised is freed: the frames
    # of that call are gone, so no fit() of the scope's is running. Python
    # frees it when the exception is handled (user code: close now), or in
    # a garbage collection that may run anywhere, even while Keras traces a
    # function or in a data-loading worker thread (PyDataset's pool): then
    # the model's guard closes the scope at its next call, in the fit's thread.
    if (
        scope.model_ref() is None
        or threading.get_ident() != scope._thread
        or _called_from_framework()
    ):
        return
    scope.close()


FRAMEWORK_MODULES = ("keras.", "tensorflow", "jax", "torch", "optree")


def _called_from_framework() -> bool:
    """Whether a Keras or backend frame is on the stack (e.g. mid-trace)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith(FRAMEWORK_MODULES):
            return True
        frame = frame.f_back
    return False


def _install_guards(model: Any) -> None:
    if model in _guards:
        return
    replaced = {}
    for name in _keras_compat.GUARDED_METHODS:
        previous = _keras_compat.instance_attribute(model, name)
        replaced[name] = previous
        _keras_compat.shadow_method(model, name, _guarded(model, name, previous))
    _guards[model] = replaced


def _remove_guards(model: Any) -> None:
    replaced = _guards.pop(model, None)
    if replaced is None:
        return
    for name, previous in replaced.items():
        current = _keras_compat.instance_attribute(model, name)
        if getattr(current, "__keras_dnntools_guard__", False):
            _keras_compat.unshadow_method(model, name, previous)
        # Else another installation replaced or removed the guard since: it
        # manages that attribute now.


def _guarded(model: Any, name: str, previous: Any) -> Callable:
    model_ref = weakref.ref(model)
    method = previous if previous is not None else getattr(type(model), name)

    @functools.wraps(method)
    def guard(*args: Any, **kwargs: Any) -> Any:
        owner = model_ref()
        if owner is None:  # pragma: no cover - the model owns the guard
            raise ReferenceError("the model of this method is gone")
        _close_finished(owner)
        if owner not in _guards and (
            _keras_compat.instance_attribute(owner, name) is guard
        ):  # put back by another installation after its scopes closed
            _keras_compat.unshadow_method(owner, name, previous)
        if previous is not None:
            return previous(*args, **kwargs)
        return getattr(type(owner), name)(owner, *args, **kwargs)

    guard.__keras_dnntools_guard__ = True
    return guard


def _release(model: Any) -> int:
    """Closes every scope open on `model`, newest first; returns how many."""
    scopes = _open_scopes.pop(model, [])
    _remove_guards(model)
    for scope in reversed(scopes):
        scope.close()
    return len(scopes)


def _close_finished(model: Any) -> None:
    """Closes the scopes of `model` whose `fit()` call is no longer running."""
    for scope in reversed(open_scopes(model)):
        if not scope.fit_running():
            scope.close()
