"""What `check`, `TrainingMonitor` and `lsuv` measure, and how, on every backend.

A *probe* is a functional model sharing the user's layers (and so their
variables) whose outputs are the model's outputs followed by the activation of
each weighted layer. One forward and backward pass through it gives the loss,
every weighted layer's activation and the gradient of every trainable variable.
The pass runs inside a `keras.StatelessScope`: the variables it would assign
(BatchNormalization's moving statistics, dropout seed states) are left as they
were, so a measurement never changes the model.

The gradient is taken with the backend's own machinery, imported lazily:
`tf.GradientTape`, `jax.value_and_grad` over the variables' values, or
`torch.autograd.grad`. Everything else is `keras.ops`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from keras import ops

from keras_dnntools._validation import invalid_type, invalid_value

_NORMALIZATION = tuple(
    getattr(keras.layers, name)
    for name in (
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "RMSNormalization",
    )
    if hasattr(keras.layers, name)
)
_ACTIVATION_LAYERS = {
    keras.layers.Activation: None,  # read from the layer's `activation`
    keras.layers.ReLU: "relu",
    keras.layers.LeakyReLU: "leaky_relu",
    keras.layers.PReLU: "prelu",
    keras.layers.ELU: "elu",
    keras.layers.Softmax: "softmax",
}
# Activations whose units can die: output <= 0 for every example.
RELU_FAMILY = frozenset(
    {"relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu", "rrelu"}
)
# Flat tails: where the activation's derivative is below 10% of its maximum.
#   sigmoid: s(1 - s) < 0.025  <=>  s < 0.025 or s > 0.975 (|z| > 3.66)
#   tanh:    1 - t**2 < 0.1    <=>  |t| > 0.95 (|z| > 1.83)
SATURATION = {
    "sigmoid": (0.025, 0.975),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-0.95, 0.95),
    "hard_tanh": (-1.0, 1.0),
    "softsign": (-0.684, 0.684),
}


@dataclasses.dataclass(frozen=True)
class Watched:
    """A weighted layer and the tensor that stands for its activation.

    Attributes:
        layer: the weighted layer.
        output: the symbolic tensor measured: the layer's output, or that of
            the activation (and normalization) layers that directly follow it.
        activation: the activation's name (``"relu"``, ``"sigmoid"``, ...).
        kernel: the layer's kernel variable, or None.
    """

    layer: Any
    output: Any
    activation: str
    kernel: Any


def _activation_name(layer) -> str:
    for cls, name in _ACTIVATION_LAYERS.items():
        if type(layer) is cls and name is not None:
            return name
    function = getattr(layer, "activation", None)
    if function is None:
        return "linear"
    if isinstance(function, str):
        return function
    name = getattr(function, "__name__", type(function).__name__)
    return name.lower()


def is_weighted(layer) -> bool:
    """A layer owning weights of its own, not a normalization layer or a model."""
    if isinstance(layer, (keras.Model, *_NORMALIZATION)) or not layer.weights:
        return False
    return not layer.trainable or any(v.trainable for v in layer.weights)


def check_model(model, name: str = "model"):
    """Raises unless ``model`` is a built functional or Sequential Keras model."""
    if not isinstance(model, keras.Model):
        raise invalid_type(name, "a keras.Model", model)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise invalid_value(
            name,
            "a built functional or Sequential model (one with `inputs`, e.g. "
            "starting with keras.Input); subclassed models have no layer graph "
            "to probe",
            model,
        )


def watched_layers(model, layers=None, name: str = "layers") -> list[Watched]:
    """The weighted layers of ``model`` (or those named in ``layers``), bottom to top.

    Nested models count as one block and are not entered.
    """
    check_model(model)
    top = list(model.layers)
    chosen = [layer for layer in top if is_weighted(layer)]
    if layers is not None:
        if isinstance(layers, (str, keras.layers.Layer)):
            layers = [layers]
        wanted = []
        for item in layers:
            found = [
                layer
                for layer in top
                if layer is item or (isinstance(item, str) and layer.name == item)
            ]
            if not found:
                raise invalid_value(
                    name,
                    "layers of the model or their names "
                    f"(the model has {[layer.name for layer in top]})",
                    item,
                )
            wanted.append(found[0])
        chosen = [layer for layer in top if any(layer is w for w in wanted)]
    if not chosen:
        raise invalid_value(
            name if layers is not None else "model",
            "a model with at least one weighted layer (Dense, Conv, ...)",
            [layer.name for layer in top],
        )
    result = []
    for layer in chosen:
        output, activation = layer.output, _activation_name(layer)
        index = top.index(layer) + 1
        # Follow the activation (and normalization) layers that consume it.
        while index < len(top):
            following = top[index]
            is_activation = type(following) in _ACTIVATION_LAYERS
            if not (is_activation or isinstance(following, _NORMALIZATION)):
                break
            if following.input is not output:
                break
            output = following.output
            if is_activation:
                activation = _activation_name(following)
            index += 1
        result.append(
            Watched(layer, output, activation, getattr(layer, "kernel", None))
        )
    return result


def build_probe(model, watched: list[Watched]):
    """The functional model: (model outputs..., watched activations...)."""
    outputs = list(model.outputs) + [w.output for w in watched]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_probe")


def _loss(model, x, y, sample_weight, y_pred):
    if y is not None and getattr(model, "compiled", False) and model.loss is not None:
        prediction = y_pred[0] if len(y_pred) == 1 else y_pred
        loss = model.compute_loss(
            x=x, y=y, y_pred=prediction, sample_weight=sample_weight, training=True
        )
        return ops.cast(loss, "float32")
    total = 0.0
    for output in y_pred:
        total = total + ops.mean(ops.cast(output, "float32"))
    return total


def _forward(model, probe, num_outputs, x, y, sample_weight, mapping):
    with keras.StatelessScope(state_mapping=mapping):
        outputs = probe(x, training=True)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        y_pred = list(outputs[:num_outputs])
        loss = _loss(model, x, y, sample_weight, y_pred)
    return loss, list(outputs[num_outputs:])


def forward_backward(model, probe, x, y=None, sample_weight=None, *, state=None):
    """One pass: ``(loss, activations, gradients)``, gradients unscaled.

    ``gradients`` are aligned with ``model.trainable_variables``. ``state`` is
    ``(trainable_values, non_trainable_values)`` inside a stateless (JAX) train
    step; None reads the variables.
    """
    backend = keras.backend.backend()
    num_outputs = len(model.outputs)
    variables = model.trainable_variables
    if backend == "jax":
        import jax

        if state is None:
            trainable = [v.value for v in variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
        else:
            trainable, non_trainable = state

        def loss_fn(values):
            mapping = list(zip(variables, values, strict=True)) + list(
                zip(model.non_trainable_variables, non_trainable, strict=True)
            )
            return _forward(model, probe, num_outputs, x, y, sample_weight, mapping)

        (loss, activations), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            list(trainable)
        )
        return loss, activations, list(grads)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, activations = _forward(
                model, probe, num_outputs, x, y, sample_weight, None
            )
        grads = tape.gradient(loss, variables)
        grads = [
            ops.zeros(v.shape, "float32") if g is None else ops.convert_to_tensor(g)
            for g, v in zip(grads, variables, strict=True)
        ]
        return loss, activations, grads
    if backend == "torch":
        import torch

        with torch.enable_grad():
            loss, activations = _forward(
                model, probe, num_outputs, x, y, sample_weight, None
            )
            values = [v.value for v in variables]
            grads = torch.autograd.grad(loss, values, allow_unused=True)
        grads = [
            torch.zeros_like(value) if g is None else g
            for g, value in zip(grads, values, strict=True)
        ]
        activations = [a.detach() for a in activations]
        return loss.detach(), activations, grads
    raise NotImplementedError(f"Unsupported Keras backend: {backend}")


STAT_NAMES = (
    "gradient_norm",
    "activation_mean",
    "activation_std",
    "dead_fraction",
    "saturated_fraction",
)


def activation_stats(activation, kind: str):
    """``(mean, std, dead_fraction, saturated_fraction)`` of one activation tensor.

    The std is the population std over every element; a unit is dead when its
    output is <= 0 for every example (ReLU family only); an element is
    saturated when it lies in the activation's flat tails (see `SATURATION`).
    """
    a = ops.cast(activation, "float32")
    mean = ops.mean(a)
    std = ops.sqrt(ops.maximum(ops.mean(ops.square(a - mean)), 0.0))
    zero = ops.zeros((), "float32")
    if kind in RELU_FAMILY:
        units = ops.reshape(a, (-1, a.shape[-1]))
        dead_units = ops.all(units <= 0.0, axis=0)
        dead = ops.mean(ops.cast(dead_units, "float32"))
    else:
        dead = zero
    if kind in SATURATION:
        low, high = SATURATION[kind]
        flat = ops.logical_or(a <= low, a >= high)
        saturated = ops.mean(ops.cast(flat, "float32"))
    else:
        saturated = zero
    return mean, std, dead, saturated


def gradient_norms(model, watched: list[Watched], grads):
    """The L2 norm of each watched layer's trainable-weight gradients."""
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    norms = []
    for w in watched:
        total = ops.zeros((), "float32")
        for variable in w.layer.trainable_weights:
            i = index.get(id(variable))
            if i is not None:
                g = ops.cast(grads[i], "float32")
                total = total + ops.sum(ops.square(g))
        norms.append(ops.sqrt(total))
    return norms
