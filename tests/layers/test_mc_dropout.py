"""kdt.layers MC dropout family: contract, always-on behaviour, statistics, XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dnntools as kdt
from tests.layer_contract import (
    check_layer_contract,
    check_save_load_fresh_process_many,
)

L = kdt.layers


def as_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


CASES = {
    "MCDropout": (
        lambda: L.MCDropout(0.3, noise_shape=(None, 1, 4), seed=2),
        (5, 4),
        keras.layers.Dropout,
    ),
    "MCAlphaDropout": (
        lambda: L.MCAlphaDropout(0.2, seed=1),
        (6,),
        keras.layers.AlphaDropout,
    ),
    "MCSpatialDropout1D": (
        lambda: L.MCSpatialDropout1D(0.5, seed=1),
        (5, 4),
        keras.layers.SpatialDropout1D,
    ),
    "MCSpatialDropout2D": (
        lambda: L.MCSpatialDropout2D(0.5, seed=1),
        (3, 3, 4),
        keras.layers.SpatialDropout2D,
    ),
    "MCSpatialDropout3D": (
        lambda: L.MCSpatialDropout3D(0.5, seed=1),
        (2, 2, 2, 4),
        keras.layers.SpatialDropout3D,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_contract(case, tmp_path):
    make, input_shape, _ = CASES[case]
    check_layer_contract(
        make, input_shape, tmp_path=tmp_path, deterministic=False, fresh_process=False
    )


def test_contract_save_load_in_a_fresh_process(tmp_path):
    """Check 6 of the contract, for every layer of `CASES` in one process."""
    check_save_load_fresh_process_many(
        [(make, input_shape) for make, input_shape, _ in CASES.values()], tmp_path
    )


@pytest.mark.parametrize("case", CASES)
def test_subclasses_the_keras_layer(case):
    make, _, base = CASES[case]
    assert isinstance(make(), base)
    assert isinstance(make(), keras.layers.Layer)


@pytest.mark.parametrize("case", CASES)
def test_active_in_call_predict_and_evaluate(case):
    make, input_shape, _ = CASES[case]
    layer = make()
    x = np.ones((8, *input_shape), dtype="float32")
    for training in (None, False, True):
        kwargs = {} if training is None else {"training": training}
        assert (as_numpy(layer(x, **kwargs)) != x).any(), f"inactive: {kwargs}"
    model = keras.Sequential([keras.Input(input_shape), make()])
    model.compile(loss="mse")
    first = model.predict(x, verbose=0)
    second = model.predict(x, verbose=0)
    assert (first != x).any() and (first != second).any()
    assert model.evaluate(x, x, verbose=0) > 0  # identity only if inactive


def test_drop_fraction_and_mean_are_preserved():
    x = np.ones((100, 1000), dtype="float32")
    for rate in (0.1, 0.5, 0.8):
        y = as_numpy(L.MCDropout(rate, seed=3)(x))
        assert (y == 0).mean() == pytest.approx(rate, abs=0.006)
        np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)
        assert y.mean() == pytest.approx(1.0, abs=0.02)


def test_rate_zero_is_the_identity():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    for layer in (L.MCDropout(0.0), L.MCAlphaDropout(0), L.MCSpatialDropout1D(0.0)):
        inputs = x if layer.input_spec is None else x[:, :, None]
        np.testing.assert_array_equal(as_numpy(layer(inputs)), inputs)


def test_same_seed_same_masks_and_fresh_masks_every_call():
    x = np.ones((4, 500), dtype="float32")
    layer, twin = L.MCDropout(0.5, seed=11), L.MCDropout(0.5, seed=11)
    first, second = as_numpy(layer(x)), as_numpy(layer(x))
    assert (first != second).any()
    np.testing.assert_array_equal(as_numpy(twin(x)), first)
    np.testing.assert_array_equal(as_numpy(twin(x)), second)


def test_noise_shape_shares_the_mask():
    x = np.ones((8, 5, 40), dtype="float32")
    y = as_numpy(L.MCDropout(0.5, noise_shape=(None, 1, None), seed=0)(x))
    assert (y == y[:, :1, :]).all(), "mask differs along the timesteps"
    assert 0.3 < (y == 0).mean() < 0.7
    y = as_numpy(L.MCDropout(0.5, noise_shape=[8, 5, 1], seed=0)(x))
    assert (y == y[:, :, :1]).all()


def test_alpha_dropout_keeps_mean_and_variance_of_selu_inputs():
    x = np.random.default_rng(0).normal(size=(400, 1000)).astype("float32")
    for rate in (0.05, 0.2, 0.5):
        y = as_numpy(L.MCAlphaDropout(rate, seed=4)(x))
        assert y.mean() == pytest.approx(0.0, abs=0.01)
        assert y.std() == pytest.approx(1.0, abs=0.01)
        # Dropped units sit at one value: a * alpha' + b.
        _, counts = np.unique(y, return_counts=True)
        assert counts.max() / y.size == pytest.approx(rate, abs=0.005)


def test_alpha_dropout_follows_keras_formula():
    """keras.layers.AlphaDropout's map: a * x + b kept, a * alpha' + b dropped."""
    rate = 0.3
    alpha_p = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    x = np.random.default_rng(1).normal(size=(50, 200)).astype("float32")
    y = as_numpy(L.MCAlphaDropout(rate, seed=0)(x))
    dropped = np.isclose(y, a * alpha_p + b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
    assert dropped.mean() == pytest.approx(rate, abs=0.02)


@pytest.mark.parametrize(
    ("layer", "shape", "channel_axis"),
    [
        (lambda: L.MCSpatialDropout1D(0.5, seed=0), (16, 6, 8), -1),
        (lambda: L.MCSpatialDropout2D(0.5, seed=0), (16, 3, 3, 8), -1),
        (
            lambda: L.MCSpatialDropout2D(0.5, data_format="channels_first", seed=0),
            (16, 8, 3, 3),
            1,
        ),
        (lambda: L.MCSpatialDropout3D(0.5, seed=0), (16, 2, 2, 2, 8), -1),
        (
            lambda: L.MCSpatialDropout3D(0.5, data_format="channels_first", seed=0),
            (16, 8, 2, 2, 2),
            1,
        ),
    ],
)
def test_spatial_dropout_drops_whole_channels(layer, shape, channel_axis):
    y = as_numpy(layer()(np.ones(shape, dtype="float32")))
    per_channel = np.moveaxis(y, channel_axis, 1).reshape(
        shape[0], shape[channel_axis], -1
    )
    assert (per_channel == per_channel[:, :, :1]).all(), "a channel partly dropped"
    assert set(np.unique(y).tolist()) == {0.0, 2.0}
    assert 0.3 < (per_channel[:, :, 0] == 0).mean() < 0.7


_TF_XLA = pytest.mark.backends(
    "tensorflow", reason="tf.function(jit_compile=True): TensorFlow's XLA path"
)


@_TF_XLA
@pytest.mark.parametrize("case", ["MCDropout", "MCAlphaDropout", "MCSpatialDropout2D"])
def test_fresh_masks_under_xla(case):
    make, input_shape, _ = CASES[case]
    layer = make()
    x = tf.ones((64, *input_shape))
    step = tf.function(lambda: layer(x), jit_compile=True)
    first, second = step().numpy(), step().numpy()
    assert (first != second).any()
    assert not np.isnan(first).any()


@_TF_XLA
def test_xla_uses_the_fast_generator():
    """Regression guard: under XLA our masks use ThreeFry, not the slow path.

    keras.random's default algorithm makes XLA on CPU recompute the seed
    scrambling for every element (see keras_dnntools/_random.py).
    """
    layer = L.MCDropout(0.5, seed=0)
    step = tf.function(lambda x: layer(x), jit_compile=True)
    hlo = step.experimental_get_compiler_ir(tf.ones((4, 8)))(stage="hlo")
    assert "rng_three_fry" in hlo and "rng_philox" not in hlo


def test_mixed_bfloat16_rate_is_exact():
    """The mask does not depend on the compute dtype (no bfloat16 uniforms).

    keras.layers.Dropout(0.05) under mixed_bfloat16 drops ~5.4% of the units
    (bfloat16 uniforms have 128 levels); ours drops 5% (mask from uint32 bits).
    """
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = L.MCDropout(0.05, seed=0)
    y = as_numpy(keras.ops.cast(layer(np.ones((400, 1000), "float32")), "float32"))
    assert (y == 0).mean() == pytest.approx(0.05, abs=0.0012)  # 3.5 sigma


BAD_RATES = [
    (1.0, ValueError, r"`rate`.*0.0 <= rate < 1.0.*Received: rate=1.0"),
    (-0.1, ValueError, r"`rate`"),
    (float("nan"), ValueError, r"`rate`"),
    ("0.5", TypeError, r"`rate`.*real number"),
    (None, TypeError, r"`rate`"),
    (True, TypeError, r"`rate`"),
]
CONSTRUCTORS = {
    "MCDropout": L.MCDropout,
    "MCAlphaDropout": L.MCAlphaDropout,
    "MCSpatialDropout1D": L.MCSpatialDropout1D,
    "MCSpatialDropout2D": L.MCSpatialDropout2D,
    "MCSpatialDropout3D": L.MCSpatialDropout3D,
}


@pytest.mark.parametrize("name", CONSTRUCTORS)
@pytest.mark.parametrize(("rate", "error", "match"), BAD_RATES)
def test_bad_rate(name, rate, error, match):
    with pytest.raises(error, match=match):
        CONSTRUCTORS[name](rate)


@pytest.mark.parametrize("name", CONSTRUCTORS)
@pytest.mark.parametrize(
    ("seed", "error"), [(-1, ValueError), (1.5, TypeError), ("7", TypeError)]
)
def test_bad_seed(name, seed, error):
    with pytest.raises(error, match=r"`seed`"):
        CONSTRUCTORS[name](0.5, seed=seed)


@pytest.mark.parametrize("name", ["MCDropout", "MCAlphaDropout"])
@pytest.mark.parametrize(
    ("noise_shape", "error"),
    [
        ("abc", TypeError),
        (5, TypeError),
        ((2.5, 1), TypeError),
        ((True, 1), TypeError),
        ((0, 4), ValueError),
        ((-1, None), ValueError),
    ],
)
def test_bad_noise_shape(name, noise_shape, error):
    with pytest.raises(error, match=r"`noise_shape(\[\d+\])?`"):
        CONSTRUCTORS[name](0.5, noise_shape=noise_shape)


@pytest.mark.parametrize("name", ["MCSpatialDropout2D", "MCSpatialDropout3D"])
@pytest.mark.parametrize("data_format", ["channels_middle", "NHWC", 3])
def test_bad_data_format(name, data_format):
    with pytest.raises(ValueError, match=r"`data_format`.*channels_last"):
        CONSTRUCTORS[name](0.5, data_format=data_format)


def test_generator_state_is_saved_with_the_weights(tmp_path):
    """A model restored from its weights draws the masks the original draws next
    (so a fit resumed by BackupAndRestore continues the same random stream)."""

    def make():
        return keras.Sequential(
            [keras.Input((50,)), keras.layers.Dense(50), L.MCDropout(0.5, seed=3)]
        )

    x = np.ones((4, 50), dtype="float32")
    model = make()
    model.predict(x, verbose=0)  # advance the generator
    model.save_weights(tmp_path / "m.weights.h5")
    expected = model.predict(x, verbose=0)
    restored = make()
    first_of_fresh = restored.predict(x, verbose=0)
    restored.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    assert (first_of_fresh != expected).any()


def test_weights_saved_without_generator_state_still_load():
    layer = L.MCDropout(0.5, seed=0)
    state = as_numpy(layer.seed_generator.state).copy()
    layer.load_own_variables({})
    np.testing.assert_array_equal(as_numpy(layer.seed_generator.state), state)
    store = {}
    layer.save_own_variables(store)
    assert list(store) == ["seed_generator_state"]


@pytest.mark.parametrize(
    "layer",
    [
        lambda: kdt.layers.MCDropout(0.3),
        lambda: kdt.layers.MCAlphaDropout(0.3),
        lambda: kdt.layers.MCSpatialDropout1D(0.3),
    ],
)
@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_integer_inputs_are_refused(layer, dtype):
    """1/0.7 cast to int32 is 1: the mean would be 0.7, silently."""
    x = keras.ops.ones((2, 3, 4), dtype=dtype)
    with pytest.raises(TypeError, match=f"float.*{dtype}"):
        layer()(x)


def test_float_inputs_keep_their_mean():
    x = np.ones((400, 500), "float32")
    y = keras.ops.convert_to_numpy(kdt.layers.MCDropout(0.3, seed=0)(x))
    assert abs(float(y.mean()) - 1.0) < 0.01  # 200,000 draws
