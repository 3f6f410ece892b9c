"""recompile: same loss, metrics and optimizer settings, fresh optimizer state."""

import warnings

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests._backends import steps_per_execution
from tests.transfer.models import data, mlp


def two_outputs():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    first = keras.layers.Dense(1, name="first")(hidden)
    second = keras.layers.Dense(1, name="second")(hidden)
    return keras.Model(inputs, {"first": first, "second": second})


def compile_config_without_optimizer(model):
    config = model.get_compile_config()
    config.pop("optimizer")
    return config


@pytest.mark.parametrize("as_objects", [False, True])
def test_recompile_repeats_compile(as_objects):
    model = two_outputs()
    if as_objects:
        loss = {
            "first": keras.losses.MeanSquaredError(),
            "second": keras.losses.Huber(),
        }
        metrics = {"first": [keras.metrics.MeanAbsoluteError()], "second": ["mse"]}
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
    else:
        loss = {"first": "mse", "second": "huber"}
        metrics = {"first": ["mae"], "second": ["mse"]}
        optimizer = "adam"
    model.compile(
        optimizer=optimizer,
        loss=loss,
        loss_weights={"first": 1.0, "second": 0.25},
        metrics=metrics,
        steps_per_execution=steps_per_execution(2),
        jit_compile=False,
    )
    x, y = data(32)
    targets = {"first": y, "second": -y}
    model.fit(x, targets, epochs=1, batch_size=8, verbose=0)
    old_optimizer = model.optimizer
    before = compile_config_without_optimizer(model)
    optimizer_config = old_optimizer.get_config()
    kdt.transfer.freeze(model, until="hidden")
    assert kdt.transfer.recompile(model) is model
    assert compile_config_without_optimizer(model) == before
    assert model.optimizer is not old_optimizer
    assert type(model.optimizer) is type(old_optimizer)
    assert model.optimizer.get_config() == optimizer_config
    assert int(model.optimizer.iterations.numpy()) == 0
    assert not model.optimizer.built
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = model.fit(x, targets, epochs=1, batch_size=8, verbose=0)
    assert set(history.history) == {
        "loss",
        "first_loss",
        "second_loss",
        "first_mean_absolute_error" if as_objects else "first_mae",
        "second_mse",
    }
    assert len(model.optimizer.variables) < len(old_optimizer.variables)


def test_recompile_new_learning_rate_replaces_schedule():
    model = mlp()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model.compile(optimizer=keras.optimizers.Adam(schedule, beta_1=0.8), loss="mse")
    kdt.transfer.recompile(model, learning_rate=1e-4)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    assert model.optimizer.beta_1 == 0.8
    kdt.transfer.recompile(model)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


def test_recompile_keeps_rate_changed_since_compile():
    model = mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.optimizer.learning_rate = 3e-4
    kdt.transfer.recompile(model)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)


def test_recompile_multi_optimizer_keeps_ratios():
    model = mlp()
    optimizer = kdt.transfer.discriminative_optimizer(
        model, "adam", learning_rate_range=(1e-4, 1e-2), num_groups=3
    )
    model.compile(optimizer=optimizer, loss="mse")
    kdt.transfer.recompile(model, learning_rate=1e-3)
    rates = [float(sub.learning_rate) for sub in model.optimizer.optimizers]
    np.testing.assert_allclose(rates, [1e-5, 1e-4, 1e-3], rtol=1e-5)
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert model.optimizer is not optimizer


def test_recompile_mixed_precision_rewraps_once():
    keras.config.set_dtype_policy("mixed_float16")
    model = mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    kdt.transfer.recompile(model, learning_rate=1e-2)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    inner = model.optimizer.inner_optimizer
    assert isinstance(inner, keras.optimizers.Adam)
    assert float(inner.learning_rate) == pytest.approx(1e-2)


def test_recompile_errors():
    with pytest.raises(ValueError, match=r"`model`.*compiled"):
        kdt.transfer.recompile(mlp())
    model = mlp()
    model.compile(optimizer="adam", loss="mse")
    for bad in (0.0, -1e-3):
        with pytest.raises(ValueError, match=r"`learning_rate`"):
            kdt.transfer.recompile(model, learning_rate=bad)
    with pytest.raises(TypeError, match=r"`learning_rate`"):
        kdt.transfer.recompile(model, learning_rate="fast")
    with pytest.raises(TypeError, match=r"`model`"):
        kdt.transfer.recompile(None)


@pytest.mark.parametrize("auto_scale_loss", [False, True])
def test_recompile_keeps_auto_scale_loss_run_eagerly_and_weighted_metrics(
    auto_scale_loss,
):
    keras.config.set_dtype_policy("mixed_float16")
    model = mlp()
    model.compile(
        keras.optimizers.SGD(0.01),
        "mse",
        weighted_metrics=["mae"],
        run_eagerly=True,
        steps_per_execution=steps_per_execution(3),
        auto_scale_loss=auto_scale_loss,
    )
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled is auto_scale_loss
    before = compile_config_without_optimizer(model)
    kdt.transfer.recompile(model, learning_rate=0.1)
    assert compile_config_without_optimizer(model) == before
    assert model.run_eagerly and model.steps_per_execution == steps_per_execution(3)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    assert not isinstance(
        getattr(model.optimizer, "inner_optimizer", None),
        keras.optimizers.LossScaleOptimizer,
    )
