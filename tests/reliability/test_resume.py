"""Resume: a `fit` interrupted at an epoch and resumed with
`keras.callbacks.BackupAndRestore` ends exactly where an uninterrupted one does
(weights, trainable flags, optimizer step, rate, momentum, logged rates), with
our schedulers, GradualUnfreezing, discriminative rates and MC layers in the
model. Runs in one fresh process (`_resume.py`) with deterministic ops."""

import keras
import numpy as np
import pytest

from tests.reliability import _background
from tests.reliability._resume import EPOCHS, INTERRUPT_AT
from tests.reliability.matrix import MATRIX, keys_for

# The matrix rows each scenario of `_resume.py` puts in its model.
SCENARIOS = {
    "OneCycleScheduler": {"callbacks.OneCycleScheduler"},
    "PowerScheduler": {"callbacks.PowerScheduler"},
    "ExponentialScheduler": {"callbacks.ExponentialScheduler"},
    "GradualUnfreezing": {"transfer.GradualUnfreezing"},
    "discriminative_optimizer": {"transfer.discriminative_optimizer"},
    "MCDropout": {"layers.MCDropout"},
    "MCAlphaDropout": {"layers.MCAlphaDropout"},
    "RReLU": {"layers.RReLU"},
    "OneCycle+GradualUnfreezing+MCDropout": {
        "callbacks.OneCycleScheduler",
        "transfer.GradualUnfreezing",
        "layers.MCDropout",
    },
}


def _params():
    """A scenario is a known failure if one of its rows is (strict xfail)."""
    params = []
    for name, keys in SCENARIOS.items():
        reasons = [
            MATRIX[key].xfail["resume"]
            for key in sorted(keys)
            if "resume" in MATRIX[key].xfail
        ]
        marks = [pytest.mark.xfail(strict=True, reason="; ".join(reasons))]
        params.append(pytest.param(name, marks=marks if reasons else [], id=name))
    return params


@pytest.fixture(scope="module")
def results():
    return _background.result("resume")


def test_the_scenarios_cover_the_matrix_rows():
    covered = set().union(*SCENARIOS.values())
    assert covered == {param.values[0] for param in keys_for("resume")}


@pytest.mark.parametrize("scenario", _params())
def test_resumed_fit_equals_an_uninterrupted_one(results, scenario):
    result = results[scenario]
    if keras.backend.backend() == "jax" and "GradualUnfreezing" in scenario:
        # Refused up front: see GradualUnfreezing's Raises.
        assert "NotImplementedError" in result.get("error", ""), result
        assert "BackupAndRestore" in result["error"]
        return
    assert "error" not in result, result.get("error")
    full, resumed = result["full"], result["resumed"]
    assert full["epochs_run"] == EPOCHS
    assert resumed["epochs_run"] == EPOCHS - INTERRUPT_AT, "did not resume"
    assert resumed["trainable"] == full["trainable"]
    # The schedule position: the optimizer's step, rates and momenta.
    assert resumed["optimizer"] == pytest.approx(full["optimizer"], rel=1e-6)
    for name, values in full["logs"].items():
        assert resumed["logs"][name] == pytest.approx(
            values[INTERRUPT_AT:], rel=1e-6
        ), f"logged {name}"
    for want, got in zip(full["weights"], resumed["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
