"""PowerSchedule, ExponentialSchedule, PiecewiseConstantSchedule vs Keras built-ins."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt

STEPS = np.array([0, 1, 7, 99, 100, 101, 250, 1000, 123_456])


def _values(schedule, steps=STEPS):
    return np.array([float(schedule(int(step))) for step in steps])


def test_power_one_equals_keras_inverse_time_decay():
    ours = kdt.schedules.PowerSchedule(0.02, decay_steps=100, power=1.0)
    theirs = keras.optimizers.schedules.InverseTimeDecay(0.02, 100, decay_rate=1.0)
    np.testing.assert_allclose(_values(ours), _values(theirs), rtol=1e-6)


def test_power_hand_computed():
    schedule = kdt.schedules.PowerSchedule(0.1, decay_steps=10, power=2.0)
    expected = [0.1 / (1 + t / 10) ** 2 for t in STEPS]
    np.testing.assert_allclose(_values(schedule), expected, rtol=1e-6)
    assert float(schedule(10)) == pytest.approx(0.025)


def test_exponential_equals_keras_exponential_decay():
    ours = kdt.schedules.ExponentialSchedule(0.05, decay_steps=100, decay_rate=0.5)
    theirs = keras.optimizers.schedules.ExponentialDecay(0.05, 100, 0.5)
    np.testing.assert_allclose(_values(ours), _values(theirs), rtol=1e-6)


def test_exponential_hand_computed_and_constant_rate():
    schedule = kdt.schedules.ExponentialSchedule(0.01, decay_steps=20)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(20)) == pytest.approx(0.001)
    assert float(schedule(30)) == pytest.approx(0.01 * 0.1**1.5, rel=1e-6)
    constant = kdt.schedules.ExponentialSchedule(0.3, 5, decay_rate=1.0)
    np.testing.assert_allclose(_values(constant), 0.3, rtol=1e-7)


def test_piecewise_switches_at_the_boundary():
    schedule = kdt.schedules.PiecewiseConstantSchedule([5, 15], [1.0, 0.5, 0.1])
    table = {0: 1.0, 4: 1.0, 5: 0.5, 14: 0.5, 15: 0.1, 10_000: 0.1}
    for step, value in table.items():
        assert float(schedule(step)) == pytest.approx(value), step


def test_piecewise_is_keras_piecewise_constant_decay_one_step_earlier():
    boundaries, values = [10, 20, 30], [0.4, 0.3, 0.2, 0.1]
    ours = kdt.schedules.PiecewiseConstantSchedule(boundaries, values)
    theirs = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    steps = np.arange(0, 40)
    # Keras's value at step t + 1 is ours at step t: it switches one step later.
    np.testing.assert_allclose(_values(ours, steps), _values(theirs, steps + 1))
    # ... and not the same at the boundary itself:
    assert float(ours(10)) != float(theirs(10))


def test_piecewise_accepts_numpy_arrays_and_keeps_json_config():
    schedule = kdt.schedules.PiecewiseConstantSchedule(
        np.array([3, 6]), np.array([0.3, 0.2, 0.1])
    )
    config = schedule.get_config()
    assert config["boundaries"] == [3, 6]
    assert all(type(value) is float for value in config["values"])


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: kdt.schedules.PowerSchedule(0.0, 10), "initial_learning_rate"),
        (lambda: kdt.schedules.PowerSchedule(0.1, 0), "decay_steps"),
        (lambda: kdt.schedules.PowerSchedule(0.1, -5), "decay_steps"),
        (lambda: kdt.schedules.PowerSchedule(0.1, 10, power=0.0), "power"),
        (lambda: kdt.schedules.ExponentialSchedule(-0.1, 10), "initial_learning_rate"),
        (lambda: kdt.schedules.ExponentialSchedule(0.1, 0), "decay_steps"),
        (lambda: kdt.schedules.ExponentialSchedule(0.1, 10, 0.0), "decay_rate"),
        (lambda: kdt.schedules.ExponentialSchedule(0.1, 10, 1.5), "decay_rate"),
        (
            lambda: kdt.schedules.PiecewiseConstantSchedule([10, 5], [1.0, 0.5, 0.1]),
            "boundaries",
        ),
        (
            lambda: kdt.schedules.PiecewiseConstantSchedule([5, 5], [1.0, 0.5, 0.1]),
            "boundaries",
        ),
        (
            lambda: kdt.schedules.PiecewiseConstantSchedule([5, 10], [1.0, 0.5]),
            "values",
        ),
        (
            lambda: kdt.schedules.PiecewiseConstantSchedule([5], [1.0, 0.5, 0.1]),
            "values",
        ),
        (
            lambda: kdt.schedules.PiecewiseConstantSchedule([5], [1.0, 0.0]),
            r"values\[1\]",
        ),
        (
            lambda: kdt.schedules.PiecewiseConstantSchedule([-1], [1.0, 0.5]),
            r"boundaries\[0\]",
        ),
    ],
)
def test_rejects_bad_arguments(factory, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        factory()


def test_rejects_non_list_boundaries():
    with pytest.raises(TypeError, match="`boundaries`"):
        kdt.schedules.PiecewiseConstantSchedule("10", [1.0, 0.5])
