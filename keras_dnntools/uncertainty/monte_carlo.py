"""`mc_predict`: fast, BatchNorm-safe Monte Carlo dropout prediction."""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_bool,
    check_int,
    check_seed,
    invalid_type,
    invalid_value,
)
from keras_dnntools.uncertainty import _graph, _sampler
from keras_dnntools.uncertainty.prediction import (
    BINARY,
    CATEGORICAL,
    REGRESSION,
    MCPrediction,
    detect_output_kind,
)

# Memory for one chunk's activations (the mask pools and the accumulators are
# small next to them); the default `batch_size` is derived from it.
_CHUNK_BYTES = 128 * 2**20
_DEFAULT_ROWS = 1024  # when the model's layer shapes are unknown
_MAX_ROWS = 16384


@public("uncertainty")
def mc_predict(
    model: keras.Model,
    x: Any,
    n_samples: int = 100,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
    return_samples: bool = False,
    verbose: bool | int = False,
) -> MCPrediction | Any:
    """Monte Carlo dropout prediction: T stochastic passes, summarized.

    Runs `model` on `x` `n_samples` times with its dropout layers active and
    every other layer in inference mode, and returns the mean, the standard
    deviation and the uncertainty measures of the outputs (Gal & Ghahramani,
    2016, "Dropout as a Bayesian Approximation").

    Unlike the book's ``np.stack([model(X, training=True) for _ in
    range(100)])``, only dropout is stochastic: BatchNormalization normalizes
    with its moving statistics and leaves them unchanged (in Keras 3,
    ``training=True`` makes it use batch statistics and overwrite them).

    Dropout layers are `keras.layers.Dropout`, `SpatialDropout1D/2D/3D` and
    `AlphaDropout` (switched on for the sampling only), their subclasses such as
    `kdt.layers.MCDropout`, at any depth of nested models. `GaussianDropout`,
    `GaussianNoise` and the dropout inside recurrent layers are not sampled:
    they run in inference mode like every other layer.

    It is fast: everything that does not depend on dropout (a trunk in front
    of the first dropout layer) is computed once per instance, the T samples
    run in one compiled loop, and the dropout masks are drawn once per chunk of
    instances and sliced per sample (each instance still gets T independent
    masks; see `keras_dnntools/uncertainty/_sampler.py`). The compiled loop is
    kept for the next call on the same model (until its layers or dropout
    settings change), so repeated calls do not trace again. Memory stays bounded:
    the instances are processed in chunks of `batch_size`, and the
    ``(T, N, ...)`` samples are only built when `return_samples` is True.

    Args:
        model: a built Keras model (Sequential, functional, nested, or
            subclassed) holding at least one dropout layer.
        x: the inputs, as for `model.predict`: an array, or a list/dict of
            arrays for a model with several inputs.
        n_samples: T, the number of Monte Carlo samples (>= 1).
        batch_size: instances per chunk. Defaults to a size whose
            activations take about 128 MiB. Larger is faster, up to memory.
        seed: makes the result reproducible: the same seed and `batch_size`
            give identical results. When None, a seed is drawn from NumPy's
            global generator (so `keras.utils.set_random_seed` makes runs
            repeatable too).
        return_samples: also keep every sample, in `MCPrediction.samples`
            (shape ``(n_samples, n_instances, ...)``).
        verbose: show a progress bar over the chunks of instances.

    Returns:
        An `MCPrediction` (for a model with several outputs, the same
        structure of `MCPrediction`s as the model's outputs).

    Raises:
        ValueError: when the model has no dropout layer, or for a bad
            `n_samples`, `batch_size` or `seed`, or inputs with no instances
            or different numbers of instances.
        TypeError: when `model` is not a Keras model, `x` is not array-like,
            or an argument has the wrong type (e.g. a float `n_samples`).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"),
    ...     keras.layers.Dropout(0.5),
    ...     keras.layers.Dense(3, activation="softmax"),
    ... ])
    >>> x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    >>> prediction = kdt.uncertainty.mc_predict(model, x, n_samples=20, seed=1)
    >>> prediction.mean.shape, prediction.mutual_information.shape
    ((5, 3), (5,))
    >>> prediction.output_kind
    'categorical'
    """
    if not isinstance(model, keras.Model):
        raise invalid_type("model", "a keras.Model", model)
    n_samples = check_int("n_samples", n_samples, low=1)
    if batch_size is not None:
        batch_size = check_int(
            "batch_size", batch_size, low=1, expected="None or an integer >= 1"
        )
    seed = check_seed("seed", seed)
    return_samples = check_bool("return_samples", return_samples)
    if isinstance(verbose, bool) or (
        isinstance(verbose, (int, np.integer)) and verbose in (0, 1, 2)
    ):
        verbose = bool(verbose)
    else:
        raise invalid_value("verbose", "a bool (or 0, 1 or 2)", verbose)
    if not _graph.dropout_layers(model):
        raise ValueError(
            "Invalid value for argument `model`: expected a model with at least "
            "one dropout layer (keras.layers.Dropout, SpatialDropout1D/2D/3D, "
            "AlphaDropout, or kdt.layers.MCDropout and friends). This model has "
            "no dropout layer, so its T samples would all be the same: add one, "
            f"or use model.predict. Received: model={model.name!r}"
        )

    leaves, structure, n_instances = _standardize_x(x)
    _ensure_built(model, leaves, structure)
    if seed is None:
        # NumPy's global generator, which keras.utils.set_random_seed seeds.
        seed = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002
    rows = batch_size or _default_rows(model, n_instances)

    interpreter, run_chunk = _compiled(model, n_samples, return_samples)
    key = tf.constant(_sampler.seed_key(seed), tf.int64)
    progress = keras.utils.Progbar(n_instances) if verbose else None
    results: list | None = None
    with _graph.patched_dropout(
        interpreter.opaque_dropout_layers, _sampler.sample_with_current
    ):
        for index, start in enumerate(range(0, n_instances, rows)):
            stop = min(start + rows, n_instances)
            chunk = keras.tree.pack_sequence_as(
                structure, [leaf[start:stop] for leaf in leaves]
            )
            states = run_chunk(chunk, key, tf.constant(index, tf.int64))
            states = [_sampler.as_numpy(state) for state in states]
            if results is None:
                results = [
                    _Accumulator(state, n_instances, n_samples) for state in states
                ]
            for result, state in zip(results, states, strict=True):
                result.add(state, start, stop)
            if progress is not None:
                progress.update(stop)

    predictions = [result.prediction() for result in results]
    if len(predictions) == 1:
        return predictions[0]
    return keras.tree.pack_sequence_as(interpreter.output_structure, predictions)


# Compiled sampling functions, per model (weakly: they die with the model),
# so that repeated calls do not trace again.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAX_COMPILED_PER_MODEL = 8


def _compiled(model: keras.Model, n_samples: int, keep_samples: bool) -> tuple:
    functions = _COMPILED.setdefault(model, {})
    key = (n_samples, keep_samples, _graph.fingerprint(model))
    if key not in functions:
        if len(functions) >= _MAX_COMPILED_PER_MODEL:
            functions.clear()
        interpreter = _graph.Interpreter(model)
        functions[key] = (
            interpreter,
            _sampler.build_chunk_function(interpreter, n_samples, keep_samples),
        )
    return functions[key]


def _standardize_x(x: Any) -> tuple[list, Any, int]:
    if isinstance(x, tf.data.Dataset) or hasattr(x, "__next__"):
        raise invalid_type(
            "x", "an array, or a list/dict of arrays (not a dataset/generator)", x
        )
    structure = x
    leaves = keras.tree.flatten(x)
    if not leaves:
        raise invalid_value("x", "at least one input array", x)
    arrays = []
    for leaf in leaves:
        if isinstance(leaf, tf.Tensor):
            arrays.append(leaf)
            continue
        try:
            array = np.asarray(leaf)
        except (TypeError, ValueError) as error:
            raise invalid_type("x", "array-like inputs", leaf) from error
        if array.dtype == object:
            raise invalid_type("x", "numeric array-like inputs", leaf)
        if array.dtype == np.float64:
            array = array.astype(keras.config.floatx())
        arrays.append(array)
    counts = {int(array.shape[0]) if len(array.shape) else None for array in arrays}
    if None in counts:
        raise invalid_value(
            "x", "arrays with a first (instances) axis", [a.shape for a in arrays]
        )
    if len(counts) != 1:
        raise invalid_value(
            "x",
            "the same number of instances in every input array",
            [tuple(a.shape) for a in arrays],
        )
    n_instances = counts.pop()
    if n_instances < 1:
        raise invalid_value("x", "at least one instance", tuple(arrays[0].shape))
    return arrays, structure, n_instances


def _ensure_built(model: keras.Model, leaves: list, structure: Any) -> None:
    if model.built and (
        not isinstance(model, keras.Sequential) or (model.layers and _has_inputs(model))
    ):
        return
    # As `model.predict` would: build the weights on one instance.
    model(keras.tree.pack_sequence_as(structure, [leaf[:1] for leaf in leaves]))


def _has_inputs(model: keras.Model) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _default_rows(model: keras.Model, n_instances: int) -> int:
    values = _graph.activation_size(model)
    if not values:
        return min(n_instances, _DEFAULT_ROWS)
    rows = _CHUNK_BYTES // (4 * values)
    return int(max(1, min(n_instances, rows, _MAX_ROWS)))


class _Accumulator:
    """Collects the chunks of one output into the final arrays."""

    def __init__(self, state: dict, n_instances: int, n_samples: int) -> None:
        mean = state["mean"]
        self.n_samples = n_samples
        self.out_shape = (n_instances, *mean.shape[1:])
        output_dtype = state["dtype"].dtype
        if not np.issubdtype(output_dtype, np.floating):
            output_dtype = np.float64
        # At least float32: float16 outputs would lose the small stds.
        self.dtype = np.result_type(output_dtype, np.float32)
        self.mean = np.empty(self.out_shape, self.dtype)
        self.std = np.empty(self.out_shape, self.dtype)
        self.entropy = np.empty((n_instances, *state["entropy"].shape[1:]), "float64")
        self.samples = (
            np.empty((n_samples, *self.out_shape), state["samples"].dtype)
            if "samples" in state
            else None
        )
        self.low, self.high, self.deviation = np.inf, -np.inf, 0.0
        self.tolerance = 1e-2 if np.finfo(output_dtype).bits <= 16 else 1e-3

    def add(self, state: dict, start: int, stop: int) -> None:
        self.mean[start:stop] = state["mean"]
        self.std[start:stop] = np.sqrt(np.maximum(state["m2"], 0.0) / self.n_samples)
        self.entropy[start:stop] = state["entropy"] / self.n_samples
        self.low = min(self.low, float(state["low"]))
        self.high = max(self.high, float(state["high"]))
        self.deviation = max(self.deviation, float(state["deviation"]))
        if self.samples is not None:
            self.samples[:, start:stop] = state["samples"]

    def prediction(self) -> MCPrediction:
        kind = detect_output_kind(
            self.low, self.high, self.deviation, self.out_shape, self.tolerance
        )
        expected = None
        if kind == CATEGORICAL:
            expected = self.entropy.astype(self.dtype)
        elif kind == BINARY:
            entropy = self.entropy
            if len(self.out_shape) >= 2 and self.out_shape[-1] == 1:
                entropy = entropy.reshape(self.out_shape[:-1])
            expected = entropy.astype(self.dtype)
        else:
            assert kind == REGRESSION
        return MCPrediction(
            mean=self.mean,
            std=self.std,
            n_samples=self.n_samples,
            output_kind=kind,
            expected_entropy=expected,
            samples=self.samples,
        )
