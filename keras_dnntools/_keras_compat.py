"""Every private Keras contact of keras_dnntools, each commented and tested.

`tests/test_keras_compat.py` fails when Keras changes under one of these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# ---------------------------------------------------------------------------
# Train-step instrumentation (kdt.callbacks.TrainingMonitor, issue 12)
# ---------------------------------------------------------------------------
# Keras has no public hook inside the compiled train step. Every trainer
# (TensorFlow, JAX, torch) builds `model.train_function` from the attribute
# `model.train_step` in `make_train_function`, and calls `model.train_function`
# once per execution, right after `callbacks.on_train_batch_begin`. We shadow
# both `train_step` and `make_train_function` with instance attributes and wrap
# `train_function` in a guard. Nothing else of the model changes.
#
# Keras runs no callback after a `fit()` that raised, so the installation
# removes itself: the guard asks `is_live()` (the callback's per-batch
# handshake) at every call, and `make_train_function` asks `is_live()`; the first
# call outside the monitored fit (a later `fit`, `train_on_batch`) uninstalls
# everything and rebuilds a plain train function before running.

_PATCHED = ("train_step", "make_train_function", "train_function")


def _set(model: Any, name: str, value: Any) -> None:
    # object.__setattr__: a plain instance attribute, invisible to Keras's
    # layer tracking (and to torch.nn.Module's parameter registration).
    object.__setattr__(model, name, value)


def _guard(model: Any, handshake: Callable[[], bool]) -> None:
    inner = model.train_function

    def train_function(*args, **kwargs):
        if not handshake():
            uninstall_train_step(model)
            model.make_train_function()
            return model.train_function(*args, **kwargs)
        return inner(*args, **kwargs)

    train_function._kdt_instrumented = True
    _set(model, "train_function", train_function)


def install_train_step(
    model: Any,
    make_step: Callable[[Callable], Callable],
    is_live: Callable[[], bool],
    handshake: Callable[[], bool],
) -> None:
    """Trains ``model`` with ``make_step(train_step)`` while ``is_live()``.

    Args:
        model: a compiled Keras model whose `fit` is in progress (call this
            from `on_train_begin`).
        make_step: builds the instrumented step from the current one (which
            it must call).
        is_live: True until the monitored `fit` ended; once False, the next
            `make_train_function` uninstalls the instrumentation first.
        handshake: called at every call of the train function: True when the
            monitored fit's callback announced this call (from
            `on_train_batch_begin`); once False, the instrumentation is
            uninstalled before the call runs (a later fit, `train_on_batch`).
    """
    uninstall_train_step(model)
    original = model.train_step
    _set(model, "train_step", make_step(original))
    plain_make = type(model).make_train_function

    def make_train_function(force=False):
        if not is_live():
            uninstall_train_step(model)
            return model.make_train_function(force)
        plain_make(model, force=force)
        if not getattr(model.train_function, "_kdt_instrumented", False):
            _guard(model, handshake)
        return model.train_function

    _set(model, "make_train_function", make_train_function)
    model.make_train_function(force=True)


def uninstall_train_step(model: Any) -> None:
    """Removes the instrumentation (a no-op when none is installed)."""
    if "train_step" not in vars(model) and "make_train_function" not in vars(model):
        return
    for name in _PATCHED[:2]:
        vars(model).pop(name, None)
    # Rebuilt lazily from the class's train step by the next fit.
    _set(model, "train_function", None)


def is_instrumented(model: Any) -> bool:
    """Whether `install_train_step` is in force on ``model``."""
    return "train_step" in vars(model)
