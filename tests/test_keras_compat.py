"""The private Keras contacts of `_keras_compat`: each fails here if Keras moves it."""

from __future__ import annotations

import keras
import numpy as np

from keras_dnntools import _keras_compat


def _functional():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((2,), name="b")}
    merged = keras.layers.Concatenate()([inputs["a"], inputs["b"]])
    hidden = keras.layers.Dense(4, name="hidden")(merged)
    outputs = keras.layers.Dropout(0.5, name="drop")(hidden)
    return keras.Model(inputs, outputs)


def test_functional_class_and_nodes_in_call_order():
    model = _functional()
    assert isinstance(model, _keras_compat.functional_class())
    assert not isinstance(keras.layers.Dense(2), _keras_compat.functional_class())
    names = [
        node.operation.name
        for node in _keras_compat.ordered_nodes(model)
        if not node.is_input
    ]
    assert names.index("hidden") < names.index("drop")


def test_node_call_arguments_replace_the_inputs():
    model = _functional()
    node = next(
        n
        for n in _keras_compat.ordered_nodes(model)
        if getattr(n.operation, "name", "") == "hidden"
    )
    values = {id(kt): "replaced" for kt in node.input_tensors}
    args, kwargs = _keras_compat.node_call_arguments(node, values)
    assert args == ("replaced",) and kwargs == {}


class _NoTraining(keras.layers.Layer):
    def call(self, inputs):
        return inputs


def test_call_context_args_and_sublayers():
    assert "training" in _keras_compat.call_context_args(keras.layers.Dropout(0.5))
    # Layers route `training` through their call context, even without the
    # argument; plain operations (keras.ops nodes) take none.
    assert "training" in _keras_compat.call_context_args(_NoTraining())
    operation = keras.Operation()
    assert _keras_compat.call_context_args(operation) == set()
    nested = keras.Sequential(
        [keras.Input((3,)), keras.Sequential([keras.layers.Dropout(0.1)])]
    )
    kinds = {type(layer).__name__ for layer in _keras_compat.sublayers(nested)}
    assert {"Sequential", "Dropout"} <= kinds
    assert _keras_compat.sublayers(object()) == []


def test_standardize_inputs_orders_a_dict_like_model_inputs():
    model = _functional()
    a, b = np.zeros((1, 3)), np.ones((1, 2))
    flat = _keras_compat.standardize_inputs(model, {"b": b, "a": a})
    assert [tuple(np.shape(v)) for v in flat] == [(1, 3), (1, 2)]


def test_keras_masks_round_trip():
    tensor = keras.ops.ones((2, 3))
    mask = keras.ops.convert_to_tensor([[True, False, True]] * 2)
    _keras_compat.set_keras_mask(tensor, mask)
    assert _keras_compat.get_keras_mask(tensor) is mask
    masked = keras.layers.Masking()(keras.ops.zeros((1, 2, 3)))
    assert _keras_compat.get_keras_mask(masked) is not None


def test_routed_calls_route_and_always_restore():
    layer = keras.layers.Dropout(0.5)
    x = keras.ops.ones((2, 3))
    with _keras_compat.routed_calls([layer], lambda _l, v: v * 7, describe="test"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), 7.0)
    assert "call" not in vars(layer)
    try:
        with _keras_compat.routed_calls([layer], lambda _l, v: v, describe="test"):
            raise KeyError("boom")
    except KeyError:
        pass
    assert "call" not in vars(layer)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), 1.0)
