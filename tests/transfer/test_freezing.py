"""freeze / unfreeze: positions, nested models, BatchNormalization, errors."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from keras_dnntools.transfer._weighted_layers import weighted_layers
from tests.transfer.models import data, mlp, nested, trainable_names, weights_by_path


def flags(model):
    return [layer.trainable for layer in model.layers]


def test_freeze_everything():
    model = mlp()
    assert kdt.transfer.freeze(model) is model
    assert model.trainable_weights == []
    assert not model.trainable


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        (0, [False, True, True, True]),
        (2, [False, False, False, True]),
        (-2, [False, False, False, True]),
        ("mlp_dense_1", [False, False, True, True]),
    ],
)
def test_freeze_until_index_or_name(until, expected):
    model = mlp()
    kdt.transfer.freeze(model, until=until)
    assert flags(model) == expected
    assert model.trainable


def test_freeze_until_leaves_the_top_as_it_was():
    model = mlp()
    model.layers[3].trainable = False
    kdt.transfer.freeze(model, until=0)
    assert flags(model) == [False, True, True, False]


def test_freeze_until_counts_input_layer_of_functional_models():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    outputs = keras.layers.Dense(1, name="out")(hidden)
    model = keras.Model(inputs, outputs)
    kdt.transfer.freeze(model, until=1)  # model.layers[0] is the InputLayer
    assert [layer.name for layer in model.layers if not layer.trainable][-1] == "hidden"
    assert trainable_names(model) == sorted(v.path for v in model.layers[2].weights)


def test_nested_base_frozen_as_one_layer_and_by_inner_name():
    model, base = nested()
    kdt.transfer.freeze(model, until="base")
    assert not base.trainable
    assert trainable_names(model) == sorted(v.path for v in model.layers[-1].weights)

    model, base = nested()
    kdt.transfer.freeze(model, until="base_dense_0")
    assert base.trainable
    assert not base.get_layer("base_dense_0").trainable
    assert base.get_layer("base_dense_1").trainable
    # The BatchNormalization above `until` keeps its state.
    assert base.get_layer("base_bn").trainable


def test_frozen_batchnorm_keeps_inference_mode_and_statistics():
    model, base = nested()
    x, y = data(64)
    kdt.transfer.freeze(model, until="base")
    model.compile(optimizer="adam", loss="mse")
    before = weights_by_path(base)
    model.fit(x * 3 + 1, y, epochs=2, batch_size=16, verbose=0)
    after = weights_by_path(base)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_keep_batchnorm_frozen_false_lets_statistics_train():
    model, base = nested()
    x, y = data(64)
    kdt.transfer.freeze(model, until="base", keep_batchnorm_frozen=False)
    bn = base.get_layer("base_bn")
    assert bn.trainable and not base.get_layer("base_dense_0").trainable
    model.compile(optimizer="adam", loss="mse")
    before = bn.moving_mean.numpy().copy()
    model.fit(x * 3 + 1, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(bn.moving_mean.numpy(), before)


def test_unfreeze_everything_keeps_batchnorm_frozen():
    model, base = nested()
    kdt.transfer.freeze(model)
    kdt.transfer.unfreeze(model)
    assert base.trainable and model.trainable
    assert base.get_layer("base_dense_0").trainable
    assert not base.get_layer("base_bn").trainable
    x, y = data(64)
    model.compile(optimizer="adam", loss="mse")
    bn = base.get_layer("base_bn")
    mean, kernel = bn.moving_mean.numpy().copy(), base.layers[0].kernel.numpy().copy()
    model.fit(x * 3 + 1, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
    assert not np.array_equal(base.layers[0].kernel.numpy(), kernel)


def test_unfreeze_keeps_trainable_batchnorm_trainable():
    model = mlp(batchnorm=True)
    kdt.transfer.unfreeze(model)
    assert all(flags(model))


def test_unfreeze_with_keep_batchnorm_frozen_false():
    model, base = nested()
    kdt.transfer.freeze(model)
    kdt.transfer.unfreeze(model, top=1, keep_batchnorm_frozen=False)
    assert base.get_layer("base_bn").trainable
    assert not base.get_layer("base_dense_1").trainable
    assert model.get_layer("head").trainable


def test_unfreeze_top_is_exact():
    model = mlp()
    kdt.transfer.unfreeze(model, top=2)
    assert flags(model) == [False, False, True, True]
    kdt.transfer.freeze(model)
    kdt.transfer.unfreeze(model, top=3)
    assert flags(model) == [False, True, True, True]


def test_unfreeze_top_counts_through_nested_models():
    model, base = nested()
    kdt.transfer.freeze(model)
    kdt.transfer.unfreeze(model, top=2)
    expected = [v.path for v in base.get_layer("base_dense_1").weights]
    expected += [v.path for v in model.get_layer("head").weights]
    assert trainable_names(model) == sorted(expected)
    assert not base.get_layer("base_dense_0").trainable
    assert not base.get_layer("base_bn").trainable


def test_weighted_layers_skip_normalization_and_count_wrappers():
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
            keras.layers.LayerNormalization(),
            keras.layers.Dropout(0.1),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    names = [layer.name for layer in weighted_layers(model)]
    assert names == [model.layers[0].name, model.layers[-1].name]
    kdt.transfer.freeze(model)  # frozen weighted layers still count
    assert len(weighted_layers(model)) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"until": 4}, ValueError, r"`until`.*from -4 to 3.*until=4"),
        ({"until": -5}, ValueError, r"`until`.*until=-5"),
        ({"until": "nope"}, ValueError, r"`until`.*mlp_dense_0.*until='nope'"),
        ({"until": 1.0}, TypeError, r"`until`"),
        ({"until": True}, TypeError, r"`until`"),
        ({"keep_batchnorm_frozen": 1}, TypeError, r"`keep_batchnorm_frozen`"),
    ],
)
def test_freeze_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kdt.transfer.freeze(mlp(), **kwargs)


@pytest.mark.parametrize(
    ("top", "error", "match"),
    [
        (0, ValueError, r"`top`.*from 1 to.*\(4\).*top=0"),
        (5, ValueError, r"`top`.*top=5"),
        (2.0, TypeError, r"`top`"),
    ],
)
def test_unfreeze_bad_top(top, error, match):
    with pytest.raises(error, match=match):
        kdt.transfer.unfreeze(mlp(), top=top)


def test_model_without_weighted_layers_is_rejected():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.1),
        ]
    )
    for call in (kdt.transfer.freeze, kdt.transfer.unfreeze):
        with pytest.raises(ValueError, match=r"`model`.*at least one weighted layer"):
            call(model)


def test_not_a_model_is_rejected():
    with pytest.raises(TypeError, match=r"`model`.*keras.Model"):
        kdt.transfer.freeze(keras.layers.Dense(2))


def test_ambiguous_nested_name_is_rejected():
    first, second = mlp(name="a"), mlp(name="b")
    for model in (first, second):
        model.layers[0].name = "shared_name"
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, [first(inputs), second(inputs)])
    with pytest.raises(ValueError, match="unique"):
        kdt.transfer.freeze(outer, until="shared_name")


def _compiled_mlp():
    model = mlp()
    model.compile("sgd", "mse")
    return model


@pytest.mark.parametrize("change", ["freeze", "unfreeze"])
def test_fit_after_a_change_without_recompile_warns_once(change):
    import warnings

    model = _compiled_mlp()
    x, y = data(16)
    if change == "unfreeze":
        kdt.transfer.freeze(model)
        kdt.transfer.recompile(model)
        kdt.transfer.unfreeze(model)
    else:
        kdt.transfer.freeze(model, until=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, verbose=0)
    ours = [w for w in caught if "recompile(model)" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, verbose=0)
    assert "make_train_function" not in vars(model)


def test_no_warning_when_recompiled_or_changed_before_compile():
    import warnings

    x, y = data(16)
    model = _compiled_mlp()
    kdt.transfer.freeze(model, until=1)
    kdt.transfer.recompile(model)
    later = mlp()
    kdt.transfer.freeze(later, until=1)
    later.compile("sgd", "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, verbose=0)
        later.fit(x, y, verbose=0)
