"""The bad-input matrix: invalid calls across the whole API fail loudly and clearly.

Each call must raise `ValueError` or `TypeError` whose message names the
argument in backticks (Keras's style, e.g. "Invalid value for argument
`lower`"). Every row of the matrix with the
`bad_input` check has at least one invalid call here.
"""

from __future__ import annotations

import functools
import re

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests.reliability import _models as m
from tests.reliability.matrix import keys_for

L, A, C, S = kdt.layers, kdt.activations, kdt.constraints, kdt.schedules
CB, T, U, MET, P = (
    kdt.callbacks,
    kdt.transfer,
    kdt.uncertainty,
    kdt.metrics,
    kdt.plotting,
)
D, INI = kdt.diagnostics, kdt.initializers
X = np.ones((2, 6), "float32")
PROBS = np.array([[0.7, 0.3], [0.4, 0.6]])


def _case(key, argument, call, error=(ValueError, TypeError)):
    return pytest.param(key, argument, call, error, id=f"{key}-{argument}")


# (row, argument the message must name, the invalid call on a context `c`).
CASES = [
    # kdt.layers
    _case("layers.MCDropout", "rate", lambda c: L.MCDropout(1.5)),
    _case("layers.MCDropout", "rate", lambda c: L.MCDropout("0.5")),
    _case("layers.MCDropout", "seed", lambda c: L.MCDropout(0.5, seed=-1)),
    _case("layers.MCAlphaDropout", "rate", lambda c: L.MCAlphaDropout(-0.1)),
    _case("layers.MCSpatialDropout1D", "rate", lambda c: L.MCSpatialDropout1D(2.0)),
    _case(
        "layers.MCSpatialDropout2D",
        "data_format",
        lambda c: L.MCSpatialDropout2D(0.5, data_format="channels_middle"),
    ),
    _case("layers.MCSpatialDropout3D", "rate", lambda c: L.MCSpatialDropout3D(-1.0)),
    _case("layers.RReLU", "lower", lambda c: L.RReLU(lower=0.5, upper=0.2)),
    _case("layers.RReLU", "lower", lambda c: L.RReLU(lower=-0.1)),
    _case("layers.RReLU", "lower", lambda c: L.RReLU(lower="0.1")),
    _case("layers.RReLU", "seed", lambda c: L.RReLU(seed="1")),
    # kdt.activations
    _case("activations.rrelu", "lower", lambda c: A.rrelu(X, lower=0.4, upper=0.2)),
    _case("activations.rrelu", "upper", lambda c: A.rrelu(X, upper=float("nan"))),
    # kdt.constraints
    _case("constraints.MaxNorm", "max_value", lambda c: C.MaxNorm(-1.0)),
    _case("constraints.MaxNorm", "max_value", lambda c: C.MaxNorm("1")),
    _case("constraints.MaxNorm", "axis", lambda c: C.MaxNorm(axis="rows")),
    _case(
        "constraints.apply_max_norm",
        "max_value",
        lambda c: C.apply_max_norm(c.model, 0),
    ),
    _case(
        "constraints.apply_max_norm",
        "layers",
        lambda c: C.apply_max_norm(c.model, layers=["no_such_layer"]),
    ),
    _case("constraints.apply_max_norm", "model", lambda c: C.apply_max_norm("model")),
    _case(
        "constraints.apply_max_norm",
        "clip_now",
        lambda c: C.apply_max_norm(c.model, clip_now=1),
    ),
    # kdt.schedules
    _case(
        "schedules.PowerSchedule",
        "initial_learning_rate",
        lambda c: S.PowerSchedule(-0.1, 10),
    ),
    _case("schedules.PowerSchedule", "decay_steps", lambda c: S.PowerSchedule(0.1, 0)),
    _case(
        "schedules.ExponentialSchedule",
        "decay_rate",
        lambda c: S.ExponentialSchedule(0.1, 10, decay_rate=0.0),
    ),
    _case(
        "schedules.ExponentialSchedule",
        "decay_steps",
        lambda c: S.ExponentialSchedule(0.1, "10"),
    ),
    _case(
        "schedules.PiecewiseConstantSchedule",
        "boundaries",
        lambda c: S.PiecewiseConstantSchedule([5, 2], [1.0, 2.0, 3.0]),
    ),
    _case(
        "schedules.PiecewiseConstantSchedule",
        "values",
        lambda c: S.PiecewiseConstantSchedule([5], [1.0]),
    ),
    _case(
        "schedules.OneCycleSchedule",
        "total_steps",
        lambda c: S.OneCycleSchedule(0.1, total_steps=1),
    ),
    _case(
        "schedules.OneCycleSchedule",
        "total_steps",
        lambda c: S.OneCycleSchedule(0.1, total_steps=100.5),
    ),
    _case(
        "schedules.OneCycleSchedule",
        "pct_start",
        lambda c: S.OneCycleSchedule(0.1, 100, pct_start=1.2),
    ),
    _case(
        "schedules.OneCycleSchedule",
        "pct_start",
        lambda c: S.OneCycleSchedule(0.1, 100, pct_start=0.6, three_phase=True),
    ),
    _case(
        "schedules.OneCycleSchedule",
        "anneal_strategy",
        lambda c: S.OneCycleSchedule(0.1, 100, anneal_strategy="exp"),
    ),
    _case(
        "schedules.OneCycleSchedule",
        "div_factor",
        lambda c: S.OneCycleSchedule(0.1, 100, div_factor=0),
    ),
    _case(
        "schedules.OneCycleMomentum",
        "base_momentum",
        lambda c: S.OneCycleMomentum(100, base_momentum=0.99, max_momentum=0.9),
    ),
    # kdt.callbacks
    _case(
        "callbacks.OneCycleScheduler",
        "max_learning_rate",
        lambda c: CB.OneCycleScheduler(0),
    ),
    _case(
        "callbacks.OneCycleScheduler",
        "total_steps",
        lambda c: CB.OneCycleScheduler(0.1, total_steps=0),
    ),
    _case(
        "callbacks.OneCycleScheduler",
        "cycle_momentum",
        lambda c: CB.OneCycleScheduler(0.1, cycle_momentum="yes"),
    ),
    _case(
        "callbacks.PowerScheduler",
        "update",
        lambda c: CB.PowerScheduler(0.1, 10, update="step"),
    ),
    _case(
        "callbacks.ExponentialScheduler",
        "decay_steps",
        lambda c: CB.ExponentialScheduler(0.1, -1),
    ),
    _case(
        "callbacks.LearningRateFinder",
        "min_learning_rate|max_learning_rate",
        lambda c: CB.LearningRateFinder(min_learning_rate=1.0, max_learning_rate=0.1),
    ),
    _case(
        "callbacks.LearningRateFinder",
        "steps",
        lambda c: CB.LearningRateFinder(steps=0),
    ),
    _case(
        "callbacks.LearningRateFinder",
        "stop_factor",
        lambda c: CB.LearningRateFinder(stop_factor=-1.0),
    ),
    _case(
        "callbacks.find_learning_rate",
        "steps",
        lambda c: CB.find_learning_rate(c.model, c.x, c.y, steps=0),
    ),
    _case(
        "callbacks.find_learning_rate",
        "batch_size",
        lambda c: CB.find_learning_rate(c.model, c.x, c.y, batch_size=0),
    ),
    _case(
        "callbacks.find_learning_rate",
        "model",
        lambda c: CB.find_learning_rate("model", c.x, c.y),
    ),
    _case("callbacks.release", "model", lambda c: CB.release("model"), TypeError),
    # kdt.transfer
    _case("transfer.freeze", "until", lambda c: T.freeze(c.model, until="no_such")),
    _case("transfer.freeze", "until", lambda c: T.freeze(c.model, until=99)),
    _case(
        "transfer.freeze",
        "keep_batchnorm_frozen",
        lambda c: T.freeze(c.model, keep_batchnorm_frozen="no"),
    ),
    _case("transfer.unfreeze", "top", lambda c: T.unfreeze(c.model, top=-1)),
    _case("transfer.clone_with_weights", "model", lambda c: T.clone_with_weights(3)),
    _case(
        "transfer.reuse_layers",
        "drop_top",
        lambda c: T.reuse_layers(c.model, drop_top=99),
    ),
    _case(
        "transfer.reuse_layers", "head", lambda c: T.reuse_layers(c.model, head="dense")
    ),
    _case("transfer.recompile", "model", lambda c: T.recompile(c.bare)),
    _case(
        "transfer.recompile",
        "learning_rate",
        lambda c: T.recompile(c.model, learning_rate=-1.0),
    ),
    _case(
        "transfer.GradualUnfreezing", "schedule", lambda c: T.GradualUnfreezing("1,2")
    ),
    _case(
        "transfer.GradualUnfreezing", "schedule", lambda c: T.GradualUnfreezing({0: -1})
    ),
    _case(
        "transfer.GradualUnfreezing",
        "learning_rate_factor",
        lambda c: T.GradualUnfreezing({0: 1}, learning_rate_factor=0.0),
    ),
    _case(
        "transfer.discriminative_optimizer",
        "learning_rate_range",
        lambda c: T.discriminative_optimizer(
            c.model, "sgd", learning_rate_range=(0.1,)
        ),
    ),
    _case(
        "transfer.discriminative_optimizer",
        "num_groups",
        lambda c: T.discriminative_optimizer(
            c.model, "sgd", learning_rate_range=(1e-3, 1e-1), num_groups=0
        ),
    ),
    _case(
        "transfer.discriminative_optimizer",
        "optimizer",
        lambda c: T.discriminative_optimizer(
            c.model, 42, learning_rate_range=(1e-3, 1e-1)
        ),
    ),
    _case(
        "transfer.fine_tune",
        "epochs",
        lambda c: T.fine_tune(c.model, c.x, c.y, epochs=0),
    ),
    _case(
        "transfer.fine_tune",
        "learning_rate_mult",
        lambda c: T.fine_tune(c.model, c.x, c.y, epochs=1, learning_rate_mult=0),
    ),
    # kdt.uncertainty
    _case(
        "uncertainty.mc_predict", "n_samples", lambda c: U.mc_predict(c.model, c.x, 0)
    ),
    _case("uncertainty.mc_predict", "model", lambda c: U.mc_predict(c.bare, c.x, 2)),
    _case(
        "uncertainty.mc_predict", "seed", lambda c: U.mc_predict(c.model, c.x, seed=-1)
    ),
    _case("uncertainty.to_mc_dropout", "model", lambda c: U.to_mc_dropout("model")),
    # kdt.metrics
    _case(
        "metrics.expected_calibration_error",
        "n_bins",
        lambda c: MET.expected_calibration_error([0, 1], PROBS, n_bins=0),
    ),
    _case(
        "metrics.expected_calibration_error",
        "y_true",
        lambda c: MET.expected_calibration_error([0, 1, 1], PROBS),
    ),
    _case(
        "metrics.expected_calibration_error",
        "y_prob",
        lambda c: MET.expected_calibration_error([0, 1], PROBS * 2),
    ),
    _case(
        "metrics.ExpectedCalibrationError",
        "n_bins",
        lambda c: MET.ExpectedCalibrationError(n_bins=0),
    ),
    # kdt.diagnostics, kdt.initializers, TrainingMonitor (issue 12)
    _case("diagnostics.check", "model", lambda c: D.check("model", X)),
    _case(
        "diagnostics.check", "batch_size", lambda c: D.check(c.bare, X, batch_size=0)
    ),
    _case("diagnostics.Finding", "kind", lambda c: D.Finding("slow", None, "", "")),
    _case(
        "diagnostics.DiagnosticReport",
        "loss",
        lambda c: D.DiagnosticReport([], [], loss="low"),
    ),
    _case(
        "diagnostics.DiagnosticReport",
        "findings",
        lambda c: D.DiagnosticReport([], ["dead"], loss=1.0),
    ),
    _case(
        "initializers.lsuv", "target_std", lambda c: INI.lsuv(c.bare, X, target_std=0)
    ),
    _case(
        "initializers.lsuv", "tolerance", lambda c: INI.lsuv(c.bare, X, tolerance=-1)
    ),
    _case("initializers.lsuv", "model", lambda c: INI.lsuv(None, X)),
    _case("callbacks.TrainingMonitor", "frequency", lambda c: CB.TrainingMonitor(0)),
    _case(
        "callbacks.TrainingMonitor",
        "histograms",
        lambda c: CB.TrainingMonitor(histograms="yes"),
    ),
    _case(
        "callbacks.TrainingMonitor", "log_dir", lambda c: CB.TrainingMonitor(log_dir=3)
    ),
    _case(
        "plotting.plot_activation_histograms",
        "monitor",
        lambda c: P.plot_activation_histograms(CB.TrainingMonitor()),
    ),
    _case(
        "plotting.plot_gradient_norms",
        "monitor",
        lambda c: P.plot_gradient_norms("monitor"),
    ),
    _case(
        "plotting.plot_diagnostic_report",
        "report",
        lambda c: P.plot_diagnostic_report(None),
    ),
    # kdt.plotting
    _case("plotting.plot_schedule", "schedule", lambda c: P.plot_schedule(42, 10)),
    _case(
        "plotting.plot_schedule",
        "total_steps",
        lambda c: P.plot_schedule(S.PowerSchedule(0.1, 10), total_steps=0),
    ),
    _case(
        "plotting.plot_reliability_diagram",
        "n_bins",
        lambda c: P.plot_reliability_diagram([0, 1], PROBS, n_bins=0),
    ),
    _case(
        "plotting.plot_uncertainty_histogram",
        "measure",
        lambda c: P.plot_uncertainty_histogram(None, measure="variance"),
    ),
]


class _Context:
    """What the invalid calls act on, built only when a call asks for it."""

    x, y = m.data()

    @functools.cached_property
    def model(self):
        model = m.dense_stack(batch_norm=True, dropout=True)
        model.compile(optimizer=m.sgd(), loss="mse")
        return model

    @functools.cached_property
    def bare(self):
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])


@pytest.fixture
def context():
    return _Context()


@pytest.mark.parametrize("key, argument, call, error", CASES)
def test_invalid_call_names_the_argument(context, key, argument, call, error):
    names = "|".join(re.escape(name) for name in argument.split("|"))
    with pytest.raises(error) as info:
        call(context)
    message = str(info.value)
    assert re.search(rf"`({names})(\[\d+\])?`", message), (
        f"kdt.{key}: the message does not name `{argument}`: {message!r}"
    )


def test_the_matrix_has_at_least_40_invalid_calls():
    assert len(CASES) >= 40


@pytest.mark.parametrize("key", keys_for("bad_input"))
def test_every_row_has_invalid_calls(key):
    assert any(case.values[0] == key for case in CASES), (
        f"add invalid calls for kdt.{key} to tests/reliability/test_bad_input.py"
    )
