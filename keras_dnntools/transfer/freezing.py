"""freeze / unfreeze: set `trainable` by position, nested models included."""

from __future__ import annotations

import numbers
import warnings
import weakref
from typing import Any

import keras

from keras_dnntools import _keras_compat
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_bool,
    check_int,
    invalid_type,
    invalid_value,
)
from keras_dnntools.transfer import _weighted_layers as wl


@public("transfer")
def freeze(
    model: keras.Model,
    *,
    until: int | str | None = None,
    keep_batchnorm_frozen: bool = True,
) -> keras.Model:
    """Freezes the whole model, or its bottom layers up to and including `until`.

    Sets `trainable = False` on the layers, looking through nested models (a
    pretrained base used as one layer of a `Sequential` is frozen layer by
    layer). Layers above `until` keep the state they had. Normalization layers
    (BatchNormalization, LayerNormalization, GroupNormalization, RMSNormalization)
    in the frozen part are frozen too by default: in Keras 3 a frozen
    BatchNormalization runs in inference mode, so its moving statistics stay
    exactly as they were, which is what a reused base needs (training them on a
    small new data set is the classic transfer-learning trap). With
    `keep_batchnorm_frozen=False` they are left trainable instead, so they keep
    training and updating their statistics (fastai's `train_bn=True`).

    As with any change of `trainable`, compile the model again before training
    (`kdt.transfer.recompile(model)` keeps the loss, metrics and optimizer).

    Args:
        model: a `keras.Model`.
        until: `None` to freeze every layer, an index into `model.layers`
            (negative indices count from the top, as in Python), or the name of
            a layer, top-level or inside a nested model; that layer and every
            layer below it are frozen.
        keep_batchnorm_frozen: whether normalization layers in the frozen part
            are frozen too (`True`) or left trainable (`False`).

    Returns:
        The same `model`, modified in place.

    Raises:
        TypeError: if `model` is not a `keras.Model` or `until` is neither an
            int nor a str.
        ValueError: if `until` is out of range or names no layer, or the model
            has no weighted layer.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(8), keras.layers.Dense(1)])
    >>> _ = kdt.transfer.freeze(model, until=1)
    >>> [layer.trainable for layer in model.layers]
    [False, False, True]
    """
    model = wl.check_model(model)
    keep_batchnorm_frozen = check_bool("keep_batchnorm_frozen", keep_batchnorm_frozen)
    all_leaves = wl.leaves(model)
    wl.weighted_leaf_indices(model, all_leaves)
    end = len(all_leaves) if until is None else _last_leaf(model, all_leaves, until) + 1
    plan = [
        (leaf.is_normalization and not keep_batchnorm_frozen)
        if i < end
        else leaf.effectively_trainable()
        for i, leaf in enumerate(all_leaves)
    ]
    wl.apply_plan(model, all_leaves, plan)
    warn_at_fit_unless_recompiled(model, "freeze")
    return model


@public("transfer")
def unfreeze(
    model: keras.Model,
    *,
    top: int | None = None,
    keep_batchnorm_frozen: bool = True,
) -> keras.Model:
    """Makes all layers trainable again, or exactly the top `top` weighted layers.

    Weighted layers are layers with trainable weights of their own (`Dense`,
    convolutions, `Embedding`, ...), counted bottom to top through nested
    models; normalization layers are not counted. With `top=N`, the N topmost
    weighted layers and everything above the lowest of them are trainable and
    every layer below is frozen (fastai's `freeze_to(-N)`).

    Normalization layers are never unfrozen by default: a frozen one stays
    frozen (in inference mode, moving statistics unchanged), and ones below the
    trainable part are frozen. This is what Keras's fine-tuning guide asks for
    when a base with BatchNormalization is unfrozen. With
    `keep_batchnorm_frozen=False` every normalization layer is made trainable.

    Compile the model again before training (`kdt.transfer.recompile`).

    Args:
        model: a `keras.Model`.
        top: `None` to unfreeze everything, or the number of top weighted
            layers to make trainable (1 to the number of weighted layers).
        keep_batchnorm_frozen: whether normalization layers stay frozen.

    Returns:
        The same `model`, modified in place.

    Raises:
        TypeError: if `model` is not a `keras.Model` or `top` not an int.
        ValueError: if `top` is out of range or the model has no weighted layer.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.BatchNormalization(),
    ...                           keras.layers.Dense(8), keras.layers.Dense(1)])
    >>> _ = kdt.transfer.freeze(model)
    >>> _ = kdt.transfer.unfreeze(model, top=2)
    >>> [layer.trainable for layer in model.layers]
    [False, False, True, True]
    """
    model = wl.check_model(model)
    keep_batchnorm_frozen = check_bool("keep_batchnorm_frozen", keep_batchnorm_frozen)
    all_leaves = wl.leaves(model)
    num_weighted = len(wl.weighted_leaf_indices(model, all_leaves))
    if top is None:
        top = num_weighted
    else:
        top = check_int(
            "top",
            top,
            low=1,
            high=num_weighted,
            expected=(
                f"None or an integer from 1 to the number of weighted layers "
                f"({num_weighted})"
            ),
        )
    set_top_trainable(
        model, top, keep_batchnorm_frozen=keep_batchnorm_frozen, all_leaves=all_leaves
    )
    warn_at_fit_unless_recompiled(model, "unfreeze")
    return model


def set_top_trainable(
    model: keras.Model,
    num_trainable: int,
    *,
    keep_batchnorm_frozen: bool,
    all_leaves: list[wl.Leaf] | None = None,
) -> None:
    """Exactly the top `num_trainable` weighted layers trainable (0 freezes all).

    When every weighted layer is to be trainable, so are the layers below the
    lowest one (input preprocessing, ...). Normalization layers follow
    `keep_batchnorm_frozen` as documented in `unfreeze`.
    """
    if all_leaves is None:
        all_leaves = wl.leaves(model)
    plan = top_trainable_plan(
        model,
        num_trainable,
        keep_batchnorm_frozen=keep_batchnorm_frozen,
        all_leaves=all_leaves,
    )
    wl.apply_plan(model, all_leaves, plan)


def top_trainable_plan(
    model: keras.Model,
    num_trainable: int,
    *,
    keep_batchnorm_frozen: bool,
    all_leaves: list[wl.Leaf],
) -> list[bool]:
    """The trainable flag of every leaf for `set_top_trainable` (no change made)."""
    weighted = wl.weighted_leaf_indices(model, all_leaves)
    if num_trainable >= len(weighted):
        cut = 0
    elif num_trainable == 0:
        cut = len(all_leaves)
    else:
        cut = weighted[len(weighted) - num_trainable]
    plan = []
    for i, leaf in enumerate(all_leaves):
        if leaf.is_normalization:
            if not keep_batchnorm_frozen:
                plan.append(True)
            else:
                plan.append(i >= cut and leaf.effectively_trainable())
        else:
            plan.append(i >= cut)
    return plan


def _last_leaf(model: keras.Model, all_leaves: list[wl.Leaf], until: object) -> int:
    if isinstance(until, str):
        return wl.last_leaf_of(model, all_leaves, until)
    if isinstance(until, bool) or not isinstance(until, numbers.Integral):
        raise invalid_type("until", "None, an int index or a layer name", until)
    num_layers = len(model.layers)
    if not -num_layers <= until < num_layers:
        raise invalid_value(
            "until",
            f"an index into model.layers, from {-num_layers} to {num_layers - 1}",
            until,
        )
    index = int(until) % num_layers
    positions = [i for i, leaf in enumerate(all_leaves) if leaf.top_index <= index]
    return positions[-1] if positions else -1


def _trainable_changed_since_compile(model: keras.Model) -> bool:
    compiled = _keras_compat.compiled_trainable_state(model)
    if not getattr(model, "compiled", False) or compiled is None:
        return False
    return any(
        compiled.get(layer, layer.trainable) != layer.trainable
        for layer in _keras_compat.flatten_layers(model)
    )


def warn_at_fit_unless_recompiled(model: keras.Model, what: str) -> None:
    """Warns once at the next `fit()` if `trainable` changed since `compile()`.

    Keras traced the train step for the layers that were trainable at
    `compile()`: until the model is compiled again, `fit()` trains those, and
    says nothing (Keras 3.15 defines that check but does not call it). The
    warning comes from a guard on the model's `make_train_function`, which
    removes itself at its first call.
    """
    if _keras_compat.instance_attribute(model, "make_train_function") is not None:
        return  # a guard is in place already (ours, or a fit scope's)
    if not _trainable_changed_since_compile(model):
        return
    model_ref = weakref.ref(model)
    method = type(model).make_train_function

    def make_train_function(*args: Any, **kwargs: Any) -> Any:
        owner = model_ref()
        if (
            _keras_compat.instance_attribute(owner, "make_train_function")
            is make_train_function
        ):
            _keras_compat.unshadow_method(owner, "make_train_function")
        if _trainable_changed_since_compile(owner):
            warnings.warn(
                f"`kdt.transfer.{what}()` changed which layers of model "
                f"{owner.name!r} are trainable after it was compiled: this fit() "
                "still trains the layers that were trainable at compile(). Call "
                "`kdt.transfer.recompile(model)` after freezing or unfreezing.",
                UserWarning,
                stacklevel=3,
            )
            _keras_compat.mark_trainable_state_compiled(owner)  # warn once
        return method(owner, *args, **kwargs)

    _keras_compat.shadow_method(model, "make_train_function", make_train_function)
