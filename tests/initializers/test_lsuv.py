"""LSUV makes a deep plain MLP trainable, and every layer's std hits the target."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from keras_dnntools.diagnostics import _inspection
from tests.diagnostics import models as m

X, XS, Y = m.digits()


def _deep(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(32, activation="relu") for _ in range(20)]
        + [keras.layers.Dense(10)]
    )
    model.compile(
        keras.optimizers.SGD(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _accuracy_after_training(model):
    history = model.fit(X, Y, epochs=5, batch_size=32, verbose=0)
    return history.history["accuracy"][-1]


def _layer_stds(model, x):
    watched = _inspection.watched_layers(model)
    probe = keras.Model(model.inputs[0], [w.output for w in watched])
    return [float(np.std(keras.ops.convert_to_numpy(o))) for o in probe(x)]


def test_deep_mlp_trains_only_after_lsuv():
    assert _accuracy_after_training(_deep()) < 0.3  # stuck near chance (0.1)
    model = kdt.initializers.lsuv(_deep(), X[:512])
    assert _accuracy_after_training(model) > 0.5


@pytest.mark.parametrize("target_std, tolerance", [(1.0, 0.1), (0.5, 0.02)])
def test_every_layer_std_is_within_tolerance(target_std, tolerance):
    model = kdt.initializers.lsuv(
        _deep(), X[:512], target_std=target_std, tolerance=tolerance
    )
    stds = _layer_stds(model, X[:512])
    assert np.all(np.abs(np.array(stds) - target_std) <= tolerance), stds
    # Before: the default init lets the signal fade layer after layer.
    assert _layer_stds(_deep(), X[:512])[-2] < 0.1


def test_kernels_start_orthonormal_and_keep_their_direction():
    model = kdt.initializers.lsuv(_deep(), X[:512])
    kernel = keras.ops.convert_to_numpy(model.layers[5].kernel).astype("float64")
    gram = kernel.T @ kernel
    # An orthonormal matrix times one scale: a multiple of the identity.
    np.testing.assert_allclose(gram, np.eye(32) * gram[0, 0], atol=1e-4 * gram[0, 0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="`target_std`"):
        kdt.initializers.lsuv(_deep(), X, target_std=0)
    with pytest.raises(TypeError, match="`max_iterations`"):
        kdt.initializers.lsuv(_deep(), X, max_iterations=1.5)
    with pytest.raises(ValueError, match="`x`"):
        kdt.initializers.lsuv(_deep(), np.zeros((8, 64), "float32"))


def test_bounded_activations_are_scaled_on_their_pre_activation():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(32, activation="tanh") for _ in range(6)]
    )
    kdt.initializers.lsuv(model, X[:512], tolerance=0.05)
    assert all(layer.activation is keras.activations.tanh for layer in model.layers)
    x = X[:512]
    for layer in model.layers:
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
        pre_activation = x @ kernel + bias
        assert abs(np.std(pre_activation) - 1.0) <= 0.05
        x = np.tanh(pre_activation)
