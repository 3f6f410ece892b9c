"""clone_with_weights and reuse_layers: the "model B on model A" recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_bool,
    check_int,
    invalid_type,
    invalid_value,
)
from keras_dnntools.transfer import _weighted_layers as wl
from keras_dnntools.transfer.freezing import freeze


@public("transfer")
def clone_with_weights(model: keras.Model) -> keras.Model:
    """A fully independent copy of `model`: same architecture, same weights.

    `keras.models.clone_model` copies the architecture only and gives the copy
    fresh random weights; this also copies every weight (trainable or not, such
    as BatchNormalization statistics) by value, so training the copy leaves the
    original untouched. The `trainable` flags are copied with the architecture.
    Like `clone_model`, the copy is not compiled.

    Args:
        model: a built `keras.Model` (Sequential, Functional, or a subclassed
            model that implements `get_config`).

    Returns:
        The new model.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if the copy's weights cannot be matched to the original's.

    Example:

    >>> model_a = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> copy = kdt.transfer.clone_with_weights(model_a)
    >>> bool(np.all(copy.get_weights()[0] == model_a.get_weights()[0]))
    True
    >>> copy.layers[0] is model_a.layers[0]
    False
    """
    model = wl.check_model(model)
    clone = keras.models.clone_model(model)
    if model.built and not clone.built:
        build_config = model.get_build_config()
        if build_config:
            clone.build_from_config(build_config)
    source_weights, clone_weights = model.weights, clone.weights
    if len(source_weights) != len(clone_weights) or any(
        tuple(a.shape) != tuple(b.shape)
        for a, b in zip(source_weights, clone_weights, strict=True)
    ):
        raise invalid_value(
            "model",
            "a model whose copy (keras.models.clone_model) has the same weights; "
            "build the model first (call it on data or give it an Input)",
            model.name,
        )
    for source, target in zip(source_weights, clone_weights, strict=True):
        # By value: on JAX, assigning the variable would share its buffer,
        # which the next train step of either model donates (deletes).
        target.assign(np.array(ops.convert_to_numpy(source)))
    return clone


@public("transfer")
def reuse_layers(
    source: keras.Model,
    *,
    drop_top: int = 1,
    head: keras.layers.Layer | Sequence[keras.layers.Layer] | None = None,
    freeze_base: bool = True,
    clone: bool = True,
) -> keras.Model:
    """Builds "model B on model A": the source's layers minus the top, plus a head.

    The recipe of transfer learning in Keras: take a trained model A, drop its
    top `drop_top` layers (usually the output layer, which is specific to task
    A), put a new `head` on what is left, and freeze the reused base so that the
    head can first be trained without wrecking the reused features. Unfreeze
    later with `kdt.transfer.unfreeze` (and `kdt.transfer.recompile`) to
    fine-tune with a lower learning rate, or let `kdt.transfer.fine_tune` do
    both steps.

    With `clone=True` (the default) the base is a copy of the source
    (`clone_with_weights`), so training model B, frozen or not, leaves model A
    exactly as it was. With `clone=False` the new model *shares* the source's
    layers and weights: training B changes A, and freezing B's base freezes
    those layers in A too. That saves memory when A is not needed any more.

    A `Sequential` source gives a `Sequential` model; a Functional source gives
    a Functional model, in which case the dropped layers must be the top of a
    chain (the layer below them must be the only way to the kept layers).

    Args:
        source: a built Sequential or Functional `keras.Model` (model A).
        drop_top: how many top layers of `source.layers` to leave out (input
            layers not counted); at least one layer must remain.
        head: a layer, a list of layers, or `None` (no head).
        freeze_base: freeze the reused layers (normalization layers included,
            see `kdt.transfer.freeze`), leaving the head trainable.
        clone: copy the source's layers (`True`) or share them (`False`).

    Returns:
        The new, uncompiled `keras.Model`.

    Raises:
        TypeError: if `source` is not a Sequential or Functional model or
            `head` is not a layer or a list of layers.
        ValueError: if `drop_top` is out of range, `source` is not built, or
            the dropped layers are not the top of a chain.

    Example:

    >>> model_a = keras.Sequential([keras.Input((8,)),
    ...                             keras.layers.Dense(16, activation="relu"),
    ...                             keras.layers.Dense(5, activation="softmax")])
    >>> model_b = kdt.transfer.reuse_layers(
    ...     model_a, head=keras.layers.Dense(1, activation="sigmoid"))
    >>> [layer.trainable for layer in model_b.layers]
    [False, True]
    >>> model_b.layers[0] is model_a.layers[0]
    False
    """
    source = wl.check_model(source, "source")
    is_sequential = isinstance(source, keras.Sequential)
    if not is_sequential and not _is_functional(source):
        raise invalid_type(
            "source",
            "a Sequential or Functional keras.Model (a subclassed model has no "
            "layer graph to cut)",
            source,
        )
    if not source.built or not source.inputs:
        raise invalid_value(
            "source",
            "a built model with known inputs (give it a keras.Input)",
            source.name,
        )
    head_layers = _check_head(head)
    freeze_base = check_bool("freeze_base", freeze_base)
    clone = check_bool("clone", clone)
    num_layers = len(_body_layers(source))
    drop_top = check_int(
        "drop_top",
        drop_top,
        low=0,
        high=num_layers - 1,
        expected=f"an integer from 0 to {num_layers - 1} (the model has "
        f"{num_layers} layers besides its inputs, and one must remain)",
    )
    base = clone_with_weights(source) if clone else source
    kept = _body_layers(base)[: num_layers - drop_top]
    if is_sequential:
        inputs = keras.Input(
            batch_shape=tuple(base.inputs[0].shape), dtype=base.inputs[0].dtype
        )
        model = keras.Sequential([inputs, *kept, *head_layers])
    else:
        model = _functional_on_top(base, kept, head_layers, drop_top)
    if freeze_base:
        last_kept = max(model.layers.index(layer) for layer in kept)
        freeze(model, until=last_kept)
    return model


def _is_functional(model: keras.Model) -> bool:
    # keras.Model(inputs, outputs) builds a Functional model, which is a
    # keras.Function (a graph of layers); Sequential and subclassed models are not.
    return isinstance(model, keras.Function)


def _body_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]


def _check_head(head: object) -> list[keras.layers.Layer]:
    if head is None:
        return []
    if isinstance(head, keras.layers.Layer):
        return [head]
    if isinstance(head, (list, tuple)) and all(
        isinstance(layer, keras.layers.Layer) for layer in head
    ):
        return list(head)
    raise invalid_type("head", "None, a keras layer or a list of keras layers", head)


def _functional_on_top(
    base: keras.Model,
    kept: list[keras.layers.Layer],
    head_layers: list[keras.layers.Layer],
    drop_top: int,
) -> keras.Model:
    if drop_top == 0:
        outputs = base.outputs
        outputs = outputs[0] if len(outputs) == 1 else outputs
    else:
        outputs = _trunk_output(kept, _body_layers(base)[len(kept) :], drop_top)
    inputs = base.inputs[0] if len(base.inputs) == 1 else base.inputs
    trunk = keras.Model(inputs, outputs)
    if {id(layer) for layer in _body_layers(trunk)} != {id(layer) for layer in kept}:
        raise invalid_value(
            "drop_top",
            "a number of top layers whose removal leaves a single chain "
            f"ending in the layer below them ({kept[-1].name!r}); this model "
            "branches there, build model B by hand with the Functional API",
            drop_top,
        )
    x = outputs
    for layer in head_layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _inputs_of(layer: keras.layers.Layer) -> list:
    try:
        return keras.tree.flatten(layer.input)
    except (AttributeError, ValueError):  # a layer called more than once
        return []


def _trunk_output(kept: list, dropped: list, drop_top: int) -> Any:
    """The one tensor the dropped layers grow from, when that is unambiguous.

    The kept layers must end in a single top: the layer whose output feeds
    the dropped ones. Another kept layer whose output nothing kept consumes
    (an output of the model that `drop_top` leaves in place, such as `main`
    beside a dropped `aux`) makes the choice ambiguous.
    """
    consumed = [t for layer in kept for t in _inputs_of(layer)]
    tops = [
        layer
        for layer in kept
        if not any(layer.output is tensor for tensor in consumed)
    ]
    feeds = [
        tensor
        for layer in dropped
        for tensor in _inputs_of(layer)
        if any(kept_layer.output is tensor for kept_layer in kept)
    ]
    if len(tops) == 1 and all(tensor is tops[0].output for tensor in feeds):
        return tops[0].output
    names = sorted(top.name for top in tops)
    raise invalid_value(
        "drop_top",
        "a number of top layers whose removal leaves one top layer to put the "
        f"head on; with drop_top={drop_top} the kept layers end in {names} "
        "(an output of the model that is not dropped, or parallel branches). "
        "Drop every task-specific output (a larger drop_top) so that the head "
        "goes on the shared trunk, or build model B by hand with the "
        "Functional API",
        drop_top,
    )
