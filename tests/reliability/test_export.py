"""`model.export()` for serving: the exported function behaves as documented.

MC layers stay stochastic in the served function (two calls on the same input
differ); RReLU serves its fixed mean slope `(lower + upper) / 2`. Each
exported SavedModel is reloaded with `tf.saved_model.load` and called through
its `serve` endpoint, as TF Serving would.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dnntools as kdt
from tests.reliability import _models as m
from tests.reliability.matrix import MATRIX, keys_for


def _stochastic(serve, x, model):
    first, second = np.asarray(serve(x)), np.asarray(serve(x))
    assert first.shape[0] == len(x)
    assert not np.array_equal(first, second), "served outputs do not vary"


def _mean_slope(lower, upper):
    def check(serve, x, model):
        slope = (lower + upper) / 2
        expected = np.where(x >= 0, x, slope * x)
        np.testing.assert_allclose(np.asarray(serve(x)), expected, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(serve(x)), np.asarray(serve(x)))

    return check


# What the served function must do for the rows that are not stochastic
# (stochastic rows: vary from call to call); a new row must say it here.
EXPECT = {
    "layers.RReLU": _mean_slope(0.1, 0.3),
    "activations.rrelu": _mean_slope(1 / 8, 1 / 3),
}


def _model(key):
    row = MATRIX[key]
    if row.kind == "layer":
        return keras.Sequential([keras.Input(row.input_shape), row.make()])
    if row.kind == "activation":
        return keras.Sequential(
            [keras.Input((6,)), keras.layers.Activation(row.make())]
        )
    if key == "uncertainty.to_mc_dropout":
        return kdt.uncertainty.to_mc_dropout(m.dense_stack(dropout=True))
    raise AssertionError(f"no export model for {key}")


@pytest.mark.backends(
    "tensorflow",
    "jax",
    reason="a TF SavedModel export from PyTorch goes through torch.export, which "
    "fails on the input structure of Keras's Functional models (Keras 3.15)",
)
@pytest.mark.parametrize("key", keys_for("export"))
def test_exported_function_behaves_as_documented(key, tmp_path):
    expect = _stochastic if MATRIX[key].stochastic else EXPECT.get(key)
    assert expect is not None, f"say in EXPECT what the exported {key} must do"
    model = _model(key)
    x, _ = m.data(MATRIX[key].input_shape)
    if key == "uncertainty.to_mc_dropout":
        x, _ = m.data()
    model.export(str(tmp_path / "exported"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    expect(served.serve, x, model)
