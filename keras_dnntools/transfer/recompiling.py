"""recompile: compile again with the same settings and a fresh optimizer."""

from __future__ import annotations

from typing import Any

import keras

from keras_dnntools import _keras_compat
from keras_dnntools._distribution import strategy_scope
from keras_dnntools._registry import public
from keras_dnntools._validation import check_float, invalid_value
from keras_dnntools.transfer import _weighted_layers as wl


@public("transfer")
def recompile(model: keras.Model, *, learning_rate: float | None = None) -> keras.Model:
    """Compiles `model` again with the same loss, metrics and optimizer settings.

    Keras decides what trains when `compile()` is called, so every change of
    `trainable` (freezing, unfreezing) needs a new `compile()`; this one
    repeats the last call: the same loss, loss weights, metrics, weighted
    metrics, `run_eagerly`, `jit_compile`, `steps_per_execution` and
    `auto_scale_loss` (read from the optimizer: a mixed_float16 model
    compiled with `auto_scale_loss=False` stays without loss scaling), and an
    optimizer of the same class and configuration with fresh state (no
    momentum carried over from training with other layers frozen, step count
    back to 0). The optimizer's configuration is taken as it is now, so a rate
    changed by hand or by a callback carries over unless `learning_rate` is
    given. Losses and metrics are rebuilt from their configs, so it works
    whether `compile()` got strings or objects (metric state starts afresh).

    For a `MultiOptimizer` (such as `kdt.transfer.discriminative_optimizer`
    gives), `learning_rate` becomes the rate of the sub-optimizer with the
    largest rate and the others keep their ratio to it.

    Args:
        model: a compiled `keras.Model`.
        learning_rate: optional new learning rate (a positive number); it
            replaces a `LearningRateSchedule` too.

    Returns:
        The same `model`, compiled again.

    Raises:
        ValueError: if the model was never compiled, `learning_rate` is not
            positive, or the compile arguments cannot be rebuilt from their
            configs (e.g. a lambda as loss).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse",
    ...               metrics=["mae"])
    >>> _ = kdt.transfer.freeze(model, until=0)
    >>> _ = kdt.transfer.recompile(model, learning_rate=1e-4)
    >>> float(model.optimizer.learning_rate)
    0.0001
    """
    model = wl.check_model(model)
    arguments = compile_arguments(model)
    if learning_rate is not None:
        learning_rate = check_float(
            "learning_rate",
            learning_rate,
            low=0.0,
            low_inclusive=False,
            expected="None or a positive number",
        )
    with strategy_scope(model):  # a MirroredStrategy's optimizer: made in scope
        arguments["optimizer"] = fresh_optimizer(
            compiled_optimizer(model), learning_rate=learning_rate
        )
    model.compile(**arguments)
    return model


def compile_arguments(model: keras.Model) -> dict[str, Any]:
    """The arguments of the model's last `compile()`, rebuilt from their configs.

    Raises:
        ValueError: if the model was never compiled or an argument cannot be
            rebuilt.
    """
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise invalid_value(
            "model",
            "a compiled model (call model.compile(...) once; recompile repeats it)",
            model.name,
        )
    try:
        arguments = keras.saving.deserialize_keras_object(model.get_compile_config())
    except (TypeError, ValueError, AttributeError) as error:
        raise invalid_value(
            "model",
            "a model compiled with serializable losses and metrics (built-in "
            "names, Keras objects or registered functions), so that they can "
            f"be rebuilt; rebuilding them failed with: {error}",
            model.name,
        ) from error
    # Keras's compile config leaves out `auto_scale_loss`: the optimizer shows
    # it. Under mixed_float16, compile() wraps the optimizer in a
    # LossScaleOptimizer unless it was told not to.
    arguments["auto_scale_loss"] = isinstance(
        model.optimizer, keras.optimizers.LossScaleOptimizer
    )
    return arguments


def fresh_optimizer(
    optimizer: keras.optimizers.Optimizer, *, learning_rate: float | None = None
) -> keras.optimizers.Optimizer:
    """An unbuilt optimizer of the same class and current config (new rate)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        config = optimizer.get_config()
        config["inner_optimizer"] = keras.optimizers.serialize(
            fresh_optimizer(optimizer.inner_optimizer, learning_rate=learning_rate)
        )
        return type(optimizer).from_config(config)
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return _fresh_multi_optimizer(optimizer, learning_rate)
    config = _plain_config(optimizer.get_config())
    if learning_rate is not None:
        config["learning_rate"] = learning_rate
    return type(optimizer).from_config(config)


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    # A scheduler callback may have turned a hyperparameter into a variable
    # for the duration of fit(); a config wants its value.
    return {
        key: float(value.numpy()) if isinstance(value, keras.Variable) else value
        for key, value in config.items()
    }


def compiled_optimizer(model: keras.Model) -> keras.optimizers.Optimizer:
    """The model's optimizer as `compile()` got it.

    `compile(auto_scale_loss=True)` wraps the optimizer in a
    `LossScaleOptimizer` under a mixed_float16 policy and will do it again,
    so that wrapper is left out unless the user passed one.
    """
    optimizer = model.optimizer
    passed = model.get_compile_config().get("optimizer")
    passed_wrapper = isinstance(passed, dict) and passed.get("class_name") == (
        "LossScaleOptimizer"
    )
    if (
        isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        and not passed_wrapper
    ):
        return optimizer.inner_optimizer
    return optimizer


def _fresh_multi_optimizer(
    optimizer: keras.optimizers.MultiOptimizer, learning_rate: float | None
) -> keras.optimizers.MultiOptimizer:
    live = list(optimizer.optimizers)
    rates = [float(keras.ops.convert_to_numpy(sub.learning_rate)) for sub in live]
    fresh = type(optimizer).from_config(optimizer.get_config())
    if len(fresh.optimizers) != len(live):
        raise invalid_value(
            "model",
            "a model whose MultiOptimizer can be rebuilt from its config (an "
            "OptimizerMap, not a function, mapping variables to optimizers)",
            optimizer.name,
        )
    if learning_rate is None:
        return fresh
    largest = max(rates)
    for sub, rate in zip(fresh.optimizers, rates, strict=True):
        if not isinstance(_keras_compat.learning_rate_holder(sub), keras.Variable):
            raise invalid_value(
                "learning_rate",
                "None when the sub-optimizers of a MultiOptimizer use "
                "LearningRateSchedules",
                learning_rate,
            )
        sub.learning_rate = learning_rate * rate / largest
    return fresh
