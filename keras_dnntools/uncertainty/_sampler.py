"""The Monte Carlo loop behind `mc_predict`: portable maths, per-backend loop.

One call of the chunk function handles one chunk of instances and all T
samples:

1. the deterministic phase computes, once, every layer that does not depend
   on dropout (the whole trunk when dropout sits before the head);
2. sample 0 runs in the function body, samples 1 .. T-1 in a loop of the
   backend (`tf.while_loop` in a `tf.function`, `jax.lax.fori_loop` in a
   `jax.jit`, a Python loop under `torch.no_grad`; see `_backends.py`);
3. running sums (Welford's mean and squared deviations, the entropy of each
   sample, the range of the outputs) are kept in float32 (float64 for float64
   outputs), so that the ``(T, N, ...)`` array of samples is only built when
   it was asked for.

Every sample draws fresh masks for every instance: the samples are T
independent stochastic passes, exactly the joint distribution of the book's
``[model(X, training=True) for _ in range(T)]`` loop (only dropout random).
They are cheap because each mask element costs as few random bits as the
rate needs (see `mask_bits`) and the masks are drawn inside the compiled loop.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import keras
from keras import ops

from keras_dnntools import _keras_compat
from keras_dnntools.uncertainty import _graph

# Keras's AlphaDropout constants (SELU's alpha and scale).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_INT63 = (1 << 63) - 1

CATEGORICAL = "categorical"
BINARY = "binary"
REGRESSION = "regression"
HETEROSCEDASTIC = "heteroscedastic"


def mix(value: int) -> int:
    """SplitMix64 finalizer: a well-spread 63-bit constant per integer."""
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (value ^ (value >> 31)) & _INT63


def chunk_seed(seed: int, chunk: int) -> int:
    """The 63-bit seed of one chunk of instances."""
    return mix(mix(seed) ^ chunk)


def mask_bits(rate: float) -> int:
    """Random bits per mask element: 8, 16 or 32.

    8 when ``rate * 256`` is an integer (0.5, 0.25, 0.125...: exact); else 16
    for rates >= 1/256 (the keep probability is a multiple of 2**-16, within
    2**-17 of ``1 - rate``: 0.2 becomes 0.199997); else 32 (within 2**-33).
    Fewer bits are fewer random numbers to generate, the main cost of a mask.
    """
    if float(rate * 256).is_integer():
        return 8
    return 16 if rate >= 1 / 256 else 32


def keep_threshold(rate: float, bits: int) -> int:
    """``t`` with ``P(uniform bits < t) = 1 - rate`` to within 2**-(bits+1)."""
    return min(max(round((1.0 - rate) * 2**bits), 0), 2**bits - 1)


def _spatial_axes(layer: Any, rank: int) -> list[int] | None:
    """The axes a spatial dropout layer shares its mask over, else None."""
    spatial = {
        keras.layers.SpatialDropout1D: 1,
        keras.layers.SpatialDropout2D: 2,
        keras.layers.SpatialDropout3D: 3,
    }
    for cls, count in spatial.items():
        if isinstance(layer, cls):
            if count == 1 or getattr(layer, "data_format", None) != "channels_first":
                return list(range(1, 1 + count))
            return list(range(2, 2 + count))
    return None


def mask_shape(layer: Any, x: Any) -> list:
    """The full (broadcastable) shape of `layer`'s mask for input `x`."""
    dims = list(ops.shape(x))
    rank = len(dims)
    shared = _spatial_axes(layer, rank)
    if shared is not None:
        return [dims[0], *(1 if i in shared else dims[i] for i in range(1, rank))]
    noise_shape = getattr(layer, "noise_shape", None)
    if noise_shape is None:
        return dims
    noise_shape = list(noise_shape)
    if len(noise_shape) != rank:
        raise ValueError(
            f"Dropout layer {layer.name!r} has noise_shape={tuple(noise_shape)}, "
            f"which does not match the rank of its input ({rank})."
        )
    return [dims[i] if noise_shape[i] is None else noise_shape[i] for i in range(rank)]


def check_float_input(layer: Any, x: Any) -> None:
    """Dropout on integers would round its 1/(1-rate) scale: refuse it."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not (dtype.startswith("float") or dtype.startswith("bfloat")):
        raise TypeError(
            f"Dropout layer {layer.name!r} needs floating-point inputs: its scale "
            f"1 / (1 - rate) cannot be represented in {dtype} (cast the inputs "
            f"to a float dtype first). Received: inputs of dtype {dtype}"
        )


class DropoutSampler:
    """Draws fresh masks and applies the dropout layers for one chunk.

    Args:
        backend: the `_backends` module of the current Keras backend.
        rng: the backend's random state for this chunk (`backend.make_rng`).
    """

    def __init__(self, backend: Any, rng: Any) -> None:
        self._backend = backend
        self._rng = rng
        self._occurrence = 0
        self._block: Any = 0
        self._reps = 1

    def start_block(self, block: Any, reps: int) -> None:
        """Called before each block of `reps` samples (the batch holds `reps`
        copies of the chunk); `block` is an int or a scalar tensor."""
        self._occurrence = 0
        self._block = block
        self._reps = reps

    def keep_mask(self, layer: Any, x: Any, rate: float) -> Any:
        """A boolean keep mask broadcastable to `x`, P(keep) = 1 - rate."""
        stream = self._occurrence
        self._occurrence += 1
        shape = mask_shape(layer, x)
        batch_shared = isinstance(shape[0], int) and shape[0] == 1
        if not batch_shared or self._reps == 1:
            return self._backend.keep_mask(
                self._rng, shape, rate, stream, self._block, x
            )
        # One mask per sample, shared by the chunk's instances in that sample.
        per_sample = self._backend.keep_mask(
            self._rng, [self._reps, *shape[1:]], rate, stream, self._block, x
        )
        rows = ops.shape(x)[0] // self._reps
        return ops.repeat(per_sample, rows, axis=0)

    def __call__(self, layer: Any, x: Any) -> Any:
        x = ops.convert_to_tensor(x)
        check_float_input(layer, x)
        rate = float(layer.rate)
        if rate <= 0.0:
            return x
        dtype = x.dtype
        if isinstance(layer, keras.layers.AlphaDropout):
            if rate >= 1.0:
                return ops.full(ops.shape(x), math.nan, dtype=dtype)
            alpha_p = -_SELU_ALPHA * _SELU_SCALE
            a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
            b = -a * alpha_p * rate
            keep = self.keep_mask(layer, x, rate)
            kept = ops.add(ops.multiply(x, ops.cast(a, dtype)), ops.cast(b, dtype))
            return ops.where(keep, kept, ops.cast(a * alpha_p + b, dtype))
        if rate >= 1.0:
            return ops.zeros_like(x)
        keep = self.keep_mask(layer, x, rate)
        scaled = ops.multiply(x, ops.cast(1.0 / (1.0 - rate), dtype))
        return ops.where(keep, scaled, ops.zeros((), dtype=dtype))


# -- accumulators -----------------------------------------------------------------


def _xlogx(p: Any) -> Any:
    positive = ops.greater(p, 0)
    safe = ops.where(positive, p, ops.ones_like(p))
    return ops.where(positive, p * ops.log(safe), ops.zeros_like(p))


def is_categorical_shape(shape: tuple) -> bool:
    """Whether outputs of this shape carry a class axis (last axis, size >= 2)."""
    return len(shape) >= 2 and (shape[-1] is None or shape[-1] >= 2)


def _sample_entropy(p: Any, categorical: bool) -> Any:
    if categorical:
        return -ops.sum(_xlogx(p), axis=-1)
    return -(_xlogx(p) + _xlogx(1.0 - p))


def _sum_deviation(p: Any, categorical: bool) -> Any:
    if not categorical:
        return ops.zeros((), dtype=p.dtype)
    return ops.max(ops.abs(ops.sum(p, axis=-1) - 1.0))


def state_dtype(output: Any) -> str:
    """float64 for float64 outputs, else float32 (float16 would lose small stds)."""
    dtype = keras.backend.standardize_dtype(output.dtype)
    return "float64" if dtype == "float64" else "float32"


def _block_terms(p: Any, kind: str | None) -> dict:
    """The per-sample terms of a block ``(reps, rows, ...)``, summed over it."""
    terms = {}
    shape = tuple(p.shape[1:])
    categorical = kind == CATEGORICAL or (kind is None and is_categorical_shape(shape))
    if kind in (None, CATEGORICAL, BINARY):
        terms["entropy"] = ops.sum(_sample_entropy(p, categorical), axis=0)
    if kind is None:
        terms["low"] = ops.min(p)
        terms["high"] = ops.max(p)
        terms["deviation"] = _sum_deviation(p, categorical)
    if kind == HETEROSCEDASTIC:
        width = shape[-1] if len(shape) >= 2 else None
        if width is None or width % 2:
            raise ValueError(
                "Invalid value for argument `output_kind`: expected outputs whose "
                "last axis holds D means then D log-variances (an even size) for "
                f"'heteroscedastic'. Received: output_kind='heteroscedastic' for "
                f"outputs of shape {shape}"
            )
        terms["aleatoric"] = ops.sum(ops.exp(p[..., width // 2 :]), axis=0)
    return terms


def _block_moments(p: Any) -> tuple:
    mean = ops.mean(p, axis=0)
    return mean, ops.sum(ops.square(p - mean), axis=0)


def start_state(block: Any, kind: str | None) -> dict:
    """The running sums of the first block of samples, ``(reps, rows, ...)``."""
    p = ops.cast(block, state_dtype(block))
    mean, m2 = _block_moments(p)
    return {"mean": mean, "m2": m2, **_block_terms(p, kind)}


def merge_state(state: dict, block: Any, count: Any, kind: str | None) -> dict:
    """Adds a block of samples to the sums of `count` samples (Chan et al.)."""
    p = ops.cast(block, state["mean"].dtype)
    reps = p.shape[0]
    before = ops.cast(count, p.dtype)
    total = before + reps
    mean_b, m2_b = _block_moments(p)
    delta = mean_b - state["mean"]
    new = {
        "mean": state["mean"] + delta * (reps / total),
        "m2": state["m2"] + m2_b + ops.square(delta) * (before * reps / total),
    }
    for name, value in _block_terms(p, kind).items():
        if name == "low":
            new[name] = ops.minimum(state[name], value)
        elif name in ("high", "deviation"):
            new[name] = ops.maximum(state[name], value)
        else:
            new[name] = state[name] + value
    return new


def samples_per_step(n_samples: int, rows: int, values: int | None) -> int:
    """How many samples one loop step computes (the batch holds that many
    copies of the chunk): enough rows to keep the step's fixed costs small,
    within the chunk memory budget."""
    target = max(1, _ROWS_PER_STEP // max(rows, 1))
    if values:
        target = min(target, max(1, _STEP_BYTES // (4 * values * max(rows, 1))))
    return int(max(1, min(n_samples, target)))


_ROWS_PER_STEP = 4096
_STEP_BYTES = 128 * 2**20


def _tile(structure: Any, reps: int) -> Any:
    """`reps` copies of every batch-major tensor of `structure`, on axis 0."""
    if reps == 1:
        return structure

    def tile(value: Any) -> Any:
        if value is None or not hasattr(value, "shape") or len(value.shape) == 0:
            return value
        tiled = ops.tile(value, [reps] + [1] * (len(value.shape) - 1))
        mask = _keras_compat.get_keras_mask(value)
        if mask is not None:
            _keras_compat.set_keras_mask(tiled, _tile(mask, reps))
        return tiled

    return keras.tree.map_structure(tile, structure)


def _split(output: Any, reps: int) -> Any:
    """``(reps * rows, ...)`` -> ``(reps, rows, ...)``."""
    rest = [ops.shape(output)[i] for i in range(1, len(output.shape))]
    return ops.reshape(output, [reps, -1, *rest])


_CURRENT = threading.local()


def sample_with_current(layer: Any, inputs: Any) -> Any:
    """Samples `layer` with the sampler of the chunk function being run.

    The route of the dropout layers that `_graph.patched_dropout` patches.
    """
    sampler = getattr(_CURRENT, "sampler", None)
    if sampler is None:
        raise RuntimeError(
            f"Dropout layer {layer.name!r} is patched for Monte Carlo sampling "
            "and was called outside of mc_predict."
        )
    return sampler(layer, inputs)


def build_chunk_function(
    interpreter: _graph.Interpreter,
    n_samples: int,
    per_step: int,
    keep_samples: bool,
    kind: str | None,
    backend: Any,
) -> Any:
    """The function ``(inputs, key) -> (states, samples)`` for one chunk.

    `states` holds one dict of running sums per model output; `samples` is
    None, or one ``(T, rows, ...)`` tensor per output. The T samples run as a
    first block of ``T - steps * per_step`` samples then `steps` loop steps
    of `per_step` samples each.
    """
    steps = (n_samples - 1) // per_step
    first = n_samples - steps * per_step

    def run_chunk(inputs, key):
        sampler = DropoutSampler(backend, backend.make_rng(key))
        _CURRENT.sampler = sampler
        try:
            cache: dict = {}
            interpreter.run(inputs, _graph.DETERMINISTIC, cache, sampler)

            def block(index, reps, tiled_inputs, tiled_cache):
                sampler.start_block(index, reps)
                outputs = interpreter.run(
                    tiled_inputs, _graph.SAMPLING, tiled_cache, sampler
                )
                return [_split(output, reps) for output in outputs]

            blocks = block(0, first, _tile(inputs, first), _tile(cache, first))
            interpreter.output_dtypes = [
                keras.backend.standardize_dtype(b.dtype) for b in blocks
            ]
            states = [start_state(b, kind) for b in blocks]
            step_inputs, step_cache = _tile(inputs, per_step), _tile(cache, per_step)

            def step(index, states):
                blocks = block(index + 1, per_step, step_inputs, step_cache)
                count = first + index * per_step
                new = [
                    merge_state(s, b, count, kind)
                    for s, b in zip(states, blocks, strict=True)
                ]
                return new, blocks

            return backend.run_loop(steps, per_step, step, states, blocks, keep_samples)
        finally:
            _CURRENT.sampler = None

    return backend.compile_chunk(run_chunk, interpreter)
