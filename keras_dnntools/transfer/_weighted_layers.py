"""Which layers count, in what order, and how a trainable plan is applied.

The transfer tools speak of *weighted layers*: layers that own trainable weights
(``Dense``, convolutions, ``Embedding``, wrappers such as ``Bidirectional``...).
Normalization layers are not counted, and a nested model (a pretrained base used
as one layer of a ``Sequential``) counts through its own layers. This module
flattens a model into its *leaves* (every layer that is not itself a
``keras.Model``), bottom to top, and applies a per-leaf trainable plan while
keeping the nested models' own ``trainable`` flags consistent with it.

Keras 3 has no public way to tell "this variable was created trainable" from
"this variable is trainable right now": ``layer.trainable = False`` flips the
``trainable`` flag of the layer's variables, so a frozen ``Dense`` kernel and a
BatchNormalization moving mean look alike. Only the layer's private
``_trainable_variables`` list (the variables created with ``trainable=True``)
keeps that information, so :func:`owns_trainable_weights` reads it, together
with ``_flatten_layers`` to reach the sublayers of wrapper layers. These are the
only private attributes of ``keras.layers.Layer`` the transfer tools read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras

from keras_dnntools import _keras_compat
from keras_dnntools._validation import invalid_type, invalid_value


def _normalization_classes() -> tuple[type, ...]:
    names = (
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
    )
    return tuple(
        getattr(keras.layers, name) for name in names if hasattr(keras.layers, name)
    )


NORMALIZATION_CLASSES = _normalization_classes()


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A non-container layer of a model, with where it sits.

    Attributes:
        layer: the layer.
        top_index: index into ``model.layers`` of the top-level layer holding it.
        ancestors: the nested models between ``model`` (excluded) and ``layer``.
    """

    layer: keras.layers.Layer
    top_index: int
    ancestors: tuple[keras.Model, ...]

    @property
    def is_normalization(self) -> bool:
        return is_normalization(self.layer)

    @property
    def is_weighted(self) -> bool:
        return not self.is_normalization and owns_trainable_weights(self.layer)

    def effectively_trainable(self) -> bool:
        """Whether the layer trains now (its flag and all its containers')."""
        return self.layer.trainable and all(
            ancestor.trainable for ancestor in self.ancestors
        )


def check_model(model: object, name: str = "model") -> keras.Model:
    if not isinstance(model, keras.Model):
        raise invalid_type(name, "a keras.Model", model)
    return model


def is_normalization(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, NORMALIZATION_CLASSES)


def owns_trainable_weights(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` (or a sublayer of it) created trainable variables.

    True whatever the layer's current ``trainable`` flag (see the module
    docstring for why this reads ``_trainable_variables``).
    """
    return bool(trainable_capable_variables(layer))


def trainable_capable_variables(layer: keras.layers.Layer) -> list:
    """The variables of ``layer`` created trainable, whatever its flag now."""
    variables: list = []
    seen: set[int] = set()
    for sublayer in _keras_compat.flatten_layers(layer):
        for variable in getattr(sublayer, "_trainable_variables", ()):
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


def leaves(model: keras.Model) -> list[Leaf]:
    """The model's non-container layers, bottom to top, each listed once."""
    result: list[Leaf] = []
    seen: set[int] = set()

    def visit(layer, top_index, ancestors):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            for sublayer in layer.layers:
                visit(sublayer, top_index, (*ancestors, layer))
        else:
            result.append(Leaf(layer, top_index, ancestors))

    for index, layer in enumerate(model.layers):
        visit(layer, index, ())
    return result


def weighted_leaf_indices(model: keras.Model, all_leaves: Sequence[Leaf]) -> list[int]:
    """Positions in ``all_leaves`` of the weighted layers; raises if none."""
    indices = [i for i, leaf in enumerate(all_leaves) if leaf.is_weighted]
    if not indices:
        raise invalid_value(
            "model",
            "a model with at least one weighted layer (a layer with trainable "
            "weights of its own, such as Dense or Conv2D; normalization layers "
            "do not count)",
            model.name,
        )
    return indices


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The weighted layers of ``model``, bottom to top (nested models flattened).

    Raises:
        ValueError: if the model has none.
    """
    all_leaves = leaves(check_model(model))
    return [all_leaves[i].layer for i in weighted_leaf_indices(model, all_leaves)]


def apply_plan(
    model: keras.Model, all_leaves: Sequence[Leaf], plan: Sequence[bool]
) -> None:
    """Sets ``trainable`` on every leaf as planned, containers consistently.

    A nested model is made trainable when any of its leaves is planned trainable
    (a frozen container hides its layers' weights from training), frozen
    otherwise. Setting a container's flag cascades to its sublayers in Keras,
    so the containers are set first, outermost first, and the leaves last.
    """
    if len(plan) != len(all_leaves):
        raise RuntimeError("internal error: plan and leaves differ in length")
    containers: dict[int, tuple[keras.Model, bool, int]] = {}
    for leaf, trainable in zip(all_leaves, plan, strict=True):
        for depth, ancestor in enumerate(leaf.ancestors):
            _, previous, _ = containers.get(id(ancestor), (ancestor, False, depth))
            containers[id(ancestor)] = (ancestor, previous or trainable, depth)
    model.trainable = any(plan)
    for container, trainable, _ in sorted(containers.values(), key=lambda c: c[2]):
        container.trainable = trainable
    for leaf, trainable in zip(all_leaves, plan, strict=True):
        leaf.layer.trainable = trainable


def last_leaf_of(model: keras.Model, all_leaves: Sequence[Leaf], name: str) -> int:
    """Position in ``all_leaves`` of the last leaf of the layer called ``name``.

    A top-level layer (``model.layers``) wins; otherwise the name is looked up
    in nested models, where it must be unique.
    """
    owners: dict[int, list[int]] = {}
    top_level: dict[int, list[int]] = {}
    for i, leaf in enumerate(all_leaves):
        for depth, candidate in enumerate((*leaf.ancestors, leaf.layer)):
            if candidate.name == name:
                owners.setdefault(id(candidate), []).append(i)
                if depth == 0:
                    top_level.setdefault(id(candidate), []).append(i)
    if top_level:
        owners = top_level
    if not owners:
        names = [layer.name for layer in model.layers]
        raise invalid_value(
            "until",
            "an index into model.layers or the name of a layer of the model "
            f"(top-level layers: {names}; layers of nested models work too)",
            name,
        )
    if len(owners) > 1:
        raise invalid_value(
            "until",
            "a layer name that is unique in the model (several nested layers "
            "carry it: pass an index into model.layers instead)",
            name,
        )
    (positions,) = owners.values()
    return max(positions)
