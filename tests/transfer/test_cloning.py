"""clone_with_weights and reuse_layers ("model B on model A")."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests.transfer.models import data, mlp, nested, weights_by_path


def assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for left, right in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(left.numpy(), right.numpy(), err_msg=left.path)


def fit(model, epochs=1):
    x, y = data(
        32, input_dim=model.inputs[0].shape[-1], outputs=model.outputs[0].shape[-1]
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(x * 2 + 1, y, epochs=epochs, batch_size=8, verbose=0)


def test_clone_with_weights_is_an_independent_copy():
    model, _ = nested()
    model.layers[0].layers[0].trainable = False
    fit(model)
    clone = kdt.transfer.clone_with_weights(model)
    assert_same_weights(model, clone)
    assert not any(a is b for a, b in zip(model.weights, clone.weights, strict=True))
    assert not clone.layers[0].layers[0].trainable
    before = weights_by_path(model)
    kdt.transfer.unfreeze(clone, keep_batchnorm_frozen=False)
    fit(clone)
    for path, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    x, _ = data(8)
    assert not np.array_equal(model.predict(x, verbose=0), clone.predict(x, verbose=0))


def test_clone_with_weights_functional_and_subclassed():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(3)(inputs))
    functional = keras.Model(inputs, outputs)
    assert_same_weights(functional, kdt.transfer.clone_with_weights(functional))

    @keras.saving.register_keras_serializable(package="kdt_tests")
    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    tiny = Tiny()
    tiny(np.zeros((1, 4), "float32"))
    clone = kdt.transfer.clone_with_weights(tiny)
    assert_same_weights(tiny, clone)
    assert clone.dense is not tiny.dense


def test_reuse_layers_clone_leaves_source_untouched():
    model_a = mlp((8, 8, 3), name="a")
    fit(model_a)
    before = weights_by_path(model_a)
    head = keras.layers.Dense(1, name="head_b")
    model_b = kdt.transfer.reuse_layers(model_a, head=head)
    assert isinstance(model_b, keras.Sequential)
    assert [layer.trainable for layer in model_b.layers] == [False, False, True]
    assert model_b.layers[-1] is head
    assert not any(layer in model_a.layers for layer in model_b.layers)
    fit(model_b)
    kdt.transfer.unfreeze(model_b)
    fit(model_b)
    for path, value in weights_by_path(model_a).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    # Model B started from A's weights.
    assert model_b.layers[0].kernel.shape == model_a.layers[0].kernel.shape


def test_reuse_layers_without_clone_shares_layers():
    model_a = mlp((8, 8, 3), name="a")
    model_b = kdt.transfer.reuse_layers(
        model_a, head=[keras.layers.Dense(4), keras.layers.Dense(1)], clone=False
    )
    assert model_b.layers[0] is model_a.layers[0]
    assert not model_a.layers[0].trainable  # shared: freezing B froze A's layer
    kdt.transfer.unfreeze(model_b)
    kernel = model_a.layers[0].kernel.numpy().copy()
    fit(model_b)
    assert not np.array_equal(model_a.layers[0].kernel.numpy(), kernel)


def test_reuse_layers_functional_source_and_options():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    normalized = keras.layers.BatchNormalization(name="bn")(hidden)
    outputs = keras.layers.Dense(3, name="out")(normalized)
    model_a = keras.Model(inputs, outputs)
    model_b = kdt.transfer.reuse_layers(
        model_a, drop_top=2, head=keras.layers.Dense(1, name="new"), freeze_base=False
    )
    assert [layer.name for layer in model_b.layers][1:] == ["hidden", "new"]
    assert all(layer.trainable for layer in model_b.layers)
    np.testing.assert_array_equal(
        model_b.get_layer("hidden").kernel.numpy(),
        model_a.get_layer("hidden").kernel.numpy(),
    )
    base_only = kdt.transfer.reuse_layers(model_a, head=None)
    assert base_only.outputs[0].shape == (None, 8)
    whole = kdt.transfer.reuse_layers(model_a, drop_top=0, freeze_base=True)
    assert whole.trainable_weights == []


def test_reuse_layers_nested_base():
    model, base = nested()
    model_b = kdt.transfer.reuse_layers(model, drop_top=2, head=keras.layers.Dense(2))
    assert model_b.layers[0] is not base
    assert not model_b.layers[0].trainable
    assert model_b.trainable_weights == model_b.layers[-1].trainable_weights


def test_reuse_layers_rejects_branching_cut():
    inputs = keras.Input((4,))
    left = keras.layers.Dense(3, name="left")(inputs)
    right = keras.layers.Dense(3, name="right")(inputs)
    outputs = keras.layers.Add(name="add")([left, right])
    model_a = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"`drop_top`.*one top layer"):
        kdt.transfer.reuse_layers(model_a, drop_top=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"drop_top": 3}, ValueError, r"`drop_top`.*from 0 to 2.*drop_top=3"),
        ({"drop_top": -1}, ValueError, r"`drop_top`"),
        ({"head": "dense"}, TypeError, r"`head`"),
        ({"head": [keras.layers.Dense(1), 3]}, TypeError, r"`head`"),
        ({"clone": "yes"}, TypeError, r"`clone`"),
        ({"freeze_base": None}, TypeError, r"`freeze_base`"),
    ],
)
def test_reuse_layers_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kdt.transfer.reuse_layers(mlp((8, 8, 3)), **kwargs)


def test_reuse_layers_rejects_subclassed_and_unbuilt_sources():
    class Tiny(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match=r"`source`.*Sequential or Functional"):
        kdt.transfer.reuse_layers(Tiny())
    unbuilt = keras.Sequential([keras.layers.Dense(2), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"`source`.*built"):
        kdt.transfer.reuse_layers(unbuilt)
    with pytest.raises(TypeError, match=r"`model`"):
        kdt.transfer.clone_with_weights("model")


def _two_heads():
    inputs = keras.Input((4,))
    trunk = keras.layers.Dense(8, activation="relu", name="trunk")(inputs)
    main = keras.layers.Dense(3, activation="softmax", name="main")(trunk)
    aux = keras.layers.Dense(1, name="aux")(trunk)
    return keras.Model(inputs, [main, aux])


def test_reuse_layers_puts_the_head_on_the_shared_trunk_of_a_multi_output_model():
    source = _two_heads()
    model = kdt.transfer.reuse_layers(
        source, drop_top=2, head=keras.layers.Dense(2, name="new_head")
    )
    assert [layer.name for layer in model.layers[1:]] == ["trunk", "new_head"]
    x = np.ones((2, 4), "float32")
    trunk = keras.Model(source.inputs[0], source.get_layer("trunk").output)
    expected = model.get_layer("new_head")(trunk(x))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)),
        keras.ops.convert_to_numpy(expected),
        rtol=1e-6,
    )


def test_reuse_layers_refuses_a_drop_that_leaves_another_output_in_place():
    with pytest.raises(ValueError, match=r"drop_top.*\['main'\]"):
        kdt.transfer.reuse_layers(_two_heads(), drop_top=1, head=keras.layers.Dense(2))


def test_clones_do_not_share_buffers_and_both_train():
    source = _two_heads()
    source.compile("sgd", ["mse", "mse"])
    clone = kdt.transfer.clone_with_weights(source)
    clone.compile("sgd", ["mse", "mse"])
    x = np.ones((8, 4), "float32")
    y = [np.zeros((8, 3), "float32"), np.zeros((8, 1), "float32")]
    before = [w.copy() for w in source.get_weights()]
    clone.fit(x, y, verbose=0)
    source.fit(x, y, verbose=0)  # on JAX, a shared buffer was deleted here
    clone.predict(x, verbose=0)
    for a, b in zip(before, clone.get_weights(), strict=True):
        assert a.shape == b.shape
