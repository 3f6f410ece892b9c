"""kdt.layers.RReLU: contract, statistics, gradient, masking, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dnntools as kdt
from tests.layer_contract import check_layer_contract

LOWER, UPPER = 0.1, 0.3


def negative_inputs(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    return -rng.uniform(0.5, 2.0, size=(1, n)).astype("float32")


def slopes_of(layer, x, **kwargs):
    y = keras.ops.convert_to_numpy(layer(x, **kwargs))
    return (y / x).ravel()


def test_contract(tmp_path):
    check_layer_contract(
        lambda: kdt.layers.RReLU(LOWER, UPPER, seed=1), (6,), tmp_path=tmp_path
    )


def test_inference_is_leaky_relu_with_the_mean_slope():
    """torch.nn.RReLU(lower, upper).eval() is leaky ReLU with slope (l + u) / 2."""
    x = np.array([[-4.0, -1.0, -0.0, 0.0, 0.5, 3.0]], dtype="float32")
    layer = kdt.layers.RReLU(LOWER, UPPER, seed=0)
    expected = np.where(x >= 0, x, x * (LOWER + UPPER) / 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=False)), expected
    )
    leaky = keras.layers.LeakyReLU(negative_slope=(LOWER + UPPER) / 2)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x)), keras.ops.convert_to_numpy(leaky(x))
    )


def test_default_bounds_are_torch_defaults():
    layer = kdt.layers.RReLU()
    assert layer.lower == pytest.approx(1 / 8)
    assert layer.upper == pytest.approx(1 / 3)


def test_training_slopes_are_uniform_within_bounds():
    x = negative_inputs()
    slopes = slopes_of(kdt.layers.RReLU(LOWER, UPPER, seed=3), x, training=True)
    assert slopes.min() >= LOWER - 1e-6 and slopes.max() <= UPPER + 1e-6
    # U(0.1, 0.3): mean 0.2, std 0.2 / sqrt(12); each decile holds ~10%.
    assert slopes.mean() == pytest.approx(0.2, abs=0.002)
    assert slopes.std() == pytest.approx(0.2 / np.sqrt(12), rel=0.02)
    counts, _ = np.histogram(slopes, bins=10, range=(LOWER, UPPER))
    np.testing.assert_allclose(counts / slopes.size, 0.1, atol=0.01)


def test_positive_inputs_pass_unchanged_in_training():
    x = np.abs(negative_inputs())
    layer = kdt.layers.RReLU(LOWER, UPPER, seed=0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x, training=True)), x
    )


def test_fresh_slopes_every_call_and_seed_reproducible():
    x = negative_inputs(1000)
    first_layer = kdt.layers.RReLU(LOWER, UPPER, seed=7)
    first = slopes_of(first_layer, x, training=True)
    second = slopes_of(first_layer, x, training=True)
    assert not np.allclose(first, second), "the same slopes on two calls"
    twin = kdt.layers.RReLU(LOWER, UPPER, seed=7)
    np.testing.assert_array_equal(slopes_of(twin, x, training=True), first)
    other = kdt.layers.RReLU(LOWER, UPPER, seed=8)
    assert not np.allclose(slopes_of(other, x, training=True), first)


@pytest.mark.backends("tensorflow", reason="tf.function is TensorFlow's compiler")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_fresh_slopes_inside_compiled_functions(jit_compile):
    x = tf.constant(negative_inputs(5000))
    layer = kdt.layers.RReLU(LOWER, UPPER, seed=5)
    step = tf.function(lambda: layer(x, training=True), jit_compile=jit_compile)
    first = (step() / x).numpy().ravel()
    second = (step() / x).numpy().ravel()
    assert not np.allclose(first, second)
    for slopes in (first, second):
        assert slopes.min() >= LOWER - 1e-6 and slopes.max() <= UPPER + 1e-6
        assert slopes.mean() == pytest.approx(0.2, abs=0.005)


@pytest.mark.backends(
    "tensorflow", reason="the reference gradient comes from tf.GradientTape"
)
def test_gradient_is_the_slope():
    x = tf.constant(np.concatenate([negative_inputs(500), -negative_inputs(500)], 1))
    layer = kdt.layers.RReLU(LOWER, UPPER, seed=2)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    gradient = tape.gradient(y, x).numpy()
    slopes = (y / x).numpy()
    negative = x.numpy() < 0
    np.testing.assert_allclose(gradient[negative], slopes[negative], rtol=1e-6)
    np.testing.assert_array_equal(gradient[~negative], 1.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=False)
    gradient = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(gradient[negative], 0.2, rtol=1e-6)


# keras-nightly (3.16.0.dev) sets `supports_masking = False` on RNN layers (they
# take the mask through `call(mask=...)`) and warns for every masked input of
# such a layer, although the LSTM does use the mask: a false alarm of Keras's.
@pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")
def test_masking_passes_through():
    inputs = keras.Input((3,), dtype="int32")
    embedding = keras.layers.Embedding(5, 4, mask_zero=True)
    embedded = embedding(inputs)
    layer = kdt.layers.RReLU(seed=0)
    outputs = layer(embedded)
    assert layer.supports_masking
    tokens = np.array([[1, 2, 0]])
    mask = layer.compute_mask(embedded, keras.ops.not_equal(tokens, 0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), [[1, 1, 0]])
    lstm = keras.layers.LSTM(2)
    model = keras.Model(inputs, lstm(outputs))
    # The masked step is skipped: the same as the sequence without it.
    short_inputs = keras.Input((2,), dtype="int32")
    short = keras.Model(short_inputs, lstm(layer(embedding(short_inputs))))
    np.testing.assert_allclose(
        model.predict(tokens, verbose=0),
        short.predict(tokens[:, :2], verbose=0),
        rtol=1e-6,
    )


def test_lower_equal_upper_is_leaky_relu_in_training_too():
    x = negative_inputs(100)
    layer = kdt.layers.RReLU(0.25, 0.25, seed=0)
    np.testing.assert_allclose(slopes_of(layer, x, training=True), 0.25, rtol=1e-6)


def test_is_a_keras_layer_and_registered():
    layer = kdt.layers.RReLU()
    assert isinstance(layer, keras.layers.Layer)
    assert keras.saving.get_registered_name(kdt.layers.RReLU) == "keras_dnntools>RReLU"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lower": 0.5, "upper": 0.2}, ValueError, r"`lower`.*0 <= lower <= upper"),
        ({"lower": -0.1}, ValueError, r"`lower`.*Received: lower=-0.1"),
        ({"lower": "0.1"}, TypeError, r"`lower`.*real number"),
        ({"upper": None}, TypeError, r"`upper`.*real number"),
        ({"upper": True}, TypeError, r"`upper`"),
        ({"upper": float("nan")}, ValueError, r"`upper`"),
        ({"lower": float("-inf")}, ValueError, r"`lower`"),
        ({"seed": -1}, ValueError, r"`seed`.*Received: seed=-1"),
        ({"seed": 1.5}, TypeError, r"`seed`"),
        ({"seed": "1"}, TypeError, r"`seed`"),
        ({"unknown": 1}, ValueError, r"unknown"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kdt.layers.RReLU(**kwargs)


def test_bfloat16_slopes_keep_their_mean():
    """Slopes are drawn in float32 then rounded: no bias from 128-level uniforms."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = kdt.layers.RReLU(LOWER, UPPER, seed=0)
    y = layer(-np.ones((400, 1000), dtype="float32"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    slopes = -as_float32(y)
    assert slopes.mean() == pytest.approx(0.2, abs=0.0005)


def as_float32(tensor):
    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32"))


def test_builds_on_first_call_so_a_subclass_build_runs():
    """Like keras.layers.LeakyReLU: not built in __init__ (a subclass's own
    build() would never run otherwise)."""
    calls = []

    class Recording(kdt.layers.RReLU):
        def build(self, input_shape):
            calls.append(tuple(input_shape))
            super().build(input_shape)

    layer = Recording(seed=0)
    assert not layer.built
    layer(np.ones((2, 3), "float32"))
    assert layer.built and calls == [(2, 3)]
    plain = kdt.layers.RReLU(seed=0)
    plain(np.ones((2, 3), "float32"))
    assert plain.built
