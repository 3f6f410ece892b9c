"""kdt.constraints: MaxNorm and apply_max_norm."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_dnntools as kdt

MaxNorm = kdt.constraints.MaxNorm
apply_max_norm = kdt.constraints.apply_max_norm


def as_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def big_weights(shape, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) * 3).astype("float32")


# ----------------------------------------------------------------- MaxNorm


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((5, 4), 0), ((5, 4), 1), ((3, 3, 2, 4), [0, 1, 2]), ((3, 4, 5), (0, 2))],
)
def test_explicit_axis_equals_keras_max_norm(shape, axis):
    w = big_weights(shape)
    ours = as_numpy(MaxNorm(1.5, axis=axis)(w))
    theirs = as_numpy(keras.constraints.MaxNorm(1.5, axis=axis)(w))
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("shape", "fan_in"),
    [
        ((5, 4), 0),
        ((3, 2, 4), [0, 1]),
        ((3, 3, 2, 4), [0, 1, 2]),
        ((2,) * 5, [0, 1, 2, 3]),
    ],
)
def test_auto_axis_is_all_but_the_last(shape, fan_in):
    w = big_weights(shape)
    np.testing.assert_array_equal(
        as_numpy(MaxNorm(0.7)(w)), as_numpy(keras.constraints.MaxNorm(0.7, fan_in)(w))
    )
    norms = np.sqrt(
        (as_numpy(MaxNorm(0.7)(w)) ** 2).sum(axis=tuple(range(len(shape) - 1)))
    )
    assert (norms <= 0.7 + 1e-6).all()


def test_auto_axis_on_a_vector_caps_each_element():
    w = np.array([-3.0, 0.5, 2.0], dtype="float32")
    np.testing.assert_allclose(as_numpy(MaxNorm(1.0)(w)), [-1.0, 0.5, 1.0], rtol=1e-6)


def test_small_weights_are_left_alone():
    w = big_weights((5, 4)) * 1e-3
    np.testing.assert_allclose(as_numpy(MaxNorm(1.0)(w)), w, rtol=1e-4)


@pytest.mark.parametrize("axis", ["auto", 0, (0, 1)])
def test_config_round_trip(axis):
    constraint = MaxNorm(2.5, axis=axis)
    config = constraint.get_config()
    json.dumps(config)
    assert MaxNorm.from_config(config).get_config() == config
    rebuilt = keras.constraints.deserialize(
        json.loads(json.dumps(keras.constraints.serialize(constraint)))
    )
    assert isinstance(rebuilt, MaxNorm) and rebuilt.get_config() == config


def test_is_a_keras_constraint():
    assert isinstance(MaxNorm(), keras.constraints.Constraint)
    assert MaxNorm().max_value == 1.0 and MaxNorm().axis == "auto"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_value": 0}, ValueError, r"`max_value`.*max_value > 0"),
        ({"max_value": -1.0}, ValueError, r"`max_value`"),
        ({"max_value": float("inf")}, ValueError, r"`max_value`"),
        ({"max_value": "1"}, TypeError, r"`max_value`.*real number"),
        ({"max_value": None}, TypeError, r"`max_value`"),
        ({"axis": "all"}, ValueError, r"`axis`.*auto"),
        ({"axis": 1.0}, TypeError, r"`axis`"),
        ({"axis": None}, TypeError, r"`axis`"),
        ({"axis": (0, "1")}, TypeError, r"`axis(\[1\])?`"),
        ({"axis": ()}, ValueError, r"`axis`"),
        ({"axis": (0, 0)}, ValueError, r"`axis`"),
        ({"axis": True}, TypeError, r"`axis`"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MaxNorm(**kwargs)


# ---------------------------------------------------------- apply_max_norm

# (layer factory, input shape, {weight name: fan-in axes as documented})
LAYERS = {
    "Dense": (lambda: keras.layers.Dense(6), (5,), {"kernel": (0,)}),
    "Conv1D": (lambda: keras.layers.Conv1D(4, 3), (6, 3), {"kernel": (0, 1)}),
    "Conv2D": (lambda: keras.layers.Conv2D(4, 2), (5, 5, 3), {"kernel": (0, 1, 2)}),
    "Conv3D": (
        lambda: keras.layers.Conv3D(4, 2),
        (3, 3, 3, 2),
        {"kernel": (0, 1, 2, 3)},
    ),
    "Conv1DTranspose": (
        lambda: keras.layers.Conv1DTranspose(4, 3),
        (5, 3),
        {"kernel": (0, 2)},
    ),
    "Conv2DTranspose": (
        lambda: keras.layers.Conv2DTranspose(4, 2),
        (4, 4, 3),
        {"kernel": (0, 1, 3)},
    ),
    "Conv3DTranspose": (
        lambda: keras.layers.Conv3DTranspose(4, 2),
        (3, 3, 3, 2),
        {"kernel": (0, 1, 2, 4)},
    ),
    "DepthwiseConv1D": (
        lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2),
        (6, 3),
        {"kernel": (0,)},
    ),
    "DepthwiseConv2D": (
        lambda: keras.layers.DepthwiseConv2D(2, depth_multiplier=2),
        (5, 5, 3),
        {"kernel": (0, 1)},
    ),
    "SeparableConv1D": (
        lambda: keras.layers.SeparableConv1D(4, 3, depth_multiplier=2),
        (6, 3),
        {"depthwise_kernel": (0,), "pointwise_kernel": (0, 1)},
    ),
    "SeparableConv2D": (
        lambda: keras.layers.SeparableConv2D(4, 2, depth_multiplier=2),
        (5, 5, 3),
        {"depthwise_kernel": (0, 1), "pointwise_kernel": (0, 1, 2)},
    ),
}


def model_around(make_layer, input_shape):
    inputs = keras.Input(input_shape)
    hidden = make_layer()(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs)


def fan_in_norms(weight, axes):
    return np.sqrt((keras.ops.convert_to_numpy(weight) ** 2).sum(axis=axes))


def weights_of(layer, name):
    return next(w for w in layer.weights if w.name == name)


def fit_hard(model, input_shape, epochs=2, jit_compile="auto"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, *input_shape)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32") * 10
    if not model.compiled:
        model.compile(
            keras.optimizers.SGD(0.5, clipnorm=1.0), "mse", jit_compile=jit_compile
        )
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)


@pytest.mark.parametrize("name", LAYERS)
def test_fan_in_axes_of_each_layer_type(name):
    make_layer, input_shape, expected = LAYERS[name]
    model = model_around(make_layer, input_shape)
    layer = model.layers[1]
    apply_max_norm(model, 0.5, layers=[layer])
    for weight_name, axes in expected.items():
        weight = weights_of(layer, weight_name)
        assert isinstance(weight.constraint, MaxNorm)
        assert weight.constraint.axes_for(len(weight.shape)) == axes
        assert (fan_in_norms(weight, axes) <= 0.5 + 1e-6).all()


@pytest.mark.parametrize(
    "name", ["Dense", "Conv2D", "Conv2DTranspose", "SeparableConv2D"]
)
def test_compiled_and_trained_model_is_constrained_in_the_next_fit(name):
    """After a first fit (traced train step), the next fit enforces the norm."""
    make_layer, input_shape, expected = LAYERS[name]
    constrained, free = (model_around(make_layer, input_shape) for _ in range(2))
    free.set_weights(constrained.get_weights())
    for model in (constrained, free):
        fit_hard(model, input_shape, epochs=1)  # compiled, train step traced
    apply_max_norm(constrained, 0.2, clip_now=False)
    for model in (constrained, free):
        fit_hard(model, input_shape)
    for weight_name, axes in expected.items():
        norms = fan_in_norms(weights_of(constrained.layers[1], weight_name), axes)
        assert norms.max() <= 0.2 + 1e-6, f"{weight_name}: {norms.max()}"
        free_norms = fan_in_norms(weights_of(free.layers[1], weight_name), axes)
        assert free_norms.max() > 0.2, "the test does not exercise the constraint"
    dense = constrained.layers[-1]
    assert fan_in_norms(dense.kernel, (0,)).max() <= 0.2 + 1e-6


def test_jit_compiled_model_is_constrained():
    model = model_around(LAYERS["Dense"][0], (5,))
    model.compile(keras.optimizers.SGD(0.5, clipnorm=1.0), "mse", jit_compile=True)
    fit_hard(model, (5,), epochs=1)
    apply_max_norm(model, 0.2)
    fit_hard(model, (5,))
    for layer in (model.layers[1], model.layers[-1]):
        assert fan_in_norms(layer.kernel, (0,)).max() <= 0.2 + 1e-6


def test_embedding_vectors_are_capped():
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(10, 4, embeddings_initializer="ones"),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    apply_max_norm(model, 1.0, layers=[model.layers[0]])
    embeddings = keras.ops.convert_to_numpy(model.layers[0].embeddings)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_nested_models_are_included():
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="inner_dense")], name="inner"
    )
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(1, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    fit_hard(model, (5,), epochs=1)
    apply_max_norm(model, 0.3)
    fit_hard(model, (5,))
    assert isinstance(inner.layers[0].kernel.constraint, MaxNorm)
    assert fan_in_norms(inner.layers[0].kernel, (0,)).max() <= 0.3 + 1e-6
    assert fan_in_norms(model.get_layer("head").kernel, (0,)).max() <= 0.3 + 1e-6


def test_clip_now():
    model = model_around(LAYERS["Dense"][0], (5,))
    kernel = model.layers[1].kernel
    kernel.assign(big_weights(kernel.shape))
    apply_max_norm(model, 0.5, clip_now=False)
    assert fan_in_norms(kernel, (0,)).max() > 0.5
    apply_max_norm(model, 0.5)
    assert fan_in_norms(kernel, (0,)).max() <= 0.5 + 1e-6


def test_layers_by_name_and_object_only_those():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, name="a"),
            keras.layers.Dense(4, name="b"),
            keras.layers.Dense(1, name="c"),
        ]
    )
    assert apply_max_norm(model, 1.0, layers=["a", model.get_layer("c")]) is model
    assert isinstance(model.get_layer("a").kernel.constraint, MaxNorm)
    assert model.get_layer("b").kernel.constraint is None
    assert isinstance(model.get_layer("c").kernel.constraint, MaxNorm)
    assert model.get_layer("b").bias.constraint is None
    apply_max_norm(model, 1.0, layers="b")
    assert isinstance(model.get_layer("b").kernel.constraint, MaxNorm)


def test_unbuilt_model_gets_the_constraint_at_build():
    model = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(1)])
    apply_max_norm(model, 0.1)
    model.build((None, 4))
    for layer in model.layers:
        assert isinstance(layer.kernel.constraint, MaxNorm)
        assert layer.kernel.constraint.max_value == 0.1


def test_saved_model_keeps_the_constraint(tmp_path):
    model = model_around(LAYERS["Conv2DTranspose"][0], LAYERS["Conv2DTranspose"][1])
    apply_max_norm(model, 0.4)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    constraint = loaded.layers[1].kernel.constraint
    assert isinstance(constraint, MaxNorm)
    assert constraint.get_config() == {"max_value": 0.4, "axis": [0, 1, 3]}


def test_unsupported_weighted_layers_are_skipped_with_a_warning():
    model = keras.Sequential(
        [
            keras.Input((3, 2)),
            keras.layers.LSTM(4, name="lstm"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    with pytest.warns(UserWarning, match=r"\['lstm'\]"):
        apply_max_norm(model)
    assert isinstance(model.layers[-1].kernel.constraint, MaxNorm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_max_norm(model, layers=[model.layers[-1]])


def test_model_without_weighted_layers():
    model = keras.Sequential([keras.Input((3,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match=r"`model`.*weighted layer"):
        apply_max_norm(model)


def test_unknown_layer_names_are_named():
    model = model_around(LAYERS["Dense"][0], (5,))
    with pytest.raises(ValueError, match=r"`layers`.*\['nope', 'nada'\]"):
        apply_max_norm(model, layers=["nope", model.layers[1], "nada"])
    stranger = keras.layers.Dense(2, name="stranger")
    with pytest.raises(ValueError, match=r"stranger"):
        apply_max_norm(model, layers=[stranger])


def test_unsupported_layer_asked_for():
    model = keras.Sequential([keras.Input((3, 2)), keras.layers.LSTM(4, name="lstm")])
    with pytest.raises(ValueError, match=r"`layers`.*\['lstm'\]"):
        apply_max_norm(model, layers=["lstm"])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {"max_value": 0.0}, ValueError, r"`max_value`"),
        ((), {"max_value": -2}, ValueError, r"`max_value`"),
        ((), {"max_value": "2"}, TypeError, r"`max_value`"),
        ((), {"clip_now": 1}, TypeError, r"`clip_now`"),
        ((), {"layers": 3}, TypeError, r"`layers`"),
        ((), {"layers": [3]}, TypeError, r"`layers`"),
        ((), {"layers": []}, ValueError, r"`layers`"),
    ],
)
def test_bad_arguments_of_apply_max_norm(args, kwargs, error, match):
    model = model_around(LAYERS["Dense"][0], (5,))
    with pytest.raises(error, match=match):
        apply_max_norm(model, *args, **kwargs)


def test_model_must_be_a_model():
    with pytest.raises(TypeError, match=r"`model`.*keras.Model"):
        apply_max_norm(keras.layers.Dense(3))


def test_apply_max_norm_composes_with_an_existing_constraint(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, kernel_constraint="non_neg")]
    )
    layer = model.layers[0]
    layer.kernel.assign(np.array([[-1.0, 2.0, 0.5]] * 4, "float32"))
    kdt.constraints.apply_max_norm(model, max_value=1.0)
    kernel = layer.kernel.numpy()
    assert (kernel >= 0).all()  # non_neg still holds
    np.testing.assert_array_less(np.linalg.norm(kernel, axis=0), 1.0 + 1e-6)
    # Applying it again replaces the max-norm instead of stacking a second one.
    kdt.constraints.apply_max_norm(model, max_value=0.5)
    constraint = layer.kernel_constraint
    assert isinstance(constraint.first, keras.constraints.NonNeg)
    assert constraint.then.max_value == 0.5
    model.compile("sgd", "mse")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.layers[0].kernel_constraint.get_config() == constraint.get_config()


@pytest.mark.parametrize("kind", ["dense", "embedding"])
def test_apply_max_norm_holds_for_lora_enabled_layers(kind):
    keras.utils.set_random_seed(0)
    if kind == "dense":
        layer = keras.layers.Dense(6)
        model = keras.Sequential([keras.Input((8,)), layer])
        x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
        y = 5 * np.random.default_rng(1).normal(size=(64, 6)).astype("float32")
    else:
        layer = keras.layers.Embedding(10, 6)
        model = keras.Sequential([keras.Input((3,), dtype="int32"), layer])
        x = np.random.default_rng(0).integers(0, 10, size=(64, 3))
        y = 5 * np.random.default_rng(1).normal(size=(64, 3, 6)).astype("float32")
    layer.enable_lora(2)
    if keras.backend.backend() == "jax":
        # Refused up front, changing nothing (see apply_max_norm's Raises).
        before = [np.array(w) for w in model.get_weights()]
        with pytest.raises(NotImplementedError, match="not supported on the JAX"):
            kdt.constraints.apply_max_norm(model, max_value=0.1)
        for old, new in zip(before, model.get_weights(), strict=True):
            np.testing.assert_array_equal(old, new)
        return
    kdt.constraints.apply_max_norm(model, max_value=0.1)
    model.compile(keras.optimizers.SGD(0.5), "mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    effective = keras.ops.convert_to_numpy(
        layer.kernel if kind == "dense" else layer.embeddings
    )
    axis = 0 if kind == "dense" else 1
    norms = np.linalg.norm(effective, axis=axis)
    assert norms.max() <= 0.1 + 1e-5
    assert norms.max() >= 0.09  # trained up to the cap, not frozen at zero
