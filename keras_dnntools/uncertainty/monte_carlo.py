"""`mc_predict`: exact, fast, BatchNorm-safe Monte Carlo dropout prediction."""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np

from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_bool,
    check_choice,
    check_int,
    check_seed,
    invalid_type,
    invalid_value,
)
from keras_dnntools.uncertainty import _backends, _graph, _processes, _sampler
from keras_dnntools.uncertainty.prediction import (
    BINARY,
    CATEGORICAL,
    HETEROSCEDASTIC,
    OUTPUT_KINDS,
    REGRESSION,
    MCPrediction,
    detect_output_kind,
)

# Memory for one chunk's activations (the accumulators are small next to
# them); the default `batch_size` is derived from it.
_CHUNK_BYTES = 128 * 2**20
_DEFAULT_ROWS = 1024  # when the model's layer shapes are unknown
_MAX_ROWS = 16384
# Process p of a multi-process JAX run draws its chunks from the stream
# `chunk_seed(seed, _PROCESS_STREAMS + p)`: far from any chunk index.
_PROCESS_STREAMS = 2**40


@public("uncertainty")
def mc_predict(
    model: keras.Model,
    x: Any,
    n_samples: int = 100,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
    return_samples: bool = False,
    output_kind: str | None = None,
    verbose: bool | int = False,
) -> MCPrediction | Any:
    """Monte Carlo dropout prediction: T stochastic passes, summarized.

    Runs `model` on `x` `n_samples` times with its dropout layers active and
    every other layer in inference mode, and returns the mean, the standard
    deviation and the uncertainty measures of the outputs (Gal & Ghahramani,
    2016, "Dropout as a Bayesian Approximation").

    The samples are T independent stochastic passes: every sample draws fresh
    masks for every instance, so they have the joint distribution of the
    book's ``np.stack([model(X, training=True) for _ in range(T)])`` (any
    statistic across instances or samples included), except that only dropout
    is stochastic: BatchNormalization normalizes with its moving statistics
    and leaves them unchanged (in Keras 3, ``training=True`` makes it use
    batch statistics and overwrite them).

    Dropout layers are `keras.layers.Dropout`, `SpatialDropout1D/2D/3D` and
    `AlphaDropout` (switched on for the sampling only), their subclasses such as
    `kdt.layers.MCDropout`, at any depth of nested models. `GaussianDropout`,
    `GaussianNoise` and the dropout inside recurrent layers are not sampled:
    they run in inference mode like every other layer.

    It is fast on TensorFlow, JAX and PyTorch: everything that does not depend
    on dropout (a trunk in front of the first dropout layer) is computed once
    per instance; the T samples run in one compiled loop (`tf.function`,
    `jax.jit`; an eager loop without autograd on PyTorch) that draws each mask
    element from as few random bits as its rate needs (8 bits for rates that
    are multiples of 1/256, such as 0.5; 16 bits otherwise, which makes the
    keep probability exact to 2**-17). The compiled loop is kept for the next
    call on the same model. Memory stays bounded: the instances are processed
    in chunks of `batch_size`, and the ``(T, N, ...)`` samples are only built
    when `return_samples` is True.

    Args:
        model: a built Keras model (Sequential, functional, nested, or
            subclassed) holding at least one dropout layer.
        x: the inputs, as for `model.predict`: an array, or a list/dict of
            arrays for a model with several inputs.
        n_samples: T, the number of Monte Carlo samples (>= 1).
        batch_size: instances per chunk. Defaults to a size whose
            activations take about 128 MiB. Larger is faster, up to memory.
        seed: makes the result reproducible: the same seed and `batch_size`
            give identical results on one backend. When None, a seed is drawn
            from NumPy's global generator (so `keras.utils.set_random_seed`
            makes runs repeatable too).
        return_samples: also keep every sample, in `MCPrediction.samples`
            (shape ``(n_samples, n_instances, ...)``); needed by
            `MCPrediction.log_likelihood`.
        output_kind: what the outputs are: ``"categorical"`` (class
            probabilities on the last axis), ``"binary"`` (P(class 1)),
            ``"regression"``, or ``"heteroscedastic"`` (the last axis holds D
            means then D log-variances). None detects categorical, binary or
            regression from the values: say ``"regression"`` for a regression
            head whose outputs happen to lie in [0, 1].
        verbose: show a progress bar over the chunks of instances.

    Returns:
        An `MCPrediction` (for a model with several outputs, the same
        structure of `MCPrediction`s as the model's outputs).

    Raises:
        ValueError: when the model has no dropout layer; for a bad
            `n_samples`, `batch_size`, `seed` or `output_kind`; when `x` does
            not match the model's inputs (number of features, rank, a missing
            input name, strings, no instances, different numbers of
            instances); or for a ``"heteroscedastic"`` output whose last axis
            is odd.
        TypeError: when `model` is not a Keras model, `x` is not array-like,
            an argument has the wrong type (e.g. a float `n_samples`), or a
            dropout layer receives integer inputs.

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
    output_kind = check_choice("output_kind", output_kind, (None, *OUTPUT_KINDS))
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
    _check_against_inputs(model, x, leaves, structure)
    _ensure_built(model, leaves, structure)
    if seed is None:
        # NumPy's global generator, which keras.utils.set_random_seed seeds.
        seed = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002
    rows = batch_size or _default_rows(model, n_instances)

    backend = _backends.current()
    per_step = _sampler.samples_per_step(
        n_samples, min(rows, n_instances), _graph.activation_size(model)
    )
    interpreter, run_chunk = _compiled(
        model, n_samples, per_step, return_samples, output_kind, backend
    )
    # Several JAX processes: each samples its own block of the instances.
    shard = _processes.process_shard(n_instances)
    first, last = (0, n_instances) if shard is None else (shard.start, shard.stop)
    if shard is not None:
        seed = _sampler.chunk_seed(seed, _PROCESS_STREAMS + shard.index)
    # Several local replicas (MirroredStrategy, a JAX distribution over local
    # devices): each samples its own chunks, with the chunks' own keys.
    replicas = backend.replicas(run_chunk, model)
    if replicas is not None and batch_size is None:
        rows = max(1, min(rows, -(-(last - first) // replicas.count)))
    chunks = [
        (index, start, min(start + rows, last))
        for index, start in enumerate(range(first, last, rows))
    ]
    group = 1 if replicas is None else replicas.count
    progress = keras.utils.Progbar(last - first) if verbose else None
    results: list | None = None
    with _graph.patched_dropout(
        interpreter.opaque_dropout_layers, _sampler.sample_with_current
    ):
        for offset in range(0, len(chunks), group):
            batch = chunks[offset : offset + group]
            calls = [
                (
                    keras.tree.pack_sequence_as(
                        structure,
                        [
                            keras.ops.convert_to_tensor(leaf[start:stop])
                            for leaf in leaves
                        ],
                    ),
                    backend.chunk_key(_sampler.chunk_seed(seed, index)),
                )
                for index, start, stop in batch
            ]
            if replicas is None:
                outputs = [run_chunk(*call) for call in calls]
            else:
                outputs = replicas.run(calls)
            for (_, start, stop), (states, samples) in zip(batch, outputs, strict=True):
                if results is None:
                    results = [
                        _Accumulator(dtype, n_instances, n_samples, output_kind)
                        for dtype in interpreter.output_dtypes
                    ]
                for position, result in enumerate(results):
                    kept = None if samples is None else samples[position]
                    result.add(states[position], kept, start, stop)
                if progress is not None:
                    progress.update(stop - first)
    if shard is not None:
        for result in results:
            result.gather(shard)

    predictions = [result.prediction() for result in results]
    if len(predictions) == 1:
        return predictions[0]
    return keras.tree.pack_sequence_as(interpreter.output_structure, predictions)


# Compiled sampling functions, per model (weakly: they die with the model),
# so that repeated calls do not trace again.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAX_COMPILED_PER_MODEL = 8


def _compiled(
    model: keras.Model,
    n_samples: int,
    per_step: int,
    keep_samples: bool,
    output_kind: str | None,
    backend: Any,
) -> tuple:
    functions = _COMPILED.setdefault(model, {})
    key = (
        n_samples,
        per_step,
        keep_samples,
        output_kind,
        backend.__name__,
        _graph.fingerprint(model),
    )
    if key not in functions:
        if len(functions) >= _MAX_COMPILED_PER_MODEL:
            functions.clear()
        interpreter = _graph.Interpreter(model)
        functions[key] = (
            interpreter,
            _sampler.build_chunk_function(
                interpreter, n_samples, per_step, keep_samples, output_kind, backend
            ),
        )
    return functions[key]


def _is_dataset_or_generator(x: Any) -> bool:
    if hasattr(x, "__next__"):
        return True
    # tf.data.Dataset, torch DataLoader, grain...: iterables of batches.
    return hasattr(x, "element_spec") or type(x).__name__ in ("DataLoader", "Dataset")


def _standardize_x(x: Any) -> tuple[list, Any, int]:
    if _is_dataset_or_generator(x):
        raise invalid_type(
            "x", "an array, or a list/dict of arrays (not a dataset/generator)", x
        )
    structure = x
    leaves = keras.tree.flatten(x)
    if not leaves:
        raise invalid_value("x", "at least one input array", x)
    arrays = []
    for leaf in leaves:
        if keras.ops.is_tensor(leaf):
            leaf = keras.ops.convert_to_numpy(leaf)
        try:
            array = np.asarray(leaf)
        except (TypeError, ValueError) as error:
            raise invalid_type("x", "array-like inputs", leaf) from error
        if array.dtype.kind in "USO":
            raise invalid_value(
                "x",
                "numeric arrays (the model takes numbers; encode strings first, "
                "e.g. with keras.layers.StringLookup outside the model)",
                f"an array of dtype {array.dtype}",
            )
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise invalid_value(
                "x",
                "finite inputs (no NaN or inf)",
                f"an array with {np.sum(~np.isfinite(array))} non-finite values",
            )
        if array.dtype == np.float64:
            array = array.astype(keras.config.floatx())
        arrays.append(array)
    counts = {int(array.shape[0]) if array.ndim else None for array in arrays}
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


def _expected_inputs(model: keras.Model) -> Any:
    """The model's input KerasTensors in the user's structure, or None."""
    try:
        if _graph.is_sequential(model):
            inputs = model.inputs
            return inputs[0] if inputs and len(inputs) == 1 else None
        if _graph.is_functional(model):
            return model.input
    except (AttributeError, ValueError):
        pass  # not built yet: `_ensure_built` builds it from `x`
    return None


def _describe(expected: Any) -> str:
    def one(tensor: Any) -> str:
        return f"shape {tuple(tensor.shape)}"

    if isinstance(expected, dict):
        return "{" + ", ".join(f"{k!r}: {one(v)}" for k, v in expected.items()) + "}"
    if isinstance(expected, (list, tuple)):
        return "[" + ", ".join(one(v) for v in expected) + "]"
    return one(expected)


def _check_against_inputs(
    model: keras.Model, x: Any, leaves: list, structure: Any
) -> None:
    """Compares `x` with the model's inputs; a ValueError naming `x` if not."""
    expected = _expected_inputs(model)
    if expected is None:
        return
    what = f"inputs matching the model's: {_describe(expected)}"
    pairs: list = []
    if isinstance(expected, dict):
        if not isinstance(structure, dict):
            if len(expected) != 1:
                raise invalid_value("x", what, f"a {type(structure).__name__}")
            pairs = [(next(iter(expected.values())), leaves[0])]
        else:
            missing = [key for key in expected if key not in structure]
            if missing:
                raise invalid_value("x", what, f"a dict without the key(s) {missing}")
            by_key = dict(zip(sorted(structure), leaves, strict=True))
            pairs = [(tensor, by_key[key]) for key, tensor in expected.items()]
    else:
        tensors = list(expected) if isinstance(expected, (list, tuple)) else [expected]
        if isinstance(structure, dict):
            names = [getattr(t, "name", None) for t in tensors]
            missing = [name for name in names if name not in structure]
            if missing:
                raise invalid_value(
                    "x",
                    what + f" (input names {names})",
                    f"a dict without the key(s) {missing}",
                )
            by_key = dict(zip(sorted(structure), leaves, strict=True))
            pairs = [(t, by_key[t.name]) for t in tensors]
        else:
            if len(leaves) != len(tensors):
                raise invalid_value(
                    "x", what, f"{len(leaves)} input arrays for {len(tensors)} inputs"
                )
            pairs = list(zip(tensors, leaves, strict=True))
    for tensor, array in pairs:
        want = tuple(tensor.shape)
        got = tuple(array.shape)
        compatible = len(want) == len(got) and all(
            w is None or w == g for w, g in zip(want[1:], got[1:], strict=True)
        )
        if not compatible:
            raise invalid_value("x", what, f"an array of shape {got} (rank {len(got)})")


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

    def __init__(
        self, dtype: str, n_instances: int, n_samples: int, kind: str | None
    ) -> None:
        self.n_instances = n_instances
        self.n_samples = n_samples
        self.kind = kind
        output_dtype = np.dtype(dtype) if dtype != "bfloat16" else np.float32
        if not np.issubdtype(output_dtype, np.floating):
            output_dtype = np.dtype("float32")
        # At least float32: float16 outputs would lose the small stds.
        self.dtype = np.result_type(output_dtype, np.float32)
        self.tolerance = 1e-2 if np.finfo(output_dtype).bits <= 16 else 1e-3
        self.fields: dict = {}
        self.samples: list = []
        self.low, self.high, self.deviation = np.inf, -np.inf, 0.0

    def _store(self, name: str, values: np.ndarray, start: int, stop: int) -> None:
        if name not in self.fields:
            shape = (self.n_instances, *values.shape[1:])
            self.fields[name] = np.empty(shape, self.dtype)
        self.fields[name][start:stop] = values

    def add(self, state: dict, samples: Any, start: int, stop: int) -> None:
        state = {name: keras.ops.convert_to_numpy(v) for name, v in state.items()}
        t = self.n_samples
        self._store("mean", state["mean"], start, stop)
        self._store("variance", np.maximum(state["m2"], 0.0) / t, start, stop)
        if "entropy" in state:
            self._store("entropy", state["entropy"] / t, start, stop)
        if "aleatoric" in state:
            self._store("aleatoric", state["aleatoric"] / t, start, stop)
        if "low" in state:
            self.low = min(self.low, float(state["low"]))
            self.high = max(self.high, float(state["high"]))
            self.deviation = max(self.deviation, float(state["deviation"]))
        if samples is not None:
            self.samples.append(keras.ops.convert_to_numpy(samples))

    def gather(self, shard: Any) -> None:
        """Completes this process's block with every other process's blocks."""
        for name, values in self.fields.items():
            self.fields[name] = _processes.gather_rows(
                shard, values[shard.start : shard.stop]
            )
        if self.samples:
            local = np.concatenate(self.samples, axis=1)
            self.samples = [_processes.gather_rows(shard, local, axis=1)]
        if np.isfinite(self.low):
            self.low, self.high, self.deviation = _processes.gather_extremes(
                self.low, self.high, self.deviation
            )

    def prediction(self) -> MCPrediction:
        kind = self.kind
        mean = self.fields["mean"]
        if kind is None:
            kind = detect_output_kind(
                self.low, self.high, self.deviation, mean.shape, self.tolerance
            )
        samples = np.concatenate(self.samples, axis=1) if self.samples else None
        if kind == HETEROSCEDASTIC:
            half = mean.shape[-1] // 2
            return MCPrediction(
                mean=mean[..., :half],
                std=np.sqrt(self.fields["variance"][..., :half]),
                n_samples=self.n_samples,
                output_kind=kind,
                samples=samples,
                aleatoric_variance=self.fields["aleatoric"],
            )
        expected = None
        if kind == CATEGORICAL:
            expected = self.fields["entropy"]
        elif kind == BINARY:
            expected = self.fields["entropy"]
            if mean.ndim >= 2 and mean.shape[-1] == 1:
                expected = expected.reshape(mean.shape[:-1])
        else:
            assert kind == REGRESSION
        return MCPrediction(
            mean=mean,
            std=np.sqrt(self.fields["variance"]),
            n_samples=self.n_samples,
            output_kind=kind,
            expected_entropy=expected,
            samples=samples,
        )
