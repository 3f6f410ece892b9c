"""Runs a Keras model layer by layer with dropout replaced by a sampler.

`mc_predict` needs two things Keras does not offer publicly: to run a model
with every layer in inference mode *except* dropout, and to run the part of
the model that does not depend on dropout only once. Both need the layer
graph, which Keras keeps private: every such contact goes through
`keras_dnntools._keras_compat` (tested there). The rest of `kdt.uncertainty`
uses the public API only.

How a model is run:

* Sequential models are run as a chain of layers, functional models node by
  node (as `Functional.call` does); nested Sequential/functional models are
  entered recursively.
* Dropout layers (`keras.layers.Dropout` and its subclasses -- spatial dropout,
  `kdt.layers.MCDropout`... -- and `keras.layers.AlphaDropout` and its
  subclasses) are replaced by the sampler.
* Every other layer is called with ``training=False``, exactly as
  ``model(x, training=False)`` would call it, so BatchNormalization uses and
  keeps its moving statistics.
* A layer we cannot look into (a subclassed model or layer that holds dropout
  sublayers) is called as a whole; its dropout sublayers then reach the
  sampler through `patched_dropout`, which routes their ``call`` for the time
  of the sampling and always restores it.

The run has two phases. The *deterministic* phase computes every node that
does not depend on a dropout layer and caches it; the *sampling* phase, run
once per Monte Carlo sample, recomputes only the nodes that depend on dropout
and reads the others from the cache. Inside one `tf.function` the cached
tensors are computed once, outside the sampling loop (the same holds in a
`jax.jit` function and in an eager loop).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import keras

from keras_dnntools import _keras_compat

# A value that depends on dropout, during the deterministic phase.
UNKNOWN = object()

DETERMINISTIC = "deterministic"
SAMPLING = "sampling"

#: The Keras layer classes that `mc_predict` samples (their subclasses too:
#: SpatialDropout1D/2D/3D and the kdt.layers MC layers derive from them).
DROPOUT_TYPES = (keras.layers.Dropout, keras.layers.AlphaDropout)

SampleFn = Callable[[keras.layers.Layer, Any], Any]


def is_dropout(layer: Any) -> bool:
    """Whether `layer` is a dropout layer that Monte Carlo sampling switches on."""
    return isinstance(layer, DROPOUT_TYPES)


def _sublayers(layer: Any) -> list:
    return _keras_compat.sublayers(layer)


def dropout_layers(model: Any) -> list:
    """Every dropout layer of `model`, nested models and sublayers included."""
    found = [model] if is_dropout(model) else []
    return found + [layer for layer in _sublayers(model) if is_dropout(layer)]


def is_functional(model: Any) -> bool:
    # A subclass that overrides `call` is not described by its graph.
    functional = _keras_compat.functional_class()
    return isinstance(model, functional) and type(model).call is functional.call


def is_sequential(model: Any) -> bool:
    return (
        isinstance(model, keras.Sequential)
        and type(model).call is keras.Sequential.call
    )


def _ordered_nodes(model: Any) -> list:
    return _keras_compat.ordered_nodes(model)


def _call_inference(operation: Any, args: tuple, kwargs: dict) -> Any:
    """Calls `operation` as ``Functional.call(..., training=False)`` would."""
    if "training" in _keras_compat.call_context_args(operation):
        kwargs = {**kwargs, "training": False}
    return operation(*args, **kwargs)


def _flatten(structure: Any) -> list:
    return keras.tree.flatten(structure)


class Interpreter:
    """Runs one model with a dropout sampler; see the module docstring.

    Args:
        model: the Keras model to run.
    """

    def __init__(self, model: Any) -> None:
        # A weak reference: compiled functions that hold this interpreter are
        # cached per model, and must not keep the model alive.
        self._model = weakref.ref(model)
        #: The structure of the model's outputs (set by `run`).
        self.output_structure: Any = None
        self._contains: dict[int, bool] = {}
        self._opaque_dropouts: dict[int, Any] = {}
        self._scan(model)

    @property
    def model(self) -> Any:
        model = self._model()
        if model is None:
            raise RuntimeError("The model of this interpreter was deleted.")
        return model

    # -- structure -------------------------------------------------------------

    def contains_dropout(self, layer: Any) -> bool:
        key = id(layer)
        if key not in self._contains:
            self._contains[key] = bool(dropout_layers(layer))
        return self._contains[key]

    def _scan(self, model: Any) -> None:
        """Finds the dropout layers that only an opaque call can reach."""
        if is_dropout(model) or not self.contains_dropout(model):
            return
        if is_sequential(model):
            for layer in model.layers:
                self._scan(layer)
        elif is_functional(model):
            for node in _ordered_nodes(model):
                if node.operation is not None and not node.is_input:
                    self._scan(node.operation)
        else:
            for layer in dropout_layers(model):
                self._opaque_dropouts[id(layer)] = layer

    @property
    def opaque_dropout_layers(self) -> list:
        """Dropout layers inside layers this interpreter cannot look into."""
        return list(self._opaque_dropouts.values())

    @property
    def splits(self) -> bool:
        """Whether some layers of the model run once instead of once per sample.

        False when the first layer (or the whole model) is already stochastic.
        """
        return self._has_deterministic_prefix(self.model)

    def _has_deterministic_prefix(self, model: Any) -> bool:
        if is_dropout(model):
            return False
        if is_sequential(model):
            first = model.layers[0] if model.layers else None
            if first is None:
                return False
            if not self.contains_dropout(first):
                return True
            return self._has_deterministic_prefix(first)
        if is_functional(model):
            for node in _ordered_nodes(model):
                operation = node.operation
                if operation is None or node.is_input:
                    continue
                if not self.contains_dropout(operation):
                    return True
                if self._has_deterministic_prefix(operation):
                    return True
            return False
        return False

    # -- running ---------------------------------------------------------------

    def run(self, inputs: Any, phase: str, cache: dict, sample: SampleFn) -> list:
        """Runs the model on `inputs` (as a user would call it).

        Returns:
            The flat list of outputs; in the deterministic phase an output
            that depends on dropout is `UNKNOWN`.
        """
        model = self.model
        if is_functional(model):
            flat = _keras_compat.standardize_inputs(model, inputs)
            self.output_structure = model.output
            return self._run_graph(model, flat, phase, cache, sample, ())
        if is_sequential(model):
            output = self._run_chain(model, inputs, phase, cache, sample, ())
        else:
            output = self._run_operation(model, (inputs,), {}, phase, cache, sample, ())
        if output is UNKNOWN:
            return [output]
        self.output_structure = output
        return _flatten(output)

    def _run_graph(self, model, flat_inputs, phase, cache, sample, scope) -> list:
        values = {
            id(kt): value for kt, value in zip(model.inputs, flat_inputs, strict=True)
        }
        for node in _ordered_nodes(model):
            if node.operation is None or node.is_input:
                continue
            if any(id(kt) not in values for kt in node.input_tensors):
                continue  # Not computable from these inputs (as in Keras).
            key = (*scope, id(node))
            if any(values[id(kt)] is UNKNOWN for kt in node.input_tensors):
                outputs = [UNKNOWN] * len(node.outputs)
            elif phase == SAMPLING and key in cache:
                outputs = _flatten(cache[key])
            else:
                args, kwargs = _keras_compat.node_call_arguments(node, values)
                result = self._run_operation(
                    node.operation, args, kwargs, phase, cache, sample, key
                )
                if result is UNKNOWN:
                    outputs = [UNKNOWN] * len(node.outputs)
                else:
                    outputs = _flatten(result)
            for kt, value in zip(node.outputs, outputs, strict=True):
                values[id(kt)] = value
        return [values.get(id(kt), UNKNOWN) for kt in model.outputs]

    def _run_chain(self, model, value, phase, cache, sample, scope) -> Any:
        for index, layer in enumerate(model.layers):
            if value is UNKNOWN:
                return UNKNOWN
            key = (*scope, "layer", index)
            if phase == SAMPLING and key in cache:
                value = cache[key]
                continue
            value = self._run_operation(layer, (value,), {}, phase, cache, sample, key)
        return value

    def _run_operation(self, operation, args, kwargs, phase, cache, sample, key):
        """Runs one layer; caches it in the deterministic phase when it can."""
        if is_dropout(operation):
            if phase == DETERMINISTIC:
                return UNKNOWN
            inputs = args[0] if args else kwargs["inputs"]
            outputs = sample(operation, inputs)
            mask = _keras_compat.get_keras_mask(inputs)
            if mask is not None:
                _keras_compat.set_keras_mask(outputs, mask)
            return outputs
        if self.contains_dropout(operation):
            nested = args[0] if args else kwargs.get("inputs")
            if is_sequential(operation):
                return self._run_chain(operation, nested, phase, cache, sample, key)
            if is_functional(operation):
                flat = self._run_graph(
                    operation, _flatten(nested), phase, cache, sample, key
                )
                if any(value is UNKNOWN for value in flat):
                    return UNKNOWN
                return flat[0] if len(flat) == 1 else flat
            if phase == DETERMINISTIC:
                return UNKNOWN
            # Opaque: its dropout sublayers are patched (see patched_dropout).
            return _call_inference(operation, args, kwargs)
        outputs = _call_inference(operation, args, kwargs)
        if phase == DETERMINISTIC:
            cache[key] = outputs
        return outputs


def patched_dropout(layers: list, sample: Callable[[Any, Any], Any]) -> Any:
    """Routes the ``call`` of `layers` to `sample(layer, inputs)` for a while.

    Used only for dropout layers inside layers the interpreter cannot look
    into; restored on exit, also on errors.
    """
    return _keras_compat.routed_calls(layers, sample, describe="sample dropout")


def fingerprint(model: Any) -> tuple:
    """What a compiled sampling function depends on, besides the weights.

    The layers (identity and order) and the settings of every dropout layer:
    a change of either needs a new trace.
    """
    parts = []
    for layer in [model, *_sublayers(model)]:
        part: tuple = (id(layer), type(layer))
        if is_dropout(layer):
            part += (
                float(layer.rate),
                repr(getattr(layer, "noise_shape", None)),
                getattr(layer, "data_format", None),
            )
        parts.append(part)
    return tuple(parts)


def activation_size(model: Any) -> int | None:
    """Values per instance in the outputs of the model's layers (an estimate).

    Returns None when the model's layer shapes are not all known.
    """
    try:
        if is_functional(model):
            tensors = [kt for node in _ordered_nodes(model) for kt in node.outputs]
        elif is_sequential(model):
            tensors = [layer.output for layer in model.layers]
        else:
            return None
        total = 0
        for tensor in tensors:
            dims = tuple(tensor.shape)[1:]
            if any(dim is None for dim in dims):
                return None
            total += math.prod(dims)
        return total
    except (AttributeError, ValueError, TypeError):
        return None
