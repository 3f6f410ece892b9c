"""Randomized leaky ReLU (RReLU), functional form."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_dnntools import _keras_compat, _random
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    SEED_MAX,
    check_bool,
    check_float,
    check_seed,
    invalid_type,
    invalid_values,
    is_integer,
)

DEFAULT_LOWER = 1.0 / 8.0
DEFAULT_UPPER = 1.0 / 3.0


def check_bounds(lower: Any, upper: Any) -> tuple[float, float]:
    """Checks RReLU's ``lower`` and ``upper``; returns them as floats."""
    lower = check_float("lower", lower)
    upper = check_float("upper", upper)
    if lower < 0:
        raise ValueError(
            "Invalid value for argument `lower`: expected 0 <= lower <= upper. "
            f"Received: lower={lower!r}, upper={upper!r}"
        )
    if lower > upper:
        raise invalid_values(
            ("lower", "upper"), "0 <= lower <= upper", lower=lower, upper=upper
        )
    return lower, upper


def check_seed_argument(seed: Any) -> Any:
    """``None``, an int in ``[0, 2**31 - 1]`` or a ``keras.random.SeedGenerator``."""
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    if not is_integer(seed):
        raise invalid_type(
            "seed",
            f"None, an integer in [0, {SEED_MAX}] or a keras.random.SeedGenerator",
            seed,
        )
    return check_seed("seed", seed)


def rrelu_slopes(
    inputs: Any, lower: float, upper: float, training: bool, seed: Any
) -> Any:
    """RReLU's negative-side slopes: one fresh U(lower, upper) draw per element in
    training, the scalar mean ``(lower + upper) / 2`` at inference."""
    if not training or lower == upper:
        return (lower + upper) / 2.0
    # Drawn in float32, then rounded to the compute dtype: a float16/bfloat16
    # uniform has few levels (128 in [0, 1) for bfloat16), which biases the mean.
    slopes = _random.uniform_16bit(ops.shape(inputs), seed, minval=lower, maxval=upper)
    return ops.cast(slopes, inputs.dtype)


def apply_rrelu(inputs: Any, lower: float, upper: float, training: bool, seed: Any):
    """RReLU on checked arguments (shared by :func:`rrelu` and the layer)."""
    if not training or lower == upper:
        # One fused kernel, the same as keras.layers.LeakyReLU (slope <= 1
        # gives max(x, slope * x); TensorFlow switches to a select above 1).
        return ops.leaky_relu(inputs, negative_slope=(lower + upper) / 2.0)
    slopes = rrelu_slopes(inputs, lower, upper, training, seed)
    # x * (1 if x >= 0 else slope): the gradient with respect to x is that same
    # multiplier (one multiply in the backward pass, no select).
    multiplier = ops.where(
        ops.greater_equal(inputs, 0), ops.ones((), dtype=inputs.dtype), slopes
    )
    return ops.multiply(inputs, multiplier)


@public("activations", serializable=True)
def rrelu(
    x: Any,
    lower: float = DEFAULT_LOWER,
    upper: float = DEFAULT_UPPER,
    training: bool = False,
    seed: Any = None,
) -> Any:
    """Randomized leaky rectified linear unit.

    `rrelu(x) = x` for `x >= 0` and `a * x` otherwise. In training
    (`training=True`) every element gets its own slope `a` drawn from the
    uniform distribution U(lower, upper), afresh on every call; at inference
    the slope is the fixed mean `(lower + upper) / 2`, which gives the same
    output as `torch.nn.RReLU` in eval mode. The gradient with respect to a
    negative input is its slope.

    Reference: [Xu et al., 2015, "Empirical Evaluation of Rectified
    Activations in Convolutional Network"](https://arxiv.org/abs/1505.00853).

    Args:
        x: Input tensor (floating point).
        lower: Lower bound of the slope distribution, `0 <= lower <= upper`.
        upper: Upper bound of the slope distribution.
        training: Whether to draw random slopes (`True`) or use their mean.
        seed: Used in training only: `None` (Keras's global generator), an
            integer (the same slopes on every call: stateless, as in
            `keras.random`) or a `keras.random.SeedGenerator` (fresh slopes on
            every call, also inside compiled functions; this is what the
            `RReLU` layer uses). Only the last two get the generator that
            stays fast under XLA on CPU (see `keras_dnntools/_random.py`).

    Use the `kdt.layers.RReLU` layer in models. This function is for your own
    layers' `call()`, which pass it `training` (and a
    `keras.random.SeedGenerator`): Keras calls a layer's `activation` without
    `training`, so `Dense(activation=kdt.activations.rrelu)` would train as a
    plain leaky ReLU. It is therefore refused: called with `training=False`
    inside a layer call that is training, it raises a `ValueError` that points
    to the layer. (Inference, e.g. `predict()`, is allowed.)

    Returns:
        A tensor of the shape and dtype of `x`.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `lower` or `upper` is out of range, or if it is called
            with `training=False` while a Keras layer call is training (used
            as a layer's `activation=`).

    Example:

    >>> x = np.array([-3.0, -1.0, 0.0, 2.0], dtype="float32")
    >>> keras.ops.convert_to_numpy(kdt.activations.rrelu(x, lower=0.1, upper=0.3))
    array([-0.6, -0.2,  0. ,  2. ], dtype=float32)
    >>> y = kdt.activations.rrelu(x, 0.1, 0.3, training=True, seed=1)
    >>> slopes = keras.ops.convert_to_numpy(y[:2] / x[:2])
    >>> bool(((slopes >= 0.1) & (slopes <= 0.3)).all())
    True
    """
    lower, upper = check_bounds(lower, upper)
    training = check_bool("training", training)
    if not training and _keras_compat.training_in_layer_call():
        raise ValueError(
            "`kdt.activations.rrelu` was called with training=False inside a layer "
            "that is training: used as a layer's `activation=` it never receives "
            "`training` and would train as a plain leaky ReLU with slope "
            f"{(lower + upper) / 2:g}. Use the layer instead: "
            "`keras.layers.Dense(units)` followed by `kdt.layers.RReLU()`. In your "
            "own layer's call(), pass `training=training` (and a "
            "keras.random.SeedGenerator as `seed`)."
        )
    seed = check_seed_argument(seed)
    if x is None or isinstance(x, (str, bytes, dict, set)):
        raise invalid_type("x", "a floating-point tensor", x)
    try:
        x = ops.convert_to_tensor(x)
    except (TypeError, ValueError) as error:
        raise invalid_type("x", "a floating-point tensor", x) from error
    if not keras.backend.is_float_dtype(x.dtype):
        raise TypeError(
            "Invalid type for argument `x`: expected a floating-point tensor. "
            f"Received: x of dtype {keras.backend.standardize_dtype(x.dtype)}"
        )
    return apply_rrelu(x, lower, upper, training, seed)
