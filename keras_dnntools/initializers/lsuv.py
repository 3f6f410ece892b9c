"""Layer-sequential unit-variance initialization (Mishkin & Matas, 2016)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_dnntools._data import check_fit_data
from keras_dnntools._registry import public
from keras_dnntools._validation import check_float, check_int, invalid_value
from keras_dnntools.diagnostics import _inspection


def _orthonormal(shape, rng):
    fan_out = shape[-1]
    fan_in = int(np.prod(shape[:-1]))
    a = rng.standard_normal((max(fan_in, fan_out), min(fan_in, fan_out)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if fan_in < fan_out:
        q = q.T
    return q.reshape(shape)


@public("initializers")
def lsuv(
    model,
    x,
    *,
    target_std: float = 1.0,
    tolerance: float = 0.1,
    max_iterations: int = 10,
):
    """Layer-sequential unit-variance initialization, in place.

    Mishkin & Matas, "All you need is a good init" (ICLR 2016): every weighted
    layer's kernel is first replaced by an orthonormal matrix (its fan-in
    axes flattened, as in Saxe et al.), then, bottom to top, divided by the
    standard deviation of the layer's output on ``x`` (times ``target_std``)
    until that std is within ``tolerance`` of ``target_std`` or
    ``max_iterations`` rescalings were made. The output measured is the
    layer's activation (after the activation layers that directly follow
    it), as in `kdt.diagnostics.check`, except for bounded activations
    (sigmoid, tanh, softmax, ...), whose output cannot reach every std: there it is
    the pre-activation, as in the paper (where the nonlinearity is a layer of
    its own). Biases are left as they are.

    Reference: https://arxiv.org/abs/1511.06422

    Args:
        model: a built functional or Sequential `keras.Model`.
        x: a batch of inputs (a few hundred examples are enough).
        target_std: the output standard deviation to reach.
        tolerance: the largest accepted ``|std - target_std|``.
        max_iterations: the most rescalings per layer.

    Returns:
        ``model``, with its kernels changed in place.

    Raises:
        TypeError: if ``model`` is not a Keras model, or an argument has the
            wrong type.
        ValueError: if an argument is out of range, or a layer's output is
            constant on ``x`` (its std is 0: nothing to rescale).

    Example:

    >>> model = keras.Sequential([keras.Input((16,))] + [
    ...     keras.layers.Dense(32, activation="relu") for _ in range(5)])
    >>> x = np.random.default_rng(0).normal(size=(256, 16)).astype("float32")
    >>> model = kdt.initializers.lsuv(model, x, target_std=0.5, tolerance=0.05)
    >>> stds = [np.std(keras.Model(model.inputs, layer.output).predict(x, verbose=0))
    ...         for layer in model.layers]
    >>> bool(np.all(np.abs(np.array(stds) - 0.5) <= 0.05))
    True
    """
    target_std = check_float("target_std", target_std, low=0.0, low_inclusive=False)
    tolerance = check_float("tolerance", tolerance, low=0.0, low_inclusive=False)
    max_iterations = check_int("max_iterations", max_iterations, low=1)
    watched = _inspection.watched_layers(model)
    check_fit_data(model, x)
    rng = np.random.default_rng(0)

    for w in watched:
        if w.kernel is None:
            continue
        kernel = w.kernel
        kernel.assign(_orthonormal(tuple(kernel.shape), rng).astype(kernel.dtype))
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        bounded = w.activation in _inspection.SATURATION or w.activation == "softmax"
        own = getattr(w.layer, "activation", None)
        # A bounded activation's output cannot reach every std: measure its
        # input (the layer's pre-activation), as the paper does.
        probe = keras.Model(inputs, w.layer.output if bounded else w.output)
        linear = bounded and own is not None and own is not keras.activations.linear
        try:
            if linear:
                w.layer.activation = keras.activations.linear
            _rescale(w, probe, x, kernel, target_std, tolerance, max_iterations)
        finally:
            if linear:
                w.layer.activation = own
    return model


def _rescale(w, probe, x, kernel, target_std, tolerance, max_iterations):
    for _ in range(max_iterations):
        output = ops.convert_to_numpy(probe(x, training=False))
        std = float(np.std(output.astype("float64")))
        if std == 0.0 or not np.isfinite(std):
            raise invalid_value(
                "x",
                f"inputs on which {w.layer.name}'s output varies (its std is {std})",
                f"an array of shape {np.shape(x)}",
            )
        if abs(std - target_std) <= tolerance:
            break
        scaled = ops.convert_to_numpy(kernel) * (target_std / std)
        kernel.assign(scaled.astype(kernel.dtype))
