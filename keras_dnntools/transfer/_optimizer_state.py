"""Rebuilding a Keras optimizer in place over a new list of variables.

Keras 3 optimizers create their slots (momentums, velocities, ...) once, in
``build(variables)``, for the variables that were trainable at that moment, and
refuse to update any other variable ("Unknown variable ... recreate a new
optimizer instance"). ``MultiOptimizer`` is stricter still: every ``apply`` must
get exactly the variables it was built with. So before layers are unfrozen in
the middle of ``fit()``, the optimizer has to be rebuilt with slots for the
variables that will join (:func:`rebuild_in_place`), and a ``MultiOptimizer``
told which variables it now gets (:func:`dispatch_to`).

Replacing the optimizer with a new instance would break whatever holds on to
it (scheduler callbacks, the learning rate a callback has set, the step count
that schedules read), so :func:`rebuild_in_place` rebuilds the *same* object:
it drops the slot variables, builds again over the new list, and copies back
the state of every variable that was already being trained, so that only the
newly trainable variables start from fresh slots. The step counter
(``iterations``) and the learning rate are kept.

To know which slot belongs to which model variable, the old build is replayed
on a throw-away copy of the optimizer (same class and config) and both builds
are watched. A slot made by ``add_variable_from_reference`` (how every Keras
optimizer creates per-variable state) belongs to its reference variable.
Another variable created during the build is attached to the variable of the
next such slot (Adafactor makes its factored moments just before the
variable's ``velocity``), or, after the last one, counted as global state
(Nadam's ``u_product``), which is matched by position when the number of such
variables did not change. The new build lists the variables in the model's
order, as ``fit()`` does (EMA relies on it).

This needs Keras internals (the variables an optimizer was built for, its
variable index table, untracking a slot, the sub-optimizer map of a
``MultiOptimizer``); each goes through ``keras_dnntools._keras_compat``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import keras
import numpy as np

from keras_dnntools import _keras_compat


def rebuild_in_place(
    optimizer: keras.optimizers.Optimizer, variables: Sequence
) -> None:
    """Rebuilds ``optimizer`` over ``variables``, keeping what state it can."""
    if not optimizer.built:
        # fit() builds the optimizer lazily, at the first step, unless it had
        # to build the model first.
        optimizer.build(list(variables))
        return
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        rebuild_in_place(optimizer.inner_optimizer, variables)
        _reindex(optimizer, variables)
    elif isinstance(optimizer, keras.optimizers.MultiOptimizer):
        _rebuild_multi(optimizer, variables)
    else:
        _rebuild_single(optimizer, variables)


def slot_layout(optimizer: keras.optimizers.Optimizer) -> list[int]:
    """Ids of the variables the optimizer holds slots for, in build order."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return slot_layout(optimizer.inner_optimizer)
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return [i for sub in optimizer.optimizers for i in slot_layout(sub)]
    return [id(v) for v in built_variables(optimizer)]


def dispatch_to(optimizer: keras.optimizers.Optimizer, variables: Sequence) -> None:
    """Lets an optimizer with slots for a superset be applied to ``variables``.

    Plain optimizers accept any subset of the variables they were built for.
    A ``MultiOptimizer`` insists on exactly its build list, so its own table
    (variable -> sub-optimizer) is made again; the sub-optimizers, which hold
    the slots, are left as they are.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        dispatch_to(optimizer.inner_optimizer, variables)
        _reindex(optimizer, variables)
    elif isinstance(optimizer, keras.optimizers.MultiOptimizer):
        optimizer.built = False
        optimizer.build(list(variables))


def built_variables(optimizer: keras.optimizers.Optimizer) -> list:
    """The model variables ``optimizer`` was built for (empty when unbuilt)."""
    return _keras_compat.built_variables(optimizer)


def _reindex(optimizer: keras.optimizers.Optimizer, variables: Sequence) -> None:
    # The base-class part of ``build``: the variable -> index table only.
    _keras_compat.reset_variable_index(optimizer)
    keras.optimizers.Optimizer.build(optimizer, list(variables))


def _rebuild_multi(
    optimizer: keras.optimizers.MultiOptimizer, variables: Sequence
) -> None:
    mapping = {id(v): _keras_compat.sub_optimizer_for(optimizer, v) for v in variables}
    sub_optimizers = list(optimizer.optimizers)
    for sub_optimizer in mapping.values():
        if not any(sub_optimizer is known for known in sub_optimizers):
            sub_optimizers.append(sub_optimizer)
    for sub_optimizer in sub_optimizers:
        own = [v for v in variables if mapping[id(v)] is sub_optimizer]
        _rebuild_single(sub_optimizer, own)
    optimizer.built = False
    optimizer.build(list(variables))


def _rebuild_single(optimizer: keras.optimizers.Optimizer, variables: Sequence) -> None:
    variables = list(variables)
    if not optimizer.built:
        optimizer.build(variables)
        return
    old_variables = built_variables(optimizer)
    old_labels = _replayed_labels(optimizer, old_variables)
    # Build-time variables come after the ones made in __init__ (the step
    # counter, the rate variable), so they are the last ones tracked.
    tracked = _keras_compat.tracked_variables(optimizer)
    old_slots = tracked[len(tracked) - len(old_labels) :] if old_labels else []
    if (
        len(old_labels) >= len(tracked)
        or any(slot is optimizer.iterations for slot in old_slots)
        or any(
            tuple(slot.shape) != shape
            for slot, (_, shape) in zip(old_slots, old_labels, strict=True)
        )
    ):
        raise RuntimeError(
            f"Cannot rebuild optimizer {optimizer.name!r} "
            f"({type(optimizer).__name__}): replaying its build did not give "
            "the same variables. Recompile the model instead "
            "(kdt.transfer.recompile)."
        )
    saved = [
        (label, np.array(slot.numpy()))
        for slot, (label, _) in zip(old_slots, old_labels, strict=True)
    ]
    for slot in old_slots:
        _keras_compat.untrack_variable(optimizer, slot)
    _keras_compat.reset_variable_index(optimizer)
    optimizer.built = False
    with _watching(optimizer) as new_labels:
        optimizer.build(variables)
    new_slots = _keras_compat.tracked_variables(optimizer)[
        len(tracked) - len(old_labels) :
    ]
    _restore(saved, list(zip(new_slots, new_labels, strict=True)), variables)


def _replayed_labels(
    optimizer: keras.optimizers.Optimizer, old_variables: list
) -> list:
    # Hyperparameters that a scheduler callback turned into variables (SGD's
    # momentum, Adam's beta_1) go back to floats: the constructors check them.
    config = {
        key: float(value.numpy()) if isinstance(value, keras.Variable) else value
        for key, value in optimizer.get_config().items()
    }
    replay = type(optimizer).from_config(config)
    before = {id(v) for v in replay.variables}
    with _watching(replay) as labels:
        replay.build(old_variables)
    created = [v for v in replay.variables if id(v) not in before]
    return [(label, tuple(v.shape)) for label, v in zip(labels, created, strict=True)]


@contextlib.contextmanager
def _watching(optimizer: keras.optimizers.Optimizer) -> Iterator[list]:
    """Labels every variable ``optimizer`` creates, in creation order.

    A slot made by ``add_variable_from_reference`` is labelled
    ``("slot", id(variable), slot_name)``; another variable created before
    such a slot ``("near", id(variable), k)``; one created after the last
    slot ``("other", k)``. Variables created without ``add_variable`` (a bare
    ``keras.Variable`` assigned as an attribute) are found afterwards by
    comparing the optimizer's variable list.
    """
    labels: list = []
    references: list = []
    before = {id(v) for v in optimizer.variables}
    plain_add_variable = optimizer.add_variable
    plain_from_reference = optimizer.add_variable_from_reference

    def add_variable(*args, **kwargs):
        variable = plain_add_variable(*args, **kwargs)
        labels.append((id(variable), references[-1] if references else None))
        return variable

    def add_variable_from_reference(reference_variable, name=None, initializer="zeros"):
        references.append(("slot", id(reference_variable), name))
        try:
            return plain_from_reference(
                reference_variable, name=name, initializer=initializer
            )
        finally:
            references.pop()

    _keras_compat.shadow_method(optimizer, "add_variable", add_variable)
    _keras_compat.shadow_method(
        optimizer, "add_variable_from_reference", add_variable_from_reference
    )
    result: list = []
    try:
        yield result
    finally:
        _keras_compat.unshadow_method(optimizer, "add_variable")
        _keras_compat.unshadow_method(optimizer, "add_variable_from_reference")
    by_id = dict(labels)
    created = [v for v in optimizer.variables if id(v) not in before]
    labelled = [by_id.get(id(v)) for v in created]
    # Unlabelled variables belong to the next labelled slot's variable, or are
    # global state when no labelled slot follows.
    following, counts = None, {}
    attached: list = [None] * len(created)
    for index in reversed(range(len(created))):
        if labelled[index] is not None:
            following = labelled[index][1]
        elif following is not None:
            attached[index] = following
    global_count = 0
    for index, label in enumerate(labelled):
        if label is None and attached[index] is not None:
            number = counts.get(attached[index], 0)
            counts[attached[index]] = number + 1
            label = ("near", attached[index], number)
        elif label is None:
            label = ("other", global_count)
            global_count += 1
        result.append(label)


def _restore(saved: list, new: list, variables: Sequence) -> None:
    old_values = dict(saved)
    num_old_other = sum(label[0] == "other" for label, _ in saved)
    num_new_other = sum(label[0] == "other" for _, label in new)
    other_ok = num_old_other == num_new_other
    by_id = {id(v): v for v in variables}
    for slot, label in new:
        value = old_values.get(label) if label[0] != "other" or other_ok else None
        if value is not None and tuple(value.shape) == tuple(slot.shape):
            slot.assign(value)
        elif label[0] == "slot" and label[2] == "average":
            # A fresh EMA slot starts from the variable itself, not from zero:
            # Keras only does that at step 0, long past for a newly trainable
            # variable.
            slot.assign(by_id[label[1]])
