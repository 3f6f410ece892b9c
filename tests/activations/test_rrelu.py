"""kdt.activations.rrelu: values, randomness, serialization, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dnntools as kdt

X = np.array([-3.0, -1.0, 0.0, 2.0], dtype="float32")


def as_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def test_inference_uses_the_mean_slope():
    np.testing.assert_allclose(
        as_numpy(kdt.activations.rrelu(X, 0.1, 0.3)), [-0.6, -0.2, 0.0, 2.0]
    )
    default = as_numpy(kdt.activations.rrelu(X))
    np.testing.assert_allclose(default[:2], X[:2] * (1 / 8 + 1 / 3) / 2)


def test_training_with_an_int_seed_is_stateless():
    x = -np.ones((1, 1000), dtype="float32")
    first = as_numpy(kdt.activations.rrelu(x, 0.1, 0.3, training=True, seed=4))
    again = as_numpy(kdt.activations.rrelu(x, 0.1, 0.3, training=True, seed=4))
    np.testing.assert_array_equal(first, again)
    slopes = -first
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3
    assert slopes.mean() == pytest.approx(0.2, abs=0.01)


def test_training_with_a_seed_generator_draws_fresh_slopes():
    x = -np.ones((1, 1000), dtype="float32")
    generator = keras.random.SeedGenerator(0)
    first = as_numpy(kdt.activations.rrelu(x, training=True, seed=generator))
    second = as_numpy(kdt.activations.rrelu(x, training=True, seed=generator))
    assert not np.allclose(first, second)


def test_training_without_seed_uses_the_global_generator():
    x = -np.ones((1, 1000), dtype="float32")
    first = as_numpy(kdt.activations.rrelu(x, training=True))
    second = as_numpy(kdt.activations.rrelu(x, training=True))
    assert not np.allclose(first, second)
    assert (-first).min() >= 1 / 8 - 1e-6 and (-first).max() <= 1 / 3 + 1e-6


@pytest.mark.backends(
    "tensorflow", reason="tf.function(jit_compile=True) is TensorFlow's XLA route"
)
def test_works_under_xla():
    generator = keras.random.SeedGenerator(1)
    x = tf.constant(-np.ones((1, 2000), dtype="float32"))
    step = tf.function(
        lambda: kdt.activations.rrelu(x, 0.1, 0.3, training=True, seed=generator),
        jit_compile=True,
    )
    first, second = -step().numpy(), -step().numpy()
    assert not np.allclose(first, second)
    assert first.min() >= 0.1 and first.max() <= 0.3


def test_serializable_by_name():
    name = keras.saving.get_registered_name(kdt.activations.rrelu)
    assert name == "keras_dnntools>rrelu"
    config = keras.activations.serialize(kdt.activations.rrelu)
    assert keras.activations.deserialize(config) is kdt.activations.rrelu


@pytest.mark.parametrize("jit_compile", [False, "auto"])
def test_refused_as_a_layer_activation_in_training(jit_compile):
    """`Dense(activation=rrelu)` never gets `training`: fit must not silently
    train a leaky ReLU; the error points to the RReLU layer."""
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation=kdt.activations.rrelu)]
    )
    model.compile("sgd", "mse", jit_compile=jit_compile)
    x, y = np.ones((8, 6), "float32"), np.ones((8, 4), "float32")
    # Inference is what it computes anyway: the mean slope.
    dense = model.layers[0]
    pre = keras.ops.convert_to_numpy(dense.kernel)
    expected = x @ pre + keras.ops.convert_to_numpy(dense.bias)
    expected = np.where(expected >= 0, expected, expected * (1 / 8 + 1 / 3) / 2)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"kdt\.layers\.RReLU\(\)"):
        model.fit(x, y, verbose=0)


def test_inside_a_layer_that_passes_training_it_trains_with_random_slopes():
    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.generator = keras.random.SeedGenerator(1)

        def call(self, inputs, training=False):
            return kdt.activations.rrelu(
                inputs, 0.1, 0.3, training=training, seed=self.generator
            )

    x = -np.ones((1, 1000), "float32")
    slopes = -keras.ops.convert_to_numpy(Block()(x, training=True))
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3 and slopes.std() > 0.03
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Block()(x)), 0.2 * x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lower": 0.4, "upper": 0.3}, ValueError, r"`lower`.*0 <= lower <= upper"),
        ({"lower": -1.0}, ValueError, r"`lower`"),
        ({"lower": "a"}, TypeError, r"`lower`"),
        ({"upper": [0.3]}, TypeError, r"`upper`"),
        ({"training": 1}, TypeError, r"`training`.*bool"),
        ({"training": "yes"}, TypeError, r"`training`"),
        ({"seed": -3}, ValueError, r"`seed`"),
        ({"seed": 2.0}, TypeError, r"`seed`"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kdt.activations.rrelu(X, **kwargs)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match=r"`x`.*floating-point.*int32"):
        kdt.activations.rrelu(np.array([1, -2], dtype="int32"))
