"""Every place where keras_dnntools reaches past Keras's public API.

Keras gives no public route for a few things this package must do; each such
contact lives here, with a comment that says why, and
``tests/test_keras_compat.py`` fails when a Keras release changes what it
relies on. Everything else in the package uses public Keras API only.

How callbacks own their state (the design, in short)
----------------------------------------------------
A callback that drives an optimizer for one ``fit()`` call (a scheduler, the
learning-rate finder) installs objects it owns: a ``LearningRateSchedule`` in
place of the optimizer's rate, a variable in place of SGD's ``momentum`` /
Adam's ``beta_1``, an optimizer ``get_config`` that reports plain floats.
What it installed is recorded in a *fit scope*
(``keras_dnntools.callbacks._fit_scope``) together with its undo. Keras's
``fit`` has no ``finally`` on TensorFlow and torch and calls no callback hook
after an exception, so a scope is closed by whichever comes first:

1. ``on_train_end`` (a ``fit()`` that finished, early stopping included);
2. the release of the ``fit()`` call's ``CallbackList`` (``weakref.finalize``):
   when ``fit()`` raised and the exception has been handled, Python frees the
   call's frames, and the scope closes at once;
3. a guard on the model: the next ``fit``, ``evaluate``, ``predict``,
   ``*_on_batch``, ``save`` or ``save_weights`` of that model (the
   ``make_*_function``, ``save`` and ``save_weights`` the model looks up on its
   instance) closes every scope left open by a ``fit()`` that is no longer
   running, before it does anything. This covers an exception that is still
   held (an interactive session keeps the last traceback, and with it the
   frames).

The guards are instance attributes that shadow the model's methods and remove
themselves when the scope closes: nothing stays on the model after that. A
direct call ``model(x)`` after a ``fit()`` that raised and before any of those
methods sees the interrupted state; :func:`keras_dnntools.callbacks.release`
closes the scopes explicitly.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import keras

# --------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------


def learning_rate_holder(optimizer: Any) -> Any:
    """The object the optimizer evaluates as its rate: a variable or a schedule.

    The public ``optimizer.learning_rate`` evaluates a schedule at the current
    step, so it cannot tell which one is installed.
    """
    return optimizer._learning_rate


def swap_learning_rate_holder(optimizer: Any, value: Any) -> None:
    """Sets the object the optimizer evaluates as its rate, tracking nothing.

    The public setter (``optimizer.learning_rate = schedule``) untracks the
    rate variable (renumbering ``optimizer.variables``, which breaks a
    ``BackupAndRestore`` checkpoint taken mid-run) and cannot go back from a
    schedule to a float.
    """
    optimizer._learning_rate = value


def set_untracked_attribute(obj: Any, name: str, value: Any) -> None:
    """Sets an attribute without Keras's automatic variable tracking.

    A variable standing in for SGD's ``momentum`` must not join
    ``optimizer.variables`` (it would change the checkpoint layout).
    """
    object.__setattr__(obj, name, value)


def remove_instance_attribute(obj: Any, name: str) -> None:
    """Removes an instance attribute set by :func:`set_untracked_attribute`."""
    obj.__dict__.pop(name, None)


def built_variables(optimizer: Any) -> list:
    """The model variables an optimizer was built for (empty when unbuilt)."""
    if not optimizer.built:
        return []
    return list(optimizer._trainable_variables)


def tracked_variables(optimizer: Any) -> list:
    """Every variable the optimizer tracks, in creation order.

    ``optimizer.variables`` is the same list; this one is the list Keras
    appends to, whose order says which variables ``build`` created last.
    """
    return list(optimizer._variables)


def untrack_variable(optimizer: Any, variable: Any) -> None:
    """Drops a slot variable from the optimizer (before it is built again)."""
    optimizer._untrack_variable(variable)


def reset_variable_index(optimizer: Any) -> None:
    """Forgets the variable -> slot index table, so ``build`` can run again."""
    optimizer._trainable_variables_indices = {}


def sub_optimizer_for(multi_optimizer: Any, variable: Any) -> Any:
    """The sub-optimizer of a ``MultiOptimizer`` that updates ``variable``."""
    return multi_optimizer._optimizer_map(variable)


# --------------------------------------------------------------------------
# Layers and models
# --------------------------------------------------------------------------


def flatten_layers(layer: Any) -> list:
    """Every layer inside ``layer``, itself included, at any depth.

    ``layer.layers`` lists only the direct children of a model, and plain
    layers (``TimeDistributed``, custom layers) have no public listing of the
    layers they hold.
    """
    return list(layer._flatten_layers(include_self=True, recursive=True))


def mark_trainable_state_compiled(model: Any) -> None:
    """Records the model's current ``trainable`` flags as the compiled ones.

    Keras warns at the next ``evaluate()`` when ``trainable`` changed since
    ``compile()``. A callback that rebuilt the train step and the optimizer for
    the new flags records them, so that the warning keeps its meaning.
    """
    if hasattr(model, "_compiled_trainable_state"):
        model._compiled_trainable_state = {
            layer: layer.trainable for layer in model._flatten_layers()
        }


def compiled_trainable_state(model: Any) -> dict | None:
    """The ``trainable`` flags of each layer at ``compile()`` (None if unknown)."""
    return getattr(model, "_compiled_trainable_state", None)


# --------------------------------------------------------------------------
# fit() in progress
# --------------------------------------------------------------------------


def running_callback_list() -> Any:
    """The ``CallbackList`` whose hook is running now, found on the call stack.

    A callback is given its model and params, never the list it belongs to;
    the list is the ``self`` of the ``CallbackList`` method that calls it.
    """
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self") if _is_method_frame(frame) else None
        if isinstance(candidate, keras.callbacks.CallbackList):
            return candidate
        frame = frame.f_back
    return None


def fit_in_progress(model: Any, callback_list: Any = None) -> bool:
    """Whether a ``model.fit(...)`` call is on the call stack now.

    With ``callback_list``, only the ``fit()`` call that runs that
    ``CallbackList`` counts: every trainer's ``fit`` keeps it in its local
    ``callbacks``.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
            if callback_list is None or frame.f_locals.get("callbacks") is (
                callback_list
            ):
                return True
        frame = frame.f_back
    return False


def _is_method_frame(frame: Any) -> bool:
    code = frame.f_code
    return code.co_argcount > 0 and code.co_varnames[:1] == ("self",)


# Methods a model looks up on its instance at the start of fit, evaluate,
# predict, *_on_batch, and save: a guard shadows them.
GUARDED_METHODS = (
    "make_train_function",
    "make_test_function",
    "make_predict_function",
    "save",
    "save_weights",
)


def shadow_method(obj: Any, name: str, replacement: Any) -> None:
    """Makes ``obj.name`` resolve to ``replacement`` (an instance attribute)."""
    object.__setattr__(obj, name, replacement)


def unshadow_method(obj: Any, name: str, previous: Any = None) -> None:
    """Undoes :func:`shadow_method`, restoring an earlier instance attribute."""
    if previous is None:
        obj.__dict__.pop(name, None)
    else:
        object.__setattr__(obj, name, previous)


def instance_attribute(obj: Any, name: str) -> Any:
    """An attribute set on the instance itself (not its class), or None."""
    return obj.__dict__.get(name)


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
# model -> the instance attributes install_train_step set.
_INSTALLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _set(model: Any, name: str, value: Any) -> None:
    # object.__setattr__: a plain instance attribute, invisible to Keras's
    # layer tracking (and to torch.nn.Module's parameter registration).
    object.__setattr__(model, name, value)


# What a handshake may answer besides True/False: this call is announced, and
# the plain train step will do (no step of this execution is instrumented).
PLAIN_STEP = "plain"


def _guard(model: Any, handshake: Callable[[], Any], plain: Any, route: list) -> None:
    inner = model.train_function

    def train_function(*args, **kwargs):
        announced = handshake()
        if not announced:
            uninstall_train_step(model)
            model.make_train_function()
            return model.train_function(*args, **kwargs)
        # `route` tells the shadowing train step which step to run (or trace:
        # the trainers trace `model.train_step` lazily, at a function's first
        # call).
        route[0] = announced == PLAIN_STEP
        return (plain if route[0] else inner)(*args, **kwargs)

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
            `on_train_batch_begin`), `PLAIN_STEP` when it announced a call
            that needs no instrumented step (the plain train function, built
            from the original step, runs it); once False, the instrumentation
            is uninstalled before the call runs (a later fit,
            `train_on_batch`).
    """
    uninstall_train_step(model)
    # A fit scope's guard may already shadow make_train_function: chain to it,
    # and put it back when uninstalled.
    previous_make = vars(model).get("make_train_function")
    original = model.train_step
    instrumented = make_step(original)
    route = [False]  # True: the plain step

    def train_step(*args, **kwargs):
        return (original if route[0] else instrumented)(*args, **kwargs)

    _set(model, "train_step", train_step)
    plain_make = type(model).make_train_function

    def make_train_function(force=False):
        if not is_live():
            uninstall_train_step(model)
            return model.make_train_function(force)
        if not force and getattr(
            vars(model).get("train_function"), "_kdt_instrumented", False
        ):
            return model.train_function
        # Two train functions: the executions that log nothing run the plain
        # one and pay nothing for the instrumentation. The JAX trainer jits
        # `model.train_step` as it is now (its trace cache is keyed by that
        # function): the plain one is made from the original step itself.
        _set(model, "train_step", original)
        try:
            plain_make(model, force=True)
            plain = model.train_function
        finally:
            _set(model, "train_step", train_step)
        plain_make(model, force=True)
        _guard(model, handshake, plain, route)
        return model.train_function

    _set(model, "make_train_function", make_train_function)
    _INSTALLED[model] = {
        "train_step": vars(model)["train_step"],
        "make_train_function": make_train_function,
        "previous_make": previous_make,
    }
    model.make_train_function(force=True)


def uninstall_train_step(model: Any) -> None:
    """Removes the instrumentation (a no-op when none is installed).

    Only what `install_train_step` set is removed: a guard of a fit scope
    (`keras_dnntools.callbacks._fit_scope`) on `make_train_function` stays.
    """
    ours = _INSTALLED.pop(model, None)
    if ours is None:
        return
    for name in _PATCHED[:2]:
        if vars(model).get(name) is ours.get(name):
            vars(model).pop(name, None)
    if ours["previous_make"] is not None and "make_train_function" not in vars(model):
        _set(model, "make_train_function", ours["previous_make"])
    # Rebuilt lazily from the class's train step by the next fit.
    _set(model, "train_function", None)


def is_instrumented(model: Any) -> bool:
    """Whether `install_train_step` is in force on ``model``."""
    return "train_step" in vars(model)


# -- kdt.uncertainty: running a model layer by layer (mc_predict) ------------------
#
# mc_predict runs a model with every layer in inference mode except dropout, and
# runs the part of the model in front of the first dropout layer only once.
# Both need the model's layer graph, which Keras keeps private.


def functional_class() -> type:
    """`keras.src.models.functional.Functional`: public only as `keras.Model`.

    Needed to tell a graph-built model (whose nodes we can walk) from a
    subclassed `keras.Model` (whose `call` is opaque).
    """
    from keras.src.models.functional import Functional

    return Functional


def ordered_nodes(model: Any) -> list:
    """A functional model's nodes, inputs first (`Functional._nodes_by_depth`).

    The same order as `Functional.call` runs them in.
    """
    nodes_by_depth = model._nodes_by_depth
    ordered = []
    for depth in sorted(nodes_by_depth, reverse=True):
        ordered.extend(nodes_by_depth[depth])
    return ordered


def node_call_arguments(node: Any, values: dict) -> tuple[tuple, dict]:
    """The ``(args, kwargs)`` of a node's call with its inputs replaced.

    `values` maps ``id(keras_tensor)`` to the value to use (as
    `Functional.call` does with `node.arguments.fill_in`).
    """
    return node.arguments.fill_in(values)


def call_context_args(layer: Any) -> set:
    """The call-context arguments (``training``...) a layer's `call` accepts.

    Keras decides from `Layer._call_context_args` whether to pass `training`.
    """
    return set(getattr(layer, "_call_context_args", ()))


def sublayers(layer: Any) -> list:
    """Every layer under `layer`, recursively (`Layer._flatten_layers`).

    Public `Model.layers` lists only the first level, and plain layers have no
    public listing of their sublayers at all.
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return list(flatten(include_self=False, recursive=True))


def standardize_inputs(model: Any, inputs: Any) -> list:
    """A functional model's inputs as a flat list in `model.inputs` order.

    `Functional._standardize_inputs` maps dicts by input name and lists by
    position, as `model(inputs)` does.
    """
    return model._standardize_inputs(inputs)


def get_keras_mask(tensor: Any) -> Any:
    """The Keras mask carried by a tensor (no public getter)."""
    from keras.src.backend.common.masking import get_keras_mask as get_mask

    return get_mask(tensor)


def set_keras_mask(tensor: Any, mask: Any) -> None:
    """Attaches a Keras mask to a tensor (as Keras's own layers do)."""
    from keras.src.backend.common.masking import set_keras_mask as set_mask

    set_mask(tensor, mask)


@contextlib.contextmanager
def routed_calls(
    layers: list, route: Callable[[Any, Any], Any], *, describe: str
) -> Iterator[None]:
    """Routes ``layer.call(inputs, ...)`` to ``route(layer, inputs)`` for a while.

    Used by mc_predict only for dropout layers inside a layer it cannot look
    into (a subclassed layer or model): Keras has no public way to run such a
    layer with its dropout sublayers active and its other sublayers (e.g.
    BatchNormalization) in inference mode. The instance attribute is removed
    again on exit, also on errors.
    """
    patched = []
    try:
        for layer in layers:
            if "call" in vars(layer):
                raise RuntimeError(
                    f"Cannot {describe} layer {layer.name!r}: its `call` is "
                    "already replaced on the instance."
                )

            def call(inputs, *args, _layer=layer, **kwargs):
                del args, kwargs  # `training` and friends: routed regardless.
                return route(_layer, inputs)

            object.__setattr__(layer, "call", call)
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


# ---------------------------------------------------------------------------
# Layer call context (issue 13: `kdt.activations.rrelu` used as an activation)
# ---------------------------------------------------------------------------


def training_in_layer_call() -> bool | None:
    """The `training` flag of the Keras layer call now running, else None.

    Why: a function passed as `Dense(activation=...)` is called without
    `training`; only the layer call context Keras keeps while `fit()` runs a
    model (`keras.src.layers.layer.CallContext`, stored as the global attribute
    `"current_call_ctx"`) says whether this is a training step. Keras has no
    public accessor for it. Used to refuse `rrelu` as an activation in
    training, where it would silently train as a plain leaky ReLU.
    """
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    if context is None:
        return None
    training = context.get_value("training")
    return None if training is None else bool(training)
