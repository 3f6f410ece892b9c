"""OneCycleSchedule / OneCycleMomentum against PyTorch's OneCycleLR and by hand."""

import json
import math
import pathlib

import numpy as np
import pytest

import keras_dnntools as kdt

TABLES = json.loads(
    (pathlib.Path(__file__).parent / "data" / "torch_one_cycle.json").read_text()
)
MOMENTUM_KEYS = ("base_momentum", "max_momentum")
RATE_ONLY_KEYS = ("max_learning_rate", "div_factor", "final_div_factor")


def _schedules(torch_arguments):
    arguments = dict(torch_arguments)
    arguments["max_learning_rate"] = arguments.pop("max_lr")
    momentum = {key: arguments.pop(key) for key in MOMENTUM_KEYS if key in arguments}
    shared = {k: v for k, v in arguments.items() if k not in RATE_ONLY_KEYS}
    return (
        kdt.schedules.OneCycleSchedule(**arguments),
        kdt.schedules.OneCycleMomentum(**shared, **momentum),
        arguments,
    )


def _case_id(case):
    return "-".join(f"{k}={v}" for k, v in case["arguments"].items())


@pytest.mark.parametrize("case", TABLES["cases"], ids=_case_id)
def test_matches_torch_one_cycle_step_for_step(case):
    schedule, momentum, arguments = _schedules(case["arguments"])
    steps = np.arange(arguments["total_steps"])
    expected = np.asarray(case["learning_rate"])
    got = np.asarray(schedule(steps), dtype="float64")
    tolerance = np.maximum(
        1e-5 * np.abs(expected), 2e-7 * arguments["max_learning_rate"]
    )
    worst = int(np.argmax(np.abs(got - expected) - tolerance))
    assert np.all(np.abs(got - expected) <= tolerance), (
        f"learning rate differs from torch at step {worst}: "
        f"{got[worst]!r} != {expected[worst]!r}"
    )
    np.testing.assert_allclose(
        np.asarray(momentum(steps), dtype="float64"),
        case["momentum"],
        rtol=1e-6,
        atol=1e-7,
        err_msg="momentum differs from torch",
    )


def test_reference_tables_cover_every_variant():
    cases = [case["arguments"] for case in TABLES["cases"]]
    assert TABLES["torch_version"].startswith("2.13.0")
    assert {c.get("anneal_strategy", "cos") for c in cases} == {"cos", "linear"}
    assert {c.get("three_phase", False) for c in cases} == {False, True}
    assert len({(c.get("div_factor"), c.get("final_div_factor")) for c in cases}) >= 3


def test_hand_computed_table_two_phases():
    # total 100, pct 0.3: warm-up ends at step 0.3 * 100 - 1 = 29, the last
    # phase at 99; initial 0.1 / 25 = 0.004, final 0.004 / 1e4 = 4e-7.
    schedule = kdt.schedules.OneCycleSchedule(0.1, total_steps=100)
    expected = {
        0: 0.004,
        29: 0.1,
        # halfway through the annealing phase: (64 - 29) / (99 - 29) = 0.5
        64: (0.1 + 4e-7) / 2,
        99: 4e-7,
        100: 4e-7,
        10_000: 4e-7,
    }
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, rel=1e-6), step
    warmup_mid = 0.004 + (0.1 - 0.004) / 2 * (1 - math.cos(math.pi * 14 / 29))
    assert float(schedule(14)) == pytest.approx(warmup_mid, rel=1e-6)


def test_hand_computed_table_three_phases_linear():
    # total 200, pct 0.25: ends at 49, 98, 199.
    schedule = kdt.schedules.OneCycleSchedule(
        1.0, 200, pct_start=0.25, anneal_strategy="linear", three_phase=True
    )
    momentum = kdt.schedules.OneCycleMomentum(
        200, pct_start=0.25, anneal_strategy="linear", three_phase=True
    )
    table = {0: 0.04, 49: 1.0, 98: 0.04, 199: 4e-6, 500: 4e-6}
    for step, rate in table.items():
        assert float(schedule(step)) == pytest.approx(rate, rel=1e-6), step
    # linear: halfway through the way back (73.5 of 49..98) is the mean
    assert float(schedule(73.5)) == pytest.approx(0.52, rel=1e-6)
    for step, value in {0: 0.95, 49: 0.85, 98: 0.95, 150: 0.95, 199: 0.95}.items():
        assert float(momentum(step)) == pytest.approx(value, rel=1e-6), step


def test_holds_final_values_past_total_steps():
    schedule = kdt.schedules.OneCycleSchedule(0.5, 40, div_factor=5.0)
    momentum = kdt.schedules.OneCycleMomentum(40, base_momentum=0.8)
    assert float(schedule(39)) == float(schedule(40)) == float(schedule(10**6))
    assert float(momentum(39)) == float(momentum(41)) == pytest.approx(0.95)
    assert schedule.final_learning_rate == pytest.approx(0.5 / 5.0 / 1e4)


def test_evaluates_at_tensor_steps_as_in_an_optimizer():
    import keras

    schedule = kdt.schedules.OneCycleSchedule(0.1, 100)
    step = keras.optimizers.SGD(0.1).iterations  # int64 (int32 on JAX by default)
    step.assign(29)
    assert float(schedule(step)) == pytest.approx(0.1)
    assert keras.backend.standardize_dtype(schedule(step).dtype) == "float32"


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (dict(pct_start=0.0), "pct_start"),
        (dict(pct_start=1.0), "pct_start"),
        (dict(pct_start=-0.2), "pct_start"),
        (dict(pct_start=0.5, three_phase=True), "pct_start"),
        (dict(max_learning_rate=0.0), "max_learning_rate"),
        (dict(max_learning_rate=-1.0), "max_learning_rate"),
        (dict(div_factor=0.0), "div_factor"),
        (dict(final_div_factor=-2.0), "final_div_factor"),
        (dict(anneal_strategy="cosine"), "anneal_strategy"),
        (dict(total_steps=1), "total_steps"),
        (dict(total_steps=3, pct_start=0.3), "pct_start"),  # warm-up < 1 step
    ],
)
def test_rejects_bad_arguments(arguments, name):
    full = dict(max_learning_rate=0.1, total_steps=100) | arguments
    with pytest.raises(ValueError, match=f"`{name}`"):
        kdt.schedules.OneCycleSchedule(**full)


@pytest.mark.parametrize(
    ("arguments", "name", "error"),
    [
        (dict(total_steps=10.5), "total_steps", TypeError),
        (dict(three_phase=1), "three_phase", TypeError),
        (dict(max_learning_rate="0.1"), "max_learning_rate", TypeError),
    ],
)
def test_rejects_bad_types(arguments, name, error):
    full = dict(max_learning_rate=0.1, total_steps=100) | arguments
    with pytest.raises(error, match=f"`{name}`"):
        kdt.schedules.OneCycleSchedule(**full)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (dict(base_momentum=0.96), "base_momentum"),
        (dict(max_momentum=1.5), "max_momentum"),
        (dict(base_momentum=-0.1), "base_momentum"),
        (dict(pct_start=1.2), "pct_start"),
        (dict(anneal_strategy="step"), "anneal_strategy"),
    ],
)
def test_momentum_rejects_bad_arguments(arguments, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        kdt.schedules.OneCycleMomentum(total_steps=100, **arguments)
