"""The RReLU layer (randomized leaky ReLU)."""

from __future__ import annotations

from typing import Any

import keras

from keras_dnntools._registry import public
from keras_dnntools._validation import check_float_inputs, check_seed
from keras_dnntools.activations.rrelu import (
    DEFAULT_LOWER,
    DEFAULT_UPPER,
    apply_rrelu,
    check_bounds,
)
from keras_dnntools.layers._seed_state import SeedStateMixin


@public("layers", serializable=True)
class RReLU(SeedStateMixin, keras.layers.Layer):
    """Randomized leaky rectified linear unit.

    `f(x) = x` for `x >= 0` and `a * x` otherwise. In training every element
    gets its own slope `a`, drawn from the uniform distribution U(lower, upper)
    afresh on every call (with `keras.random` and the layer's own
    `keras.random.SeedGenerator`, so it also works inside `tf.function` and
    XLA-compiled steps). At inference the slope is the fixed mean
    `(lower + upper) / 2`: the same output as `torch.nn.RReLU` in eval mode,
    and as `keras.layers.LeakyReLU(negative_slope=(lower + upper) / 2)`. The
    gradient with respect to a negative input is its slope. Masks pass
    through unchanged. Under a `float16`/`bfloat16` compute dtype the slopes
    are drawn in float32 and rounded to that dtype.

    Reference: [Xu et al., 2015, "Empirical Evaluation of Rectified
    Activations in Convolutional Network"](https://arxiv.org/abs/1505.00853).

    Args:
        lower: Lower bound of the slope distribution, `0 <= lower <= upper`.
            Defaults to `1/8`.
        upper: Upper bound of the slope distribution. Defaults to `1/3`.
        seed: `None` or an integer in `[0, 2**31 - 1]` seeding the layer's random
            slopes.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any shape.
        training: Python boolean: random slopes (`True`) or their mean.

    Input shape:
        Arbitrary.

    Output shape:
        Same as the input.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `lower` or `upper` is out of range, or `seed` is
            negative.

    Example:

    >>> layer = kdt.layers.RReLU(lower=0.1, upper=0.3, seed=0)
    >>> x = np.array([[-2.0, 1.0]], dtype="float32")
    >>> keras.ops.convert_to_numpy(layer(x))  # inference: slope 0.2
    array([[-0.4,  1. ]], dtype=float32)
    >>> y = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> bool(-0.6 <= y[0, 0] <= -0.2), float(y[0, 1])
    (True, 1.0)
    """

    def __init__(
        self,
        lower: float = DEFAULT_LOWER,
        upper: float = DEFAULT_UPPER,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lower, self.upper = check_bounds(lower, upper)
        self.seed = check_seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.supports_masking = True
        # No `self.built = True` here: built on first call, like any Keras layer,
        # so that a subclass's own `build()` runs.

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        check_float_inputs(
            self, inputs, "the random slopes are fractions an integer cannot hold"
        )
        return apply_rrelu(
            inputs, self.lower, self.upper, bool(training), self.seed_generator
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"lower": self.lower, "upper": self.upper, "seed": self.seed})
        return config
