"""The reliability matrix: one row per public object, one column per check.

`keras_dnntools._registry.public_objects()` lists every public object; `MATRIX`
below says, for each of them, which reliability checks apply (and why the
others do not) and how to build it for the checks. The check modules of this
folder take their parameters from here (`keys_for(check)`), and
`test_matrix.py` fails when a public object has no row, so a component added
later fails the matrix until it is covered.

Print the matrix as a Markdown table with ``python -m tests.reliability.matrix``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import keras_dnntools as kdt

CHECKS = {
    "save_load": "`.keras` save, `load_model(safe_mode=True)` in a fresh process, "
    "no custom_objects; compiled state restored",
    "export": "`model.export()` SavedModel served as documented",
    "resume": "interrupted `fit` resumed with BackupAndRestore equals an "
    "uninterrupted run",
    "mixed_precision": "`mixed_float16` and `mixed_bfloat16`",
    "jit": "`jit_compile=True` for fit and predict",
    "distribute": "MirroredStrategy over 2 logical CPUs",
    "bad_input": "invalid arguments raise ValueError/TypeError naming the argument",
    "properties": "hypothesis: finite, bounded, monotone per phase, continuous",
}


@dataclasses.dataclass(frozen=True)
class Row:
    """How the matrix treats one public object.

    Attributes:
        kind: selects the driver each check uses (see the check modules).
        make: builds the object, ready for the checks (None for functions).
        checks: the checks that apply.
        na: the checks that do not apply, each with the reason.
        xfail: checks known to fail, each with the bug (strict xfail).
        input_shape: input shape (without batch) of the tiny model around a
            layer.
        stochastic: inference is random (always-active MC dropout).
        random_in_training: training is random (dropout, RReLU's slopes).
    """

    kind: str
    make: Callable[[], Any] | None = None
    checks: tuple[str, ...] = ()
    na: Mapping[str, str] = dataclasses.field(default_factory=dict)
    xfail: Mapping[str, str] = dataclasses.field(default_factory=dict)
    input_shape: tuple[int, ...] = (6,)
    stochastic: bool = False
    random_in_training: bool = False


FUNCTION = "a function without state: nothing to save, export or compile"
PLOT = "a matplotlib plot helper"
SCENARIO_ONLY = "covered by the scenario checks only"

_LAYER_CHECKS = ("save_load", "export", "mixed_precision", "jit", "bad_input")
_LAYER_NA = {"properties": "not a schedule"}


def _layer(make, input_shape=(6,), extra=(), stochastic=True):
    checks = _LAYER_CHECKS + tuple(extra)
    skipped = dict(_LAYER_NA)
    for check in ("resume", "distribute"):
        if check not in checks:
            skipped[check] = SCENARIO_ONLY
    return Row(
        "layer",
        make,
        checks,
        skipped,
        input_shape=input_shape,
        stochastic=stochastic,
        random_in_training=True,
    )


def _schedule(make, extra=(), **na):
    checks = ("save_load", "mixed_precision", "jit", "bad_input", "properties")
    checks += tuple(extra)
    skipped = {"export": "export serves inference only; no optimizer", **na}
    for check in ("resume", "distribute"):
        if check not in checks and check not in skipped:
            skipped[check] = "covered through the scheduler callbacks"
    return Row("schedule", make, checks, skipped)


def _scheduler(make, extra=()):
    checks = ("save_load", "mixed_precision", "jit", "bad_input", *extra)
    skipped = {
        "export": "a callback: export serves inference only",
        "properties": "its schedule is property-tested in kdt.schedules",
    }
    for check in ("resume", "distribute"):
        if check not in checks:
            skipped[check] = SCENARIO_ONLY
    return Row("scheduler", make, checks, skipped)


def _na_all(reason, *, but=("bad_input",), kind="function"):
    return Row(
        kind,
        None,
        tuple(but),
        {check: reason for check in CHECKS if check not in but},
    )


def _only(kind, checks, reason, make=None, **reasons):
    return Row(
        kind,
        make,
        tuple(checks),
        {check: reasons.get(check, reason) for check in CHECKS if check not in checks},
    )


MATRIX: dict[str, Row] = {
    # kdt.layers
    "layers.MCDropout": _layer(
        lambda: kdt.layers.MCDropout(0.5, seed=1), extra=("resume", "distribute")
    ),
    "layers.MCAlphaDropout": _layer(
        lambda: kdt.layers.MCAlphaDropout(0.5, seed=1), extra=("resume",)
    ),
    "layers.MCSpatialDropout1D": _layer(
        lambda: kdt.layers.MCSpatialDropout1D(0.5, seed=1), input_shape=(5, 4)
    ),
    "layers.MCSpatialDropout2D": _layer(
        lambda: kdt.layers.MCSpatialDropout2D(0.5, seed=1), input_shape=(3, 3, 4)
    ),
    "layers.MCSpatialDropout3D": _layer(
        lambda: kdt.layers.MCSpatialDropout3D(0.5, seed=1),
        input_shape=(2, 2, 2, 4),
    ),
    "layers.RReLU": _layer(
        lambda: kdt.layers.RReLU(0.1, 0.3, seed=1),
        extra=("resume", "distribute"),
        stochastic=False,  # the mean slope at inference
    ),
    # kdt.activations
    "activations.rrelu": _only(
        "activation",
        ("export", "mixed_precision", "jit", "bad_input"),
        SCENARIO_ONLY,
        make=lambda: kdt.activations.rrelu,
        properties="not a schedule",
        save_load="refused as a layer activation in training (issue 13): a saved "
        "model uses the RReLU layer, whose row has save_load; by-name "
        "serialization is tested in tests/activations/test_rrelu.py",
    ),
    # kdt.constraints
    "constraints.MaxNorm": _only(
        "constraint",
        ("save_load", "mixed_precision", "jit", "distribute", "bad_input"),
        SCENARIO_ONLY,
        make=lambda: kdt.constraints.MaxNorm(0.5),
        export="constraints act in training only; export serves inference",
        properties="not a schedule",
    ),
    "constraints.apply_max_norm": _only(
        "apply_max_norm",
        ("save_load", "mixed_precision", "jit", "distribute", "bad_input"),
        SCENARIO_ONLY,
        export="constraints act in training only; export serves inference",
        properties="not a schedule",
    ),
    # kdt.schedules
    "schedules.PowerSchedule": _schedule(
        lambda: kdt.schedules.PowerSchedule(0.1, decay_steps=3, power=1.5)
    ),
    "schedules.ExponentialSchedule": _schedule(
        lambda: kdt.schedules.ExponentialSchedule(0.1, decay_steps=3, decay_rate=0.5)
    ),
    "schedules.PiecewiseConstantSchedule": _schedule(
        lambda: kdt.schedules.PiecewiseConstantSchedule([2, 4], [0.1, 0.05, 0.01])
    ),
    "schedules.OneCycleSchedule": _schedule(
        lambda: kdt.schedules.OneCycleSchedule(0.1, total_steps=8)
    ),
    "schedules.OneCycleMomentum": _schedule(
        lambda: kdt.schedules.OneCycleMomentum(total_steps=8)
    ),
    # kdt.callbacks
    "callbacks.OneCycleScheduler": _scheduler(
        lambda: kdt.callbacks.OneCycleScheduler(0.1), extra=("resume", "distribute")
    ),
    "callbacks.PowerScheduler": _scheduler(
        lambda: kdt.callbacks.PowerScheduler(0.1, decay_steps=2), extra=("resume",)
    ),
    "callbacks.ExponentialScheduler": _scheduler(
        lambda: kdt.callbacks.ExponentialScheduler(
            0.1, decay_steps=2, decay_rate=0.5, update="epoch"
        ),
        extra=("resume",),
    ),
    "callbacks.LearningRateFinder": _only(
        "lr_finder",
        ("mixed_precision", "jit", "bad_input"),
        "restores the model and optimizer it probed: leaves no state behind",
        make=lambda: kdt.callbacks.LearningRateFinder(steps=6),
        export="a callback: export serves inference only",
        properties="not a schedule",
    ),
    "callbacks.find_learning_rate": _only(
        "find_learning_rate",
        ("mixed_precision", "jit", "bad_input"),
        "restores the model and optimizer it probed: leaves no state behind",
        properties="not a schedule",
    ),
    "callbacks.release": _na_all(
        "undoes what our callbacks installed: nothing of its own to save, export "
        "or distribute (tests/callbacks/test_state_ownership.py)"
    ),
    # kdt.transfer
    "transfer.freeze": _only(
        "transfer", ("save_load", "bad_input"), "only sets `trainable` flags"
    ),
    "transfer.unfreeze": _only(
        "transfer", ("save_load", "bad_input"), "only sets `trainable` flags"
    ),
    "transfer.clone_with_weights": _only(
        "transfer",
        ("save_load", "mixed_precision", "bad_input"),
        "returns a plain Keras model (its layers are covered by their own rows)",
    ),
    "transfer.reuse_layers": _only(
        "transfer",
        ("save_load", "mixed_precision", "bad_input"),
        "returns a plain Keras model (its layers are covered by their own rows)",
    ),
    "transfer.recompile": _only(
        "transfer",
        ("save_load", "mixed_precision", "jit", "bad_input"),
        "compiles: nothing of its own to export or distribute",
    ),
    "transfer.GradualUnfreezing": _only(
        "gradual_unfreezing",
        ("save_load", "resume", "mixed_precision", "jit", "bad_input"),
        SCENARIO_ONLY,
        make=lambda: kdt.transfer.GradualUnfreezing(
            {0: 1, 1: 3}, learning_rate_factor=0.5
        ),
        export="a callback: export serves inference only",
        properties="not a schedule",
    ),
    "transfer.discriminative_optimizer": _only(
        "discriminative_optimizer",
        ("save_load", "resume", "mixed_precision", "jit", "bad_input"),
        SCENARIO_ONLY,
        export="an optimizer: export serves inference only",
        properties="not a schedule",
    ),
    "transfer.fine_tune": _only(
        "fine_tune",
        ("save_load", "mixed_precision", "jit", "bad_input"),
        "a recipe over freeze, 1cycle and discriminative_optimizer (own rows)",
    ),
    # kdt.uncertainty
    "uncertainty.mc_predict": _only(
        "mc_predict",
        ("mixed_precision", "jit", "bad_input"),
        "a function of a model: nothing of its own to save or export",
    ),
    "uncertainty.to_mc_dropout": dataclasses.replace(
        _only(
            "to_mc_dropout",
            ("save_load", "export", "mixed_precision", "bad_input"),
            "returns a model of MC layers (covered by their own rows)",
        ),
        stochastic=True,
        random_in_training=True,
    ),
    # kdt.metrics
    "metrics.ExpectedCalibrationError": _only(
        "metric",
        ("save_load", "mixed_precision", "jit", "bad_input"),
        "a metric: nothing to export, resume or distribute beyond Keras's own",
        make=lambda: kdt.metrics.ExpectedCalibrationError(n_bins=5),
    ),
    "metrics.expected_calibration_error": _na_all(FUNCTION),
    # kdt.diagnostics and kdt.initializers (issue 12)
    "diagnostics.check": _na_all(
        "a measurement that changes nothing; mixed precision and every backend are "
        "covered in tests/diagnostics"
    ),
    "diagnostics.DiagnosticReport": _na_all("a plain result object", kind="result"),
    "diagnostics.Finding": _na_all("a plain result object", kind="result"),
    "initializers.lsuv": _na_all(
        "sets kernel values once; the model is then a plain Keras model"
    ),
    "callbacks.TrainingMonitor": _only(
        "training_monitor",
        ("bad_input",),
        "a callback that leaves the model as it found it",
        mixed_precision="covered in tests/callbacks/test_training_monitor.py "
        "(unscaled gradients under mixed_float16)",
        jit="covered in tests/callbacks/test_training_monitor.py (compiled steps "
        "with steps_per_execution > 1)",
    ),
    # kdt.plotting
    "plotting.plot_activation_histograms": _na_all(PLOT),
    "plotting.plot_gradient_norms": _na_all(PLOT),
    "plotting.plot_diagnostic_report": _na_all(PLOT),
    "plotting.plot_schedule": _na_all(PLOT),
    "plotting.plot_reliability_diagram": _na_all(PLOT),
    "plotting.plot_uncertainty_histogram": _na_all(PLOT),
}


def _with_check(check: str, keys: set[str]) -> None:
    """Adds `check` to the rows of `keys` (it was listed as not applying)."""
    for key in keys:
        row = MATRIX[key]
        MATRIX[key] = dataclasses.replace(
            row,
            checks=(*row.checks, check),
            na={name: why for name, why in row.na.items() if name != check},
        )


# tests/reliability/test_distribute.py: one scenario per group of components.
_with_check(
    "distribute",
    {
        key
        for key in MATRIX
        if key.split(".")[0]
        in ("layers", "schedules", "transfer", "uncertainty", "initializers")
    }
    | {
        "callbacks.PowerScheduler",
        "callbacks.ExponentialScheduler",
        "callbacks.LearningRateFinder",
        "callbacks.find_learning_rate",
        "callbacks.release",
        "callbacks.TrainingMonitor",
        "metrics.ExpectedCalibrationError",
        "diagnostics.check",
    }
    - {key for key, row in MATRIX.items() if "distribute" in row.checks},
)


def keys_for(check: str) -> list[Any]:
    """The `pytest.param`s of every public object the check applies to.

    Rows with a known failure for `check` are marked `xfail(strict=True)`.
    """
    if check not in CHECKS:
        raise ValueError(f"Unknown check {check!r}; expected one of {list(CHECKS)}")
    params = []
    for key, row in MATRIX.items():
        if check not in row.checks:
            continue
        marks = []
        if check in row.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=row.xfail[check]))
        params.append(pytest.param(key, marks=marks, id=key))
    return params


def rows_of(kind: str, check: str) -> list[str]:
    """Keys of the rows of one kind that the check applies to."""
    return [
        key for key, row in MATRIX.items() if row.kind == kind and check in row.checks
    ]


def markdown_table() -> str:
    """The matrix as a Markdown table (component x check)."""
    header = "| component | " + " | ".join(CHECKS) + " |"
    lines = [header, "|---" * (len(CHECKS) + 1) + "|"]
    for key, row in MATRIX.items():
        cells = []
        for check in CHECKS:
            if check in row.xfail:
                cells.append("xfail")
            elif check in row.checks:
                cells.append("pass")
            else:
                cells.append("n.a.")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
