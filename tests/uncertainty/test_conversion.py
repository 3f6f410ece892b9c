"""to_mc_dropout: same weights, dropout always on, every dropout kind."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests.uncertainty._models import classifier, data

to_mc_dropout = kdt.uncertainty.to_mc_dropout


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def test_weights_are_shared_both_ways():
    model = classifier()
    mc_model = to_mc_dropout(model)
    assert len(mc_model.weights) == len(model.weights)
    for ours, theirs in zip(mc_model.weights, model.weights, strict=True):
        assert ours is theirs
    x, y = data(), np.arange(40) % 3
    before = _numpy(model.layers[0].kernel).copy()
    mc_model.compile("sgd", "sparse_categorical_crossentropy")
    mc_model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(_numpy(model.layers[0].kernel), before)
    before = _numpy(mc_model.layers[-1].kernel).copy()
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(_numpy(mc_model.layers[-1].kernel), before)


def test_outputs_vary_between_calls_and_the_original_stays_deterministic():
    model = classifier()
    mc_model = to_mc_dropout(model)
    x = data()
    assert not np.array_equal(
        mc_model.predict(x, verbose=0), mc_model.predict(x, verbose=0)
    )
    assert not np.array_equal(_numpy(mc_model(x)), _numpy(mc_model(x)))
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    assert all(
        type(layer) is keras.layers.Dropout
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout)
    )


def test_every_dropout_kind_gets_its_counterpart_with_its_settings():
    inputs = keras.Input((4, 4, 4, 3))
    x = keras.layers.SpatialDropout3D(0.1, data_format="channels_first", seed=3)(inputs)
    x = keras.layers.Reshape((16, 12))(x)
    x = keras.layers.SpatialDropout1D(0.2)(x)
    x = keras.layers.Reshape((4, 4, 12))(x)
    x = keras.layers.SpatialDropout2D(0.3, name="spatial")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.AlphaDropout(0.4)(x)
    x = keras.layers.Dropout(0.5, noise_shape=(None, 192))(x)
    x = kdt.layers.MCDropout(0.6)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    mc_model = to_mc_dropout(model)
    converted = [
        layer for layer in mc_model.layers if isinstance(layer, kdt.layers.MCDropout)
    ]
    kinds = {type(layer).__name__: layer for layer in mc_model.layers}
    assert kinds["MCSpatialDropout3D"].data_format == "channels_first"
    assert kinds["MCSpatialDropout3D"].seed == 3
    assert kinds["MCSpatialDropout1D"].rate == 0.2
    assert kinds["MCSpatialDropout2D"].name == "spatial"
    assert kinds["MCAlphaDropout"].rate == 0.4
    assert [layer.rate for layer in converted] == [0.5, 0.6]
    assert converted[0].noise_shape == (None, 192)
    assert not any(
        type(layer) in (keras.layers.Dropout, keras.layers.AlphaDropout)
        for layer in mc_model.layers
    )


def test_nested_models_are_converted():
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8), keras.layers.Dropout(0.5)]
    )
    outer = keras.Sequential([keras.Input((5,)), inner, keras.layers.Dense(1)])
    mc_model = to_mc_dropout(outer)
    x = data()
    assert not np.array_equal(_numpy(mc_model(x)), _numpy(mc_model(x)))
    assert mc_model.layers[0].layers[0] is inner.layers[0]
    np.testing.assert_array_equal(_numpy(outer(x)), _numpy(outer(x)))


def test_batchnorm_stays_in_inference_mode():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2),
        ]
    )
    mc_model = to_mc_dropout(model)
    moving_mean = _numpy(model.layers[1].moving_mean).copy()
    mc_model.predict(data(n=64, inputs=4), verbose=0)
    np.testing.assert_array_equal(_numpy(model.layers[1].moving_mean), moving_mean)


def test_mc_predict_on_the_converted_model_equals_the_original():
    model = classifier()
    x = data()
    first = kdt.uncertainty.mc_predict(model, x, 10, seed=4)
    second = kdt.uncertainty.mc_predict(to_mc_dropout(model), x, 10, seed=4)
    np.testing.assert_array_equal(first.mean, second.mean)


def test_save_and_load_keeps_the_mc_layers(tmp_path):
    mc_model = to_mc_dropout(classifier())
    path = tmp_path / "mc.keras"
    mc_model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[1], kdt.layers.MCDropout)
    for a, b in zip(loaded.weights, mc_model.weights, strict=True):
        np.testing.assert_array_equal(_numpy(a), _numpy(b))


def test_bad_models_are_refused():
    with pytest.raises(TypeError, match="`model`"):
        to_mc_dropout(keras.layers.Dropout(0.5))
    with pytest.raises(ValueError, match="no dropout layer"):
        to_mc_dropout(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dropout = keras.layers.Dropout(0.5)

        def call(self, inputs):
            return self.dropout(inputs)

    net = Net()
    net(np.ones((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        to_mc_dropout(net)


def test_dropout_inside_time_distributed_is_converted():
    inner_model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), keras.layers.Dropout(0.5)]
    )
    model = keras.Sequential(
        [
            keras.Input((3, 4)),
            keras.layers.TimeDistributed(keras.layers.Dropout(0.5)),
            keras.layers.TimeDistributed(inner_model),
            keras.layers.Dense(2),
        ]
    )
    mc_model = to_mc_dropout(model)
    assert isinstance(mc_model.layers[0].layer, kdt.layers.MCDropout)
    assert isinstance(mc_model.layers[1].layer.layers[1], kdt.layers.MCDropout)
    assert mc_model.layers[1].layer.layers[0] is inner_model.layers[0]  # shared
    x = np.ones((64, 3, 4), "float32")
    first = keras.ops.convert_to_numpy(mc_model(x))
    assert not np.array_equal(first, keras.ops.convert_to_numpy(mc_model(x)))
    # Each dropout on 50%: half the first layer's inputs are zero.
    probe = to_mc_dropout(keras.Sequential([keras.Input((3, 4)), model.layers[0]]))
    zeros = (keras.ops.convert_to_numpy(probe(x)) == 0).mean()
    assert 0.45 < zeros < 0.55
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(model(x))
    )


class _CustomBlock(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)
        self.drop = keras.layers.Dropout(0.5, name="hidden_drop")

    def call(self, inputs, training=None):
        return self.drop(self.dense(inputs), training=training)


def test_unreachable_dropout_raises_naming_the_layer():
    model = keras.Sequential(
        [keras.Input((4,)), _CustomBlock(name="custom_block"), keras.layers.Dense(1)]
    )
    with pytest.raises(ValueError, match=r"custom_block.*hidden_drop"):
        to_mc_dropout(model)
    nested = keras.Sequential(
        [keras.Input((4,)), keras.Sequential([_CustomBlock(name="deep_block")])]
    )
    with pytest.raises(ValueError, match="deep_block"):
        to_mc_dropout(nested)
