"""Property-based tests (hypothesis) for every schedule of `kdt.schedules`.

For arguments drawn at random: the values are finite, stay within the
schedule's [min, max], are monotone within each phase, and move continuously
where the formula is continuous (a bounded change from one step to the next,
the bound being the formula's steepest slope); piecewise-constant values only
change at the boundaries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keras_dnntools as kdt
from tests.reliability.matrix import keys_for

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
TOLERANCE = 1e-5  # float32 arithmetic, relative to the schedule's range

rates = st.floats(1e-4, 10.0)
fractions = st.floats(0.05, 0.95)


def _values(schedule, steps):
    values = np.asarray(schedule(np.asarray(steps, dtype="float32")), "float64")
    assert values.shape == np.shape(steps)
    assert np.all(np.isfinite(values)), values
    return values


def _within(values, low, high):
    slack = TOLERANCE * max(abs(high), abs(low), 1e-12)
    assert values.min() >= low - slack, (values.min(), low)
    assert values.max() <= high + slack, (values.max(), high)


def _monotone(values, direction, scale):
    steps = np.diff(values) * direction
    assert np.all(steps >= -TOLERANCE * scale), f"not monotone: {values}"


def _bounded_steps(values, bound, scale):
    change = np.abs(np.diff(values))
    assert np.all(change <= bound * (1 + 1e-3) + TOLERANCE * scale), (
        f"a jump of {change.max()} > {bound} where the formula is continuous"
    )


@SETTINGS
@given(
    lr0=rates,
    decay_steps=st.floats(0.5, 1000.0),
    power=st.floats(0.1, 4.0),
    horizon=st.integers(2, 300),
)
def test_power_schedule(lr0, decay_steps, power, horizon):
    schedule = kdt.schedules.PowerSchedule(lr0, decay_steps, power=power)
    values = _values(schedule, np.arange(horizon))
    _within(values, 0.0, lr0)
    _monotone(values, -1, lr0)
    # |d/dt lr0 (1 + t/s)^-p| <= lr0 p / s
    _bounded_steps(values, lr0 * power / decay_steps, lr0)


@SETTINGS
@given(
    lr0=rates,
    decay_steps=st.floats(0.5, 1000.0),
    decay_rate=st.floats(1e-3, 1.0),
    horizon=st.integers(2, 300),
)
def test_exponential_schedule(lr0, decay_steps, decay_rate, horizon):
    schedule = kdt.schedules.ExponentialSchedule(lr0, decay_steps, decay_rate)
    values = _values(schedule, np.arange(horizon))
    _within(values, 0.0, lr0)
    _monotone(values, -1, lr0)
    # |d/dt lr0 r^(t/s)| <= lr0 |ln r| / s
    _bounded_steps(values, lr0 * abs(math.log(decay_rate)) / decay_steps, lr0)


@SETTINGS
@given(
    data=st.data(),
    num_boundaries=st.integers(1, 5),
)
def test_piecewise_constant_schedule(data, num_boundaries):
    boundaries = sorted(
        data.draw(
            st.lists(
                st.integers(0, 200),
                min_size=num_boundaries,
                max_size=num_boundaries,
                unique=True,
            )
        )
    )
    values = data.draw(
        st.lists(rates, min_size=num_boundaries + 1, max_size=num_boundaries + 1)
    )
    schedule = kdt.schedules.PiecewiseConstantSchedule(boundaries, values)
    steps = np.arange(boundaries[-1] + 3)
    got = _values(schedule, steps)
    _within(got, min(values), max(values))
    # values[i] while boundaries[i-1] <= t < boundaries[i]: constant in between.
    expected = np.asarray(values)[np.searchsorted(boundaries, steps, side="right")]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _one_cycle_arguments():
    return st.fixed_dictionaries(
        {
            "total_steps": st.integers(12, 400),
            "pct_start": st.floats(0.1, 0.45),
            "anneal_strategy": st.sampled_from(["cos", "linear"]),
            "three_phase": st.booleans(),
        }
    )


def _phases(total_steps, pct_start, three_phase):
    """Integer steps of each phase (the ends as PyTorch's OneCycleLR puts them)."""
    warmup_end = pct_start * total_steps - 1
    ends = [warmup_end, total_steps - 1]
    if three_phase:
        ends = [warmup_end, 2 * pct_start * total_steps - 2, total_steps - 1]
    return ends


def _check_cycle(values, ends, directions, levels, anneal_strategy, scale):
    """Monotone in each phase; step-to-step change bounded by the steepest phase."""
    steps = np.arange(len(values))
    start = 0.0
    bound = 0.0
    for end, direction, (a, b) in zip(ends, directions, levels, strict=True):
        inside = (steps >= start) & (steps <= end)
        _monotone(values[inside], direction, scale)
        slope = abs(b - a) / (end - start)
        bound = max(bound, slope * (math.pi / 2 if anneal_strategy == "cos" else 1))
        start = end
    after = values[steps >= ends[-1]]
    np.testing.assert_allclose(after, after[0], rtol=1e-6)
    _bounded_steps(values, bound, scale)


@SETTINGS
@given(
    max_lr=rates,
    args=_one_cycle_arguments(),
    div_factor=st.floats(1.0, 100.0),
    final_div_factor=st.floats(1.0, 1e5),
)
def test_one_cycle_schedule(max_lr, args, div_factor, final_div_factor):
    schedule = kdt.schedules.OneCycleSchedule(
        max_lr, div_factor=div_factor, final_div_factor=final_div_factor, **args
    )
    initial = max_lr / div_factor
    final = initial / final_div_factor
    values = _values(schedule, np.arange(args["total_steps"] + 5))
    _within(values, final, max_lr)
    ends = _phases(args["total_steps"], args["pct_start"], args["three_phase"])
    if args["three_phase"]:
        directions = (1, -1, -1)
        levels = [(initial, max_lr), (max_lr, initial), (initial, final)]
    else:
        directions = (1, -1)
        levels = [(initial, max_lr), (max_lr, final)]
    _check_cycle(values, ends, directions, levels, args["anneal_strategy"], max_lr)
    assert values[0] == pytest.approx(initial, rel=1e-5)
    # The API promises float32 precision: 1e-5 relative or 2e-7 x max absolute.
    assert values[-1] == pytest.approx(final, rel=1e-5, abs=2e-7 * max_lr)


@SETTINGS
@given(
    args=_one_cycle_arguments(),
    momenta=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2).map(sorted),
)
def test_one_cycle_momentum(args, momenta):
    base, top = momenta
    schedule = kdt.schedules.OneCycleMomentum(
        base_momentum=base, max_momentum=top, **args
    )
    values = _values(schedule, np.arange(args["total_steps"] + 5))
    _within(values, base, top)
    ends = _phases(args["total_steps"], args["pct_start"], args["three_phase"])
    if args["three_phase"]:
        directions = (-1, 1, 1)
        levels = [(top, base), (base, top), (top, top)]
    else:
        directions = (-1, 1)
        levels = [(top, base), (base, top)]
    _check_cycle(values, ends, directions, levels, args["anneal_strategy"], 1.0)


PROPERTY_TESTS = {
    "schedules.PowerSchedule": test_power_schedule,
    "schedules.ExponentialSchedule": test_exponential_schedule,
    "schedules.PiecewiseConstantSchedule": test_piecewise_constant_schedule,
    "schedules.OneCycleSchedule": test_one_cycle_schedule,
    "schedules.OneCycleMomentum": test_one_cycle_momentum,
}


@pytest.mark.parametrize("key", keys_for("properties"))
def test_every_schedule_has_property_tests(key):
    assert key in PROPERTY_TESTS, f"write hypothesis property tests for {key}"
