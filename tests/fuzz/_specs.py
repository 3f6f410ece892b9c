"""How to call every public callable validly, and the kind of each argument.

`SPECS` has one entry per public object of `keras_dnntools._registry`; the
harness fails for a public object without one, so a new public object is
fuzzed as soon as it is registered. An entry gives:

- `valid(context)`: keyword arguments of a valid call;
- `kinds`: the `Kind` of every argument of the signature (`_kinds.py`);
- `touches_model`: whether the call acts on `context.model` (the harness then
  checks that a refused call leaves the model and its optimizer unchanged).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import keras
import numpy as np

import keras_dnntools as kdt
from tests.fuzz._kinds import (
    Bool,
    Choice,
    Fixed,
    Integer,
    Kind,
    Model,
    Name,
    Real,
    Seed,
    Sequence,
    float_data,
)

N, FEATURES, OUTPUTS = 8, 6, 2
NO_SUCH = ["no_such_layer"]


class Context:
    """Models, data and results the calls act on, built when first asked for."""

    x = np.random.default_rng(0).normal(size=(N, FEATURES)).astype("float32")
    y = np.random.default_rng(1).normal(size=(N, OUTPUTS)).astype("float32")
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    probs = np.stack([np.linspace(0.1, 0.9, N), 1 - np.linspace(0.1, 0.9, N)], 1)

    @functools.cached_property
    def model(self):
        """A compiled, built model with BatchNorm and Dropout (SGD + momentum)."""
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(5, activation="relu", name="hidden_1"),
                keras.layers.BatchNormalization(name="norm"),
                keras.layers.Dense(4, activation="relu", name="hidden_2"),
                keras.layers.Dropout(0.5, seed=1, name="dropout"),
                keras.layers.Dense(OUTPUTS, name="top"),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
        model.optimizer.build(model.trainable_variables)
        return model

    # The monitor, report and prediction are read-only inputs of the calls
    # fuzzed (plots, DiagnosticReport): built once per process, not per test.
    @property
    def monitor(self):
        return _shared_monitor()

    @property
    def report(self):
        return _shared_report()

    @property
    def prediction(self):
        return _shared_prediction()

    def snapshot(self):
        """Everything a refused call must leave as it was (None if no model yet)."""
        if "model" not in self.__dict__:
            return None
        model = self.model
        optimizer = model.optimizer
        return {
            "weights": [np.array(w) for w in model.get_weights()],
            "optimizer": optimizer,
            "optimizer_variables": [
                keras.ops.convert_to_numpy(v).copy() for v in optimizer.variables
            ],
            "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            "trainable": [layer.trainable for layer in model.layers],
            "constraints": [
                getattr(layer, "kernel_constraint", None) for layer in model.layers
            ],
            "compiled": model.compiled,
        }


@functools.cache
def _shared_monitor():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(3, activation="relu")]
    )
    model.add(keras.layers.Dense(OUTPUTS))
    model.compile(optimizer="sgd", loss="mse")
    monitor = kdt.callbacks.TrainingMonitor(histograms=True)
    model.fit(
        Context.x, Context.y, epochs=1, batch_size=4, verbose=0, callbacks=[monitor]
    )
    return monitor


@functools.cache
def _shared_report():
    return kdt.diagnostics.check(Context().model, Context.x, Context.y)


@functools.cache
def _shared_prediction():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            kdt.layers.MCDropout(0.5, seed=0),
            keras.layers.Dense(OUTPUTS, activation="softmax"),
        ]
    )
    return kdt.uncertainty.mc_predict(model, Context.x, 4, seed=0)


def _same(before, after):
    if before is None or after is None:
        return before is after
    for key in ("optimizer", "compiled"):
        if before[key] is not after[key]:
            return False
    for key in ("trainable", "constraints"):
        if before[key] != after[key]:
            return False
    if before["learning_rate"] != after["learning_rate"]:
        return False
    return all(
        np.array_equal(a, b, equal_nan=True)
        for key in ("weights", "optimizer_variables")
        for a, b in zip(before[key], after[key], strict=True)
    )


same_state = _same


@dataclass(frozen=True)
class Spec:
    valid: object
    kinds: dict = field(default_factory=dict)
    touches_model: bool = False
    unusual_limit: int | None = None


RATE = Real(low=0.0, high=1.0, high_inclusive=False)
POSITIVE = Real(low=0.0, low_inclusive=False)
FRACTION = Real(low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
STEPS = Integer(low=1)
DATA = Fixed(extra_hostile=float_data(N, FEATURES))
TARGETS = Fixed(
    optional=True,
    extra_hostile=(
        np.zeros((N + 3, OUTPUTS), "float32"),
        np.full((N, OUTPUTS), np.nan, "float32"),
        np.full((N, OUTPUTS), "a"),
        "y",
    ),
)
LAYER_LIST = Fixed(optional=True, extra_hostile=(NO_SUCH, [5], 5, 1.5, "no_such"))
AXES = Fixed(optional=True, extra_hostile=(5, "axes", np.zeros(3)))
DATA_FORMAT = Choice(optional=True, choices=("channels_first", "channels_last"))
ANNEAL = Choice(choices=("cos", "linear"))
NOISE_SHAPE = Fixed(
    optional=True,
    extra_hostile=((0, 1), (-1,), (2.5,), ("a",), "ab", 5, (True,), (10**30,)),
)
LABELS = Fixed(
    extra_hostile=(
        np.array([0, 1, 1]),
        np.array([0, 2] * 4),
        np.array([np.nan] * N),
        np.array(["a"] * N),
        np.zeros((0,)),
        "y",
        5,
    )
)
PROBABILITIES = Fixed(
    extra_hostile=(
        np.full((N, 2), np.nan),
        np.full((N, 2), 0.7),
        np.full((N, 2), -0.5),
        np.zeros((N + 1, 2)) + 0.5,
        np.zeros((0, 2)),
        np.full((N, 2), "a"),
        np.zeros((N, 2, 2)),
        "p",
        5,
    )
)


def _schedule_kinds(**extra):
    return {"name": Name(), **extra}


SPECS = {
    # kdt.layers
    "layers.MCDropout": Spec(
        lambda c: {"rate": 0.5, "noise_shape": None, "seed": 1},
        {"rate": RATE, "noise_shape": NOISE_SHAPE, "seed": Seed()},
    ),
    "layers.MCAlphaDropout": Spec(
        lambda c: {"rate": 0.2, "noise_shape": None, "seed": 1},
        {"rate": RATE, "noise_shape": NOISE_SHAPE, "seed": Seed()},
    ),
    "layers.MCSpatialDropout1D": Spec(
        lambda c: {"rate": 0.5, "seed": 1, "name": None, "dtype": None},
        {
            "rate": RATE,
            "seed": Seed(),
            "name": Name(),
            "dtype": Fixed(optional=True, extra_hostile=("float77", 5)),
        },
    ),
    "layers.MCSpatialDropout2D": Spec(
        lambda c: {"rate": 0.5, "data_format": None, "seed": 1},
        {
            "rate": RATE,
            "data_format": DATA_FORMAT,
            "seed": Seed(),
            "name": Name(),
            "dtype": Fixed(optional=True, extra_hostile=("float77", 5)),
        },
    ),
    "layers.MCSpatialDropout3D": Spec(
        lambda c: {"rate": 0.5, "data_format": "channels_last", "seed": 1},
        {
            "rate": RATE,
            "data_format": DATA_FORMAT,
            "seed": Seed(),
            "name": Name(),
            "dtype": Fixed(optional=True, extra_hostile=("float77", 5)),
        },
    ),
    "layers.RReLU": Spec(
        lambda c: {"lower": 0.125, "upper": 0.25, "seed": 1},
        {
            "lower": Real(low=0.0, high=0.25),
            "upper": Real(low=0.125),
            "seed": Seed(),
        },
    ),
    # kdt.activations
    "activations.rrelu": Spec(
        lambda c: {
            "x": c.x,
            "lower": 0.125,
            "upper": 0.25,
            "training": True,
            "seed": 3,
        },
        {
            "x": Fixed(extra_hostile=(np.full((2, 2), "a"), "x", [["a"]])),
            "lower": Real(low=0.0, high=0.25),
            "upper": Real(low=0.125),
            "training": Bool(),
            "seed": Seed(),
        },
    ),
    # kdt.constraints
    "constraints.MaxNorm": Spec(
        lambda c: {"max_value": 2.0, "axis": 0},
        {
            "max_value": POSITIVE,
            # An axis beyond the weight's rank is refused at call time.
            "axis": Fixed(
                extra_hostile=("rows", 2.5, (0, "a"), (), True, 10**30, (0, 0), [1.5])
            ),
        },
    ),
    "constraints.apply_max_norm": Spec(
        lambda c: {
            "model": c.model,
            "max_value": 2.0,
            "layers": None,
            "clip_now": True,
        },
        {
            "model": Model(),
            "max_value": POSITIVE,
            "layers": LAYER_LIST,
            "clip_now": Bool(),
        },
        touches_model=True,
    ),
    # kdt.schedules
    "schedules.PowerSchedule": Spec(
        lambda c: {"initial_learning_rate": 0.1, "decay_steps": 10.0, "power": 1.0},
        _schedule_kinds(
            initial_learning_rate=POSITIVE,
            decay_steps=POSITIVE,
            power=Real(low=0.0),
        ),
    ),
    "schedules.ExponentialSchedule": Spec(
        lambda c: {
            "initial_learning_rate": 0.1,
            "decay_steps": 10.0,
            "decay_rate": 0.5,
        },
        _schedule_kinds(
            initial_learning_rate=POSITIVE,
            decay_steps=POSITIVE,
            decay_rate=Real(low=0.0, high=1.0, low_inclusive=False),
        ),
    ),
    "schedules.PiecewiseConstantSchedule": Spec(
        lambda c: {"boundaries": [10, 20], "values": [0.1, 0.01, 0.001]},
        _schedule_kinds(
            boundaries=Sequence(element=Real(low=0.0)),
            values=Sequence(element=POSITIVE, min_length=1),
        ),
    ),
    "schedules.OneCycleSchedule": Spec(
        lambda c: {"max_learning_rate": 0.1, "total_steps": 100},
        _schedule_kinds(
            max_learning_rate=POSITIVE,
            total_steps=Integer(low=2),
            pct_start=FRACTION,
            anneal_strategy=ANNEAL,
            div_factor=POSITIVE,
            final_div_factor=POSITIVE,
            three_phase=Bool(),
        ),
    ),
    "schedules.OneCycleMomentum": Spec(
        lambda c: {"total_steps": 100, "base_momentum": 0.85, "max_momentum": 0.95},
        _schedule_kinds(
            total_steps=Integer(low=2),
            base_momentum=Real(low=0.0, high=0.95),
            max_momentum=Real(low=0.85, high=1.0),
            pct_start=FRACTION,
            anneal_strategy=ANNEAL,
            three_phase=Bool(),
        ),
    ),
    # kdt.callbacks
    "callbacks.OneCycleScheduler": Spec(
        lambda c: {"max_learning_rate": 0.1, "total_steps": 100},
        {
            "max_learning_rate": POSITIVE,
            "total_steps": Integer(optional=True, low=2),
            "pct_start": FRACTION,
            "anneal_strategy": ANNEAL,
            "div_factor": POSITIVE,
            "final_div_factor": POSITIVE,
            "three_phase": Bool(),
            "cycle_momentum": Bool(),
            "base_momentum": Real(low=0.0, high=0.95),
            "max_momentum": Real(low=0.85, high=1.0),
        },
    ),
    "callbacks.PowerScheduler": Spec(
        lambda c: {"initial_learning_rate": 0.1, "decay_steps": 10.0},
        {
            "initial_learning_rate": POSITIVE,
            "decay_steps": POSITIVE,
            "power": Real(low=0.0),
            "update": Choice(choices=("batch", "epoch")),
        },
    ),
    "callbacks.ExponentialScheduler": Spec(
        lambda c: {"initial_learning_rate": 0.1, "decay_steps": 10.0},
        {
            "initial_learning_rate": POSITIVE,
            "decay_steps": POSITIVE,
            "decay_rate": POSITIVE,
            "update": Choice(choices=("batch", "epoch")),
        },
    ),
    "callbacks.LearningRateFinder": Spec(
        lambda c: {"min_learning_rate": 1e-4, "max_learning_rate": 1.0, "steps": 5},
        {
            "min_learning_rate": Real(low=0.0, high=1.0, low_inclusive=False),
            "max_learning_rate": Real(low=1e-4, low_inclusive=False),
            "steps": Integer(low=2),
            "stop_factor": Real(low=1.0, low_inclusive=False),
        },
    ),
    "callbacks.find_learning_rate": Spec(
        lambda c: {
            "model": c.model,
            "x": c.x,
            "y": c.y,
            "batch_size": 4,
            "min_learning_rate": 1e-4,
            "max_learning_rate": 1.0,
            "steps": 4,
        },
        {
            "model": Model(),
            "x": DATA,
            "y": TARGETS,
            "batch_size": Integer(low=1),
            "min_learning_rate": Real(low=0.0, high=1.0, low_inclusive=False),
            "max_learning_rate": Real(low=1e-4, low_inclusive=False),
            "steps": Integer(low=2),
        },
        touches_model=True,
        unusual_limit=1,
    ),
    "callbacks.release": Spec(lambda c: {"model": c.model}, {"model": Model()}),
    "callbacks.TrainingMonitor": Spec(
        lambda c: {"frequency": 2, "histograms": False, "layers": None},
        {
            "frequency": Integer(low=1),
            "log_dir": Fixed(optional=True, extra_hostile=(5, 1.5, ["logs"])),
            "histograms": Bool(),
            "layers": Fixed(optional=True, extra_hostile=(5, 1.5, [5], [None])),
        },
    ),
    # kdt.diagnostics, kdt.initializers
    "diagnostics.Finding": Spec(
        lambda c: {
            "kind": "dead_units",
            "layer": "dense",
            "message": "90% dead",
            "remedy": "...",
        },
        {
            "kind": Choice(
                choices=(
                    "vanishing_gradients",
                    "exploding_gradients",
                    "dead_units",
                    "saturated_units",
                    "not_self_normalizing",
                )
            ),
            "layer": Name(),
            "message": Name(optional=False),
            "remedy": Name(optional=False),
        },
    ),
    "diagnostics.DiagnosticReport": Spec(
        lambda c: {"layers": list(c.report.layers), "findings": [], "loss": 0.5},
        {
            "layers": Fixed(extra_hostile=(5, ["row"], "rows")),
            "findings": Fixed(extra_hostile=(5, ["dead"], "dead_units")),
            # NaN and inf are valid: the loss of an exploding model.
            "loss": Fixed(extra_hostile=("low", True, np.array([1.0, 2.0]))),
        },
    ),
    "diagnostics.check": Spec(
        lambda c: {"model": c.model, "x": c.x, "y": c.y, "batch_size": 4},
        {"model": Model(), "x": DATA, "y": TARGETS, "batch_size": Integer(low=1)},
        touches_model=True,
        unusual_limit=1,
    ),
    "initializers.lsuv": Spec(
        lambda c: {"model": c.model, "x": c.x, "target_std": 1.0, "tolerance": 0.1},
        {
            "model": Model(),
            "x": DATA,
            "target_std": POSITIVE,
            "tolerance": POSITIVE,
            "max_iterations": Integer(low=1),
        },
        touches_model=True,
        unusual_limit=1,
    ),
    # kdt.metrics
    "metrics.expected_calibration_error": Spec(
        lambda c: {"y_true": c.labels, "y_prob": c.probs, "n_bins": 10},
        {
            "y_true": LABELS,
            "y_prob": PROBABILITIES,
            "n_bins": Integer(low=1, high=10**6),
        },
    ),
    "metrics.ExpectedCalibrationError": Spec(
        lambda c: {"n_bins": 10, "name": "ece"},
        {
            "n_bins": Integer(low=1, high=10**6),
            "name": Name(),
            "dtype": Fixed(optional=True, extra_hostile=("float77", 5, "int32")),
        },
    ),
    # kdt.plotting
    "plotting.plot_schedule": Spec(
        lambda c: {"schedule": kdt.schedules.PowerSchedule(0.1, 10), "total_steps": 20},
        {
            "schedule": Fixed(extra_hostile=(42, "power")),
            "total_steps": Integer(optional=True, low=1, high=10**7),
            "momentum": Fixed(optional=True, extra_hostile=(42, "momentum")),
            "ax": AXES,
        },
    ),
    "plotting.plot_reliability_diagram": Spec(
        lambda c: {"y_true": c.labels, "y_prob": c.probs, "n_bins": 5},
        {
            "y_true": LABELS,
            "y_prob": PROBABILITIES,
            "n_bins": Integer(low=1, high=10**6),
            "ax": AXES,
        },
    ),
    "plotting.plot_uncertainty_histogram": Spec(
        lambda c: {"prediction": c.prediction, "y_true": None, "bins": 5},
        {
            "prediction": Fixed(extra_hostile=(5, "prediction", np.zeros((N, 2)))),
            "y_true": Fixed(
                optional=True,
                extra_hostile=(np.array([0, 1]), np.array(["a"] * N), "y", 5),
            ),
            "measure": Choice(
                choices=(
                    "predictive_entropy",
                    "mutual_information",
                    "expected_entropy",
                    "std",
                )
            ),
            "bins": Integer(low=1, high=10**6),
            "ax": AXES,
        },
    ),
    "plotting.plot_activation_histograms": Spec(
        lambda c: {"monitor": c.monitor, "max_columns": 2},
        {
            "monitor": Fixed(extra_hostile=(5, "monitor")),
            "layers": LAYER_LIST,
            "max_columns": Integer(low=1, high=10**4),
        },
    ),
    "plotting.plot_gradient_norms": Spec(
        lambda c: {"monitor": c.monitor},
        {
            "monitor": Fixed(extra_hostile=(5, "monitor")),
            "layers": LAYER_LIST,
            "stat": Choice(choices=("gradient_norm", "update_ratio", "activation_std")),
            "ax": AXES,
        },
    ),
    "plotting.plot_diagnostic_report": Spec(
        lambda c: {"report": c.report},
        {"report": Fixed(extra_hostile=(5, "report")), "ax": AXES},
    ),
    # kdt.transfer
    "transfer.freeze": Spec(
        lambda c: {"model": c.model, "until": 2, "keep_batchnorm_frozen": True},
        {
            "model": Model(),
            "until": Fixed(
                optional=True, extra_hostile=(99, -99, "no_such", 2.5, True, 10**30)
            ),
            "keep_batchnorm_frozen": Bool(),
        },
        touches_model=True,
    ),
    "transfer.unfreeze": Spec(
        lambda c: {"model": c.model, "top": 1, "keep_batchnorm_frozen": True},
        {
            "model": Model(),
            "top": Integer(optional=True, low=0),
            "keep_batchnorm_frozen": Bool(),
        },
        touches_model=True,
    ),
    "transfer.clone_with_weights": Spec(
        lambda c: {"model": c.model}, {"model": Model()}, touches_model=True
    ),
    "transfer.reuse_layers": Spec(
        lambda c: {"source": c.model, "drop_top": 1},
        {
            "source": Model(),
            "drop_top": Integer(low=0, high=4),
            "head": Fixed(optional=True, extra_hostile=("dense", 5, [5])),
            "freeze_base": Bool(),
            "clone": Bool(),
        },
        touches_model=True,
    ),
    "transfer.discriminative_optimizer": Spec(
        lambda c: {
            "model": c.model,
            "optimizer": "sgd",
            "learning_rate_range": (1e-3, 1e-1),
            "num_groups": 2,
        },
        {
            "model": Model(),
            "optimizer": Fixed(extra_hostile=(42, "no_such_optimizer", 1.5)),
            "learning_rate_range": Sequence(element=POSITIVE, min_length=2),
            "num_groups": Integer(low=1, high=3),
        },
        touches_model=True,
    ),
    "transfer.recompile": Spec(
        lambda c: {"model": c.model, "learning_rate": 0.01},
        {"model": Model(), "learning_rate": Real(optional=True, low=0.0)},
        touches_model=True,
    ),
    "transfer.fine_tune": Spec(
        lambda c: {
            "model": c.model,
            "x": c.x,
            "y": c.y,
            "epochs": 2,
            "freeze_epochs": 1,
            "batch_size": 4,
            "verbose": 0,
        },
        {
            "model": Model(),
            "x": DATA,
            "y": TARGETS,
            "epochs": Integer(low=1),
            "base_learning_rate": POSITIVE,
            "freeze_epochs": Integer(low=0),
            "learning_rate_mult": Real(low=1.0),
        },
        touches_model=True,
        unusual_limit=1,
    ),
    "transfer.GradualUnfreezing": Spec(
        lambda c: {"schedule": {0: 1, 2: 2}, "learning_rate_factor": None},
        {
            "schedule": Fixed(
                extra_hostile=("1,2", {0: -1}, {-1: 1}, {0.5: 1}, {0: "a"}, [1, 2], {})
            ),
            "learning_rate_factor": Real(optional=True, low=0.0, low_inclusive=False),
            "keep_batchnorm_frozen": Bool(),
        },
    ),
    # kdt.uncertainty
    "uncertainty.to_mc_dropout": Spec(
        lambda c: {"model": c.model}, {"model": Model()}, touches_model=True
    ),
    "uncertainty.mc_predict": Spec(
        lambda c: {"model": c.model, "x": c.x, "n_samples": 3, "seed": 1},
        {
            "model": Model(),
            "x": DATA,
            "n_samples": Integer(low=1),
            "batch_size": Integer(optional=True, low=1),
            "seed": Seed(),
            "return_samples": Bool(),
            "output_kind": Choice(
                optional=True,
                choices=("categorical", "binary", "regression", "heteroscedastic"),
            ),
            "verbose": Fixed(extra_hostile=("yes", 1.5, -1)),
        },
        touches_model=True,
        unusual_limit=1,
    ),
}

#: Arguments not fuzzed, with the reason.
NOT_FUZZED = {
    "**kwargs": "passed on to keras.layers.Layer, which validates them",
}

__all__ = ["SPECS", "Context", "Kind", "Spec", "same_state"]
