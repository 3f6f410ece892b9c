"""Numbers that stay numbers: finite float32 rates, exact steps past 2**24."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_dnntools as kdt

BIG = 2**24 + 1  # float32 rounds this step down to 2**24


def _iterations(value):
    variable = keras.optimizers.SGD(0.1).iterations
    variable.assign(value)
    return variable


@pytest.mark.parametrize("boundary", [BIG, 2**30 + 7])
def test_piecewise_switches_exactly_at_a_boundary_past_2_24(boundary):
    schedule = kdt.schedules.PiecewiseConstantSchedule([boundary], [0.1, 0.01])
    # Python ints, NumPy ints and the optimizer's integer step all agree with
    # exact integer arithmetic (float32 would switch one step early).
    for step, expected in ((boundary - 1, 0.1), (boundary, 0.01)):
        for value in (step, np.int64(step), _iterations(step)):
            got = float(keras.ops.convert_to_numpy(schedule(value)))
            assert got == pytest.approx(expected), (type(value), step)


def test_piecewise_float_boundaries_apply_to_integer_steps_exactly():
    schedule = kdt.schedules.PiecewiseConstantSchedule([BIG - 0.5], [0.1, 0.01])
    assert float(schedule(_iterations(BIG - 1))) == pytest.approx(0.1)
    assert float(schedule(_iterations(BIG))) == pytest.approx(0.01)


def test_piecewise_boundary_beyond_the_step_dtype_is_never_reached():
    schedule = kdt.schedules.PiecewiseConstantSchedule([2**70], [0.1, 0.01])
    assert float(schedule(_iterations(5))) == pytest.approx(0.1)
    assert float(schedule(2**63 - 1)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "make, names",
    [
        (
            lambda: kdt.schedules.OneCycleSchedule(0.1, 100, div_factor=1e-300),
            "div_factor",
        ),
        (
            lambda: kdt.schedules.OneCycleSchedule(0.1, 100, final_div_factor=1e300),
            "final_div_factor",
        ),
        (
            lambda: kdt.schedules.OneCycleSchedule(1e38, 100, div_factor=0.1),
            "max_learning_rate",
        ),
        (lambda: kdt.schedules.PowerSchedule(1e39, 10), "initial_learning_rate"),
        (lambda: kdt.schedules.PowerSchedule(1e-50, 10), "initial_learning_rate"),
        (lambda: kdt.schedules.ExponentialSchedule(4e38, 10), "initial_learning_rate"),
        (lambda: kdt.schedules.PiecewiseConstantSchedule([5], [0.1, 1e-60]), "values"),
        (lambda: kdt.callbacks.OneCycleScheduler(0.1, div_factor=1e-300), "div_factor"),
    ],
)
def test_arguments_giving_a_non_finite_or_zero_float32_rate_are_refused(make, names):
    with pytest.raises(ValueError, match=rf"`{names}`.*float32"):
        make()


def test_every_rate_of_an_accepted_schedule_is_finite_in_float32():
    schedule = kdt.schedules.OneCycleSchedule(3e38, 100, div_factor=1.5)
    rates = keras.ops.convert_to_numpy(schedule(np.arange(100)))
    assert np.all(np.isfinite(rates)) and np.all(rates > 0)
