"""Every contact of keras_dnntools with private Keras internals, in one place.

Each function says why no public route does the job. `tests/test_keras_compat.py`
checks each one against the installed Keras, so that a Keras release that moves
or changes one of them fails there, by name, rather than somewhere deep inside
a feature.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

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
