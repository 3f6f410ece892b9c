"""Call-time inputs: layer inputs, schedule steps, constraint weights, metric updates.

What a built object is called with gets the same treatment as constructor
arguments: a `ValueError`/`TypeError` naming the input. Keras's own checks
of a layer's positional inputs (it refuses strings, lists of Python numbers
and ranks a layer declares it cannot take before our `call()` runs) raise a
`ValueError` of their own, which is accepted as such.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keras_dnntools as kdt
from keras_dnntools._registry import public_objects
from tests.fuzz._harness import HOSTILE_SETTINGS, call
from tests.fuzz._specs import Context

#: Keras's own refusals of a layer's inputs, before the layer's `call()`.
_KERAS_INPUT_CHECKS = re.compile(
    "Only input tensors may be passed|Inputs to a layer should be tensors|"
    "is incompatible with the layer|"
    # PyTorch and JAX: Keras converts NumPy inputs to tensors first.
    "Invalid dtype: str|could not convert string to float"
)

LAYER_INPUTS = [
    None,
    "x",
    np.full((2, 6), "a"),
    np.ones((2, 6), "int32"),
    [[1, 2]],
    {"a": 1},
]


def _refused(call_it, name):
    with pytest.raises((ValueError, TypeError)) as info:
        call_it()
    message = str(info.value)
    assert re.search(rf"`{name}`", message) or _KERAS_INPUT_CHECKS.search(message), (
        f"the error does not name `{name}`: {message}"
    )


@pytest.mark.parametrize(
    "key", sorted(k for k in public_objects() if k.startswith("layers."))
)
@pytest.mark.parametrize("inputs", LAYER_INPUTS, ids=lambda v: type(v).__name__)
def test_layers_refuse_hostile_inputs(key, inputs):
    layer = call(key, Context())
    _refused(lambda: layer(inputs, training=True), "inputs")


@pytest.mark.parametrize("noise_shape", [(1,), (2, 1, 1), (3, 6), (2, 5)])
def test_dropout_refuses_a_noise_shape_that_does_not_fit_the_inputs(noise_shape):
    layer = kdt.layers.MCDropout(0.5, noise_shape=noise_shape, seed=0)
    _refused(lambda: layer(np.ones((2, 6), "float32")), "noise_shape")


def test_dropout_takes_a_noise_shape_that_fits_the_inputs():
    layer = kdt.layers.MCDropout(0.5, noise_shape=(None, 1), seed=0)
    out = keras.ops.convert_to_numpy(layer(np.ones((4, 6), "float32")))
    # One mask value per example, shared by the 6 features.
    assert np.all((out == 0) | (out == 2.0))
    assert np.all(out.min(axis=1) == out.max(axis=1))


@pytest.mark.parametrize("axis", [2, -3, (0, 2), (0, -2)])
def test_max_norm_refuses_an_axis_beyond_the_weight(axis):
    constraint = kdt.constraints.MaxNorm(1.0, axis=axis)
    _refused(lambda: constraint(np.ones((3, 4), "float32")), "axis")


def _schedules():
    context = Context()
    return {
        key: call(key, context)
        for key in sorted(public_objects())
        if key.startswith("schedules.")
    }


@pytest.mark.parametrize("key", sorted(_schedules()))
def test_schedules_refuse_hostile_steps(key):
    schedule = _schedules()[key]

    @HOSTILE_SETTINGS
    @given(
        step=st.one_of(
            st.floats(max_value=0.0, exclude_max=True, allow_nan=False),
            st.integers(max_value=-1),
            st.sampled_from(
                [
                    None,
                    "5",
                    True,
                    np.bool_(False),
                    float("nan"),
                    float("inf"),
                    np.float64("nan"),
                    1 + 2j,
                    10**400,
                    2**63,
                    1e300,
                    [1, 2],
                    (3,),
                    {"a": 1},
                    np.array(["a", "b"]),
                    object(),
                ]
            ),
        )
    )
    def refused(step):
        _refused(lambda: schedule(step), "step")

    refused()


@pytest.mark.parametrize("key", sorted(_schedules()))
def test_schedules_take_every_kind_of_valid_step(key):
    schedule = _schedules()[key]
    expected = float(schedule(7))
    for step in (7.0, np.int64(7), np.int32(7), np.float32(7), np.array(7)):
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step
    variable = keras.optimizers.SGD(0.1).iterations
    variable.assign(7)
    assert float(schedule(variable)) == pytest.approx(expected, rel=1e-6)
    values = keras.ops.convert_to_numpy(schedule(np.arange(8)))
    assert values[7] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "y_true, y_pred, name",
    [
        ([0, 1], np.full((3, 2), 0.5), "y_true"),
        (["a", "b"], np.full((2, 2), 0.5), "y_true"),
        ([0, 1], np.full((2, 2), np.nan), "y_pred"),
        ([0, 1], None, "y_pred"),
        (None, np.full((2, 2), 0.5), "y_true"),
        ([0, 1], "p", "y_pred"),
        ([0, 1], np.full((2, 2), 2.0), "y_pred"),
    ],
)
def test_calibration_metric_refuses_hostile_updates(y_true, y_pred, name):
    metric = kdt.metrics.ExpectedCalibrationError(n_bins=5)
    _refused(lambda: metric.update_state(y_true, y_pred), name)
    assert float(metric.result()) == 0.0  # nothing was counted
