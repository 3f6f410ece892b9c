"""Bad `x` gets a ValueError naming `x` and what the model expects; int inputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests.uncertainty._models import classifier, data

mc_predict = kdt.uncertainty.mc_predict


def _two_inputs():
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    merged = keras.layers.Concatenate()([a, b])
    return keras.Model({"a": a, "b": b}, keras.layers.Dropout(0.5)(merged))


@pytest.mark.parametrize(
    ("x", "received"),
    [
        (np.zeros((4, 6), "float32"), r"shape \(4, 6\)"),  # wrong feature count
        (np.zeros((5,), "float32"), r"shape \(5,\)"),  # 1-D
        (np.zeros((4, 5, 1), "float32"), r"shape \(4, 5, 1\)"),  # rank 3
        (np.array([["a"] * 5] * 4), "dtype <U1"),  # strings
    ],
)
def test_bad_x_names_x_and_the_expected_shape(x, received):
    with pytest.raises(ValueError, match=r"`x`.*\(None, 5\)|`x`.*numeric") as info:
        mc_predict(classifier(), x, 3)
    assert received.replace("\\", "") in str(info.value).replace("\\", "") or (
        "dtype" in received
    )


def test_missing_dict_key_is_named():
    model = _two_inputs()
    with pytest.raises(ValueError, match=r"`x`.*'b'"):
        mc_predict(model, {"a": np.zeros((4, 3), "float32")}, 3)
    with pytest.raises(ValueError, match=r"`x`.*'b': shape \(None, 2\)"):
        mc_predict(
            model,
            {"a": np.zeros((4, 3), "float32"), "b": np.zeros((4, 7), "float32")},
            3,
        )
    good = {"b": np.ones((4, 2), "float32"), "a": np.ones((4, 3), "float32")}
    assert mc_predict(model, good, 3, seed=0).mean.shape == (4, 5)


def test_wrong_number_of_inputs_is_named():
    a, b = keras.Input((3,)), keras.Input((2,))
    model = keras.Model(
        [a, b], keras.layers.Dropout(0.5)(keras.layers.Concatenate()([a, b]))
    )
    with pytest.raises(ValueError, match=r"`x`.*1 input arrays for 2 inputs"):
        mc_predict(model, [np.ones((4, 3), "float32")], 3)


def test_dataset_and_generators_are_refused():
    with pytest.raises(TypeError, match="`x`"):
        mc_predict(classifier(), (row for row in data()), 3)


def test_integer_inputs_to_dropout_raise_a_type_error():
    model = keras.Sequential(
        [keras.Input((5,), dtype="int32"), keras.layers.Dropout(0.3)]
    )
    with pytest.raises(TypeError, match="float"):
        mc_predict(model, np.ones((4, 5), "int32"), 3)


def test_backend_tensors_are_accepted():
    x = data(n=6)
    from_numpy = mc_predict(classifier(), x, 4, seed=0)
    model = classifier()
    model.set_weights([np.ones_like(w) * 0.1 for w in model.get_weights()])
    tensor = mc_predict(model, keras.ops.convert_to_tensor(x), 4, seed=0)
    assert tensor.mean.shape == from_numpy.mean.shape
