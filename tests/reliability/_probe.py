"""What a saved model must restore: measured the same way before and after loading.

Imported both by the test process and by the fresh process that loads the
models (``python -m tests.reliability._fresh_load``), so both sides measure
with the same code.
"""

from __future__ import annotations

import json
import re
from typing import Any

import keras
import numpy as np

_OUR_NAMES = re.compile(r"keras_dnntools>\w+")


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=repr)


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_flat_layers(layer))
    return layers


def _learning_rate(optimizer: Any) -> float | list:
    """The current rate; one per sub-optimizer for a `MultiOptimizer`."""
    sub_optimizers = getattr(optimizer, "optimizers", None)
    if sub_optimizers:
        return [_learning_rate(sub) for sub in sub_optimizers]
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _state(model: keras.Model) -> dict[str, Any]:
    optimizer = getattr(model, "optimizer", None)
    state: dict[str, Any] = {
        "weights": model.get_weights(),
        "trainable": [layer.trainable for layer in _flat_layers(model)],
    }
    if optimizer is not None:
        state["iterations"] = int(keras.ops.convert_to_numpy(optimizer.iterations))
        state["learning_rate"] = _learning_rate(optimizer)
        state["optimizer_variables"] = [
            keras.ops.convert_to_numpy(v) for v in optimizer.variables
        ]
    return state


def probe(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    deterministic: bool,
    train_deterministic: bool,
):
    """Measures what must survive a save/load round trip.

    Returns a dict of plain Python / NumPy values: the configs (model, live
    optimizer), the names of our classes found in them, the weights and
    optimizer state, inference outputs, and the state after one more training
    step on `(x, y)` (so that the optimizer's next rate and slots count).
    Outputs and weights are only compared where they are deterministic.
    """
    configs = {"model": model.get_config()}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        configs["optimizer"] = keras.saving.serialize_keras_object(model.optimizer)
        configs["compile"] = model.get_compile_config()
    text = _json(configs)
    result: dict[str, Any] = {
        "classes": sorted(set(_OUR_NAMES.findall(text))),
        "model_config": _json(configs["model"]),
        "optimizer_config": _json(configs.get("optimizer")),
        "before": _state(model),
    }
    first = np.asarray(model.predict(x, verbose=0))
    second = np.asarray(model.predict(x, verbose=0))
    result["stochastic"] = not np.array_equal(first, second)
    if deterministic:
        result["predict"] = first
    if optimizer is not None and model.compiled:
        if deterministic:
            result["evaluate"] = model.evaluate(x, y, verbose=0, return_dict=True)
        model.train_on_batch(x, y)
        after = _state(model)
        if not train_deterministic:
            after.pop("weights")
            after.pop("optimizer_variables")
        result["after_one_step"] = after
    return result
