"""Property tests: finite, within bounds, monotone within each phase."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import keras_dnntools as kdt

FAST = settings(max_examples=15, deadline=None)


@FAST
@given(
    max_learning_rate=st.floats(1e-4, 10.0),
    total_steps=st.integers(50, 3000),
    pct_start=st.floats(0.05, 0.45),
    anneal_strategy=st.sampled_from(["cos", "linear"]),
    div_factor=st.floats(1.5, 100.0),
    final_div_factor=st.floats(1.5, 1e5),
    three_phase=st.booleans(),
)
def test_one_cycle_is_bounded_and_monotone_per_phase(
    max_learning_rate,
    total_steps,
    pct_start,
    anneal_strategy,
    div_factor,
    final_div_factor,
    three_phase,
):
    schedule = kdt.schedules.OneCycleSchedule(
        max_learning_rate,
        total_steps,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
    )
    steps = np.arange(total_steps + 5)
    rates = np.asarray(schedule(steps), dtype="float64")
    slack = 1e-6 * max_learning_rate
    assert np.all(np.isfinite(rates))
    assert rates.min() >= schedule.final_learning_rate * (1 - 1e-5) - slack
    assert rates.max() <= max_learning_rate + slack
    warmup_end = int(np.floor(pct_start * total_steps - 1))
    assert np.all(np.diff(rates[: warmup_end + 1]) >= -slack)
    last_start = warmup_end + 1
    if three_phase:
        back_end = int(np.floor(2 * pct_start * total_steps - 2))
        assert np.all(np.diff(rates[last_start : back_end + 1]) <= slack)
        last_start = back_end + 1
    assert np.all(np.diff(rates[last_start:]) <= slack)


@FAST
@given(
    initial=st.floats(1e-5, 1.0),
    decay_steps=st.floats(1.0, 1e4),
    power=st.floats(0.1, 3.0),
    decay_rate=st.floats(0.01, 1.0),
)
def test_decays_are_finite_bounded_and_non_increasing(
    initial, decay_steps, power, decay_rate
):
    steps = np.linspace(0, 1e5, 50).astype(int)
    for schedule in (
        kdt.schedules.PowerSchedule(initial, decay_steps, power),
        kdt.schedules.ExponentialSchedule(initial, decay_steps, decay_rate),
    ):
        values = np.asarray(schedule(steps), dtype="float64")
        assert np.all(np.isfinite(values))
        assert np.all(values <= initial * (1 + 1e-6))
        assert np.all(values >= 0)
        assert np.all(np.diff(values) <= initial * 1e-6)
