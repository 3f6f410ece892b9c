"""Monte Carlo dropout layers: Keras's dropout layers, active at inference too.

Each class subclasses the Keras layer it extends (so `isinstance(layer,
keras.layers.Dropout)` and friends hold) and only changes `call`: the layer
drops units in `fit`, `predict`, `evaluate` and in a plain call alike,
whatever `training` says. The masks come from :mod:`keras_dnntools._random`,
which keeps them fast under XLA (`jit_compile=True`) as well.

Reference: [Gal and Ghahramani, 2016, "Dropout as a Bayesian Approximation:
Representing Model Uncertainty in Deep Learning"](https://arxiv.org/abs/1506.02142).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_dnntools import _random
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_choice,
    check_dtype,
    check_float,
    check_float_inputs,
    check_int,
    check_name,
    check_seed,
    check_sequence,
    invalid_value,
)
from keras_dnntools.layers._seed_state import SeedStateMixin

# SELU's constants, as in keras.layers.AlphaDropout.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _check_rate(rate: Any) -> float:
    return check_float("rate", rate, low=0.0, high=1.0, high_inclusive=False)


_NOISE_SHAPE_EXPECTED = "None or a tuple/list of positive integers and None"


def _noise_size(name: str, size: Any) -> int | None:
    if size is None:
        return None
    return check_int(
        name, size, low=1, high=2**63 - 1, expected="a positive integer or None"
    )


def _check_noise_shape(noise_shape: Any) -> tuple[int | None, ...] | None:
    """`None`, or a sequence of positive ints and `None`s; returned as a tuple."""
    if noise_shape is None:
        return None
    return check_sequence(
        "noise_shape", noise_shape, _noise_size, expected=_NOISE_SHAPE_EXPECTED
    )


def check_noise_shape_against(noise_shape: Any, inputs: Any) -> None:
    """A `noise_shape` must have the inputs' rank and sizes that broadcast."""
    if noise_shape is None:
        return
    shape = tuple(inputs.shape)
    compatible = len(noise_shape) == len(shape) and all(
        size is None or size == 1 or dim is None or size == dim
        for size, dim in zip(noise_shape, shape, strict=False)
    )
    if not compatible:
        raise invalid_value(
            "noise_shape",
            f"{len(shape)} entries (the inputs' rank), each None, 1 or the "
            "inputs' size on that axis",
            noise_shape,
            inputs_shape=shape,
        )


def _check_float_inputs(layer: Any, inputs: Any) -> None:
    # Integer inputs would round the 1 / (1 - rate) scale (0.3 -> 1).
    check_float_inputs(
        layer,
        inputs,
        "dropout scales the kept values by 1 / (1 - rate), which an integer "
        "dtype cannot hold",
    )


def _check_data_format(data_format: Any) -> Any:
    return check_choice(
        "data_format", data_format, (None, "channels_last", "channels_first")
    )


class _MCUnitDropout(SeedStateMixin):
    """The checked constructor shared by `MCDropout` and `MCAlphaDropout`."""

    def __init__(
        self,
        rate: float,
        noise_shape: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        rate = _check_rate(rate)
        noise_shape = _check_noise_shape(noise_shape)
        seed = check_seed("seed", seed)
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)


@public("layers", serializable=True)
class MCDropout(_MCUnitDropout, keras.layers.Dropout):
    """Dropout that stays active at inference (Monte Carlo dropout).

    Same arguments and training behaviour as `keras.layers.Dropout`: each
    element is set to 0 with probability `rate` and the others are scaled by
    `1 / (1 - rate)`, so the expected sum is unchanged. Unlike Keras's layer
    it also drops at inference (`predict`, `evaluate`, a plain call): averaging
    many stochastic predictions approximates Bayesian model averaging and
    their spread measures the model's uncertainty (see
    `kdt.uncertainty.mc_predict`).

    Reference: [Gal and Ghahramani, 2016](https://arxiv.org/abs/1506.02142).

    Args:
        rate: Float in `[0, 1)`, the fraction of the input units to drop.
        noise_shape: `None` or a tuple of positive integers and `None`s, the
            shape of the binary mask multiplied with the input; a `None` entry
            takes the input's size. For inputs `(batch, timesteps, features)`,
            `noise_shape=(None, 1, None)` drops the same features at every
            timestep.
        seed: `None` or an integer in `[0, 2**31 - 1]` seeding the masks.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any rank.
        training: Ignored: the layer always drops units.

    Raises:
        TypeError: if an argument has the wrong type, or (when called) the
            inputs are not floating-point.
        ValueError: if `rate` is outside `[0, 1)`, `seed` is negative or
            `noise_shape` has a non-positive size.

    Example:

    >>> layer = kdt.layers.MCDropout(0.5, seed=0)
    >>> y = keras.ops.convert_to_numpy(layer(np.ones((2, 1000), "float32")))
    >>> sorted(np.unique(y).tolist())  # dropped at inference too
    [0.0, 2.0]
    >>> 0.45 < float((y == 0).mean()) < 0.55
    True
    """

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        _check_float_inputs(self, inputs)
        check_noise_shape_against(self.noise_shape, inputs)
        if self.rate == 0:
            return inputs
        return _random.dropout(
            inputs, self.rate, self.seed_generator, noise_shape=self.noise_shape
        )


@public("layers", serializable=True)
class MCAlphaDropout(_MCUnitDropout, keras.layers.AlphaDropout):
    """`keras.layers.AlphaDropout` that stays active at inference, for SELU nets.

    Dropped units are set to SELU's negative saturation value and an affine
    correction keeps the mean and variance of standardized inputs, so a
    self-normalizing network stays normalized. Active in training and at
    inference alike (Monte Carlo dropout).

    Reference: [Klambauer et al., 2017, "Self-Normalizing Neural
    Networks"](https://arxiv.org/abs/1706.02515).

    Args:
        rate: Float in `[0, 1)`: the drop probability. The multiplicative
            noise has standard deviation `sqrt(rate / (1 - rate))`.
        noise_shape: `None` or a tuple of positive integers and `None`s, the
            shape of the binary mask (`None` entries follow the input).
        seed: `None` or an integer in `[0, 2**31 - 1]` seeding the masks.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any rank.
        training: Ignored: the layer always drops units.

    Raises:
        TypeError: if an argument has the wrong type, or (when called) the
            inputs are not floating-point.
        ValueError: if `rate` is outside `[0, 1)`, `seed` is negative or
            `noise_shape` has a non-positive size.

    Example:

    >>> layer = kdt.layers.MCAlphaDropout(0.2, seed=0)
    >>> x = np.random.default_rng(0).normal(size=(200, 500)).astype("float32")
    >>> y = keras.ops.convert_to_numpy(layer(x))
    >>> bool(abs(y.mean()) < 0.02 and abs(y.std() - 1.0) < 0.02)
    True
    """

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        _check_float_inputs(self, inputs)
        check_noise_shape_against(self.noise_shape, inputs)
        if self.rate == 0:
            return inputs
        rate = self.rate
        mask = _random.keep_mask(
            _random.noise_shape_of(inputs, self.noise_shape),
            rate,
            self.seed_generator,
        )
        alpha_p = -_SELU_ALPHA * _SELU_SCALE
        a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * rate
        dtype = inputs.dtype
        kept = ops.where(mask, inputs, ops.cast(alpha_p, dtype))
        return ops.add(ops.multiply(kept, ops.cast(a, dtype)), ops.cast(b, dtype))


def _spatial_call(layer: Any, inputs: Any, noise_shape: Any) -> Any:
    _check_float_inputs(layer, inputs)
    if layer.rate == 0:
        return inputs
    return _random.dropout(inputs, layer.rate, layer.seed_generator, noise_shape)


_SPATIAL_DOC = """Always-active version of `keras.layers.{base}` (Monte Carlo dropout).

    Drops entire {what} (the same channels at every position), with the same
    arguments and scaling as Keras's layer, in training and at inference
    alike.

    Reference: [Tompson et al., 2014](https://arxiv.org/abs/1411.4280).

    Args:
        rate: Float in `[0, 1)`, the fraction of the channels to drop.{data_format}
        seed: `None` or an integer in `[0, 2**31 - 1]` seeding the masks.
        name: The layer's name.
        dtype: The layer's dtype or dtype policy.

    Call arguments:
        inputs: A {rank}D tensor.
        training: Ignored: the layer always drops channels.

    Raises:
        TypeError: if an argument has the wrong type, or (when called) the
            inputs are not floating-point.
        ValueError: if `rate` is outside `[0, 1)` or `seed` is negative{bad_format}.

    Example:

    >>> layer = kdt.layers.MCSpatialDropout{n}D(0.5, seed=0)
    >>> y = keras.ops.convert_to_numpy(layer(np.ones({shape}, "float32")))
    >>> per_channel = y.reshape(-1, y.shape[-1])
    >>> bool((per_channel == per_channel[0]).all())  # whole channels dropped
    True
    """

_DATA_FORMAT_DOC = """
        data_format: `"channels_last"`, `"channels_first"` or `None` (Keras's
            `image_data_format()`)."""


def _spatial_doc(n: int, what: str, shape: str) -> str:
    return _SPATIAL_DOC.format(
        base=f"SpatialDropout{n}D",
        what=what,
        data_format="" if n == 1 else _DATA_FORMAT_DOC,
        bad_format="" if n == 1 else " or `data_format` unknown",
        rank=n + 2,
        n=n,
        shape=shape,
    )


@public("layers", serializable=True)
class MCSpatialDropout1D(SeedStateMixin, keras.layers.SpatialDropout1D):
    __doc__ = _spatial_doc(1, "1D feature maps", "(1, 6, 4)")

    def __init__(
        self, rate: float, seed: int | None = None, name: Any = None, dtype: Any = None
    ) -> None:
        rate = _check_rate(rate)
        seed = check_seed("seed", seed)
        name, dtype = check_name("name", name), check_dtype("dtype", dtype)
        super().__init__(rate, seed=seed, name=name, dtype=dtype)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        shape = ops.shape(inputs)
        return _spatial_call(self, inputs, (shape[0], 1, shape[2]))


def _channel_noise_shape(inputs: Any, data_format: str) -> tuple[Any, ...]:
    shape = ops.shape(inputs)
    ones = (1,) * (len(shape) - 2)
    if data_format == "channels_first":
        return (shape[0], shape[1], *ones)
    return (shape[0], *ones, shape[-1])


class _MCChannelDropout(SeedStateMixin):
    """The shared body of the 2D and 3D layers (they differ only in their base)."""

    def __init__(
        self,
        rate: float,
        data_format: str | None = None,
        seed: int | None = None,
        name: Any = None,
        dtype: Any = None,
    ) -> None:
        rate = _check_rate(rate)
        data_format = _check_data_format(data_format)
        seed = check_seed("seed", seed)
        name, dtype = check_name("name", name), check_dtype("dtype", dtype)
        super().__init__(
            rate, data_format=data_format, seed=seed, name=name, dtype=dtype
        )

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return _spatial_call(
            self, inputs, _channel_noise_shape(inputs, self.data_format)
        )


@public("layers", serializable=True)
class MCSpatialDropout2D(_MCChannelDropout, keras.layers.SpatialDropout2D):
    __doc__ = _spatial_doc(2, "2D feature maps", "(1, 3, 3, 4)")


@public("layers", serializable=True)
class MCSpatialDropout3D(_MCChannelDropout, keras.layers.SpatialDropout3D):
    __doc__ = _spatial_doc(3, "3D feature maps", "(1, 2, 2, 2, 4)")
