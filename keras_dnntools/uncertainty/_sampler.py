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
        self._sample: Any = 0

    def start_sample(self, sample: Any) -> None:
        """Called before each sample (an int or a scalar tensor)."""
        self._occurrence = 0
        self._sample = sample

    def keep_mask(self, layer: Any, x: Any, rate: float) -> Any:
        """A boolean keep mask broadcastable to `x`, P(keep) = 1 - rate."""
        stream = self._occurrence
        self._occurrence += 1
        return self._backend.keep_mask(
            self._rng, mask_shape(layer, x), rate, stream, self._sample, x
        )

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


def _moments(p: Any, kind: str | None) -> dict:
    """The per-sample terms summed over samples, for this output kind."""
    terms = {}
    if kind in (None, CATEGORICAL, BINARY):
        categorical = (
            kind == CATEGORICAL
            if kind is not None
            else is_categorical_shape(tuple(p.shape))
        )
        terms["entropy"] = _sample_entropy(p, categorical)
    if kind is None:
        categorical = is_categorical_shape(tuple(p.shape))
        terms["low"] = ops.min(p)
        terms["high"] = ops.max(p)
        terms["deviation"] = _sum_deviation(p, categorical)
    if kind == HETEROSCEDASTIC:
        width = p.shape[-1] if len(p.shape) >= 2 else None
        if width is None or width % 2:
            raise ValueError(
                "Invalid value for argument `output_kind`: expected outputs whose "
                "last axis holds D means then D log-variances (an even size) for "
                f"'heteroscedastic'. Received: output_kind='heteroscedastic' for "
                f"outputs of shape {tuple(p.shape)}"
            )
        half = width // 2
        terms["aleatoric"] = ops.exp(p[..., half:])
    return terms


def start_state(output: Any, kind: str | None) -> dict:
    p = ops.cast(output, state_dtype(output))
    return {"mean": p, "m2": ops.zeros_like(p), **_moments(p, kind)}


def update_state(state: dict, output: Any, index: Any, kind: str | None) -> dict:
    p = ops.cast(output, state["mean"].dtype)
    count = ops.cast(index + 1, p.dtype)
    delta = p - state["mean"]
    mean = state["mean"] + delta / count
    new = {"mean": mean, "m2": state["m2"] + delta * (p - mean)}
    for name, value in _moments(p, kind).items():
        if name == "low":
            new[name] = ops.minimum(state[name], value)
        elif name in ("high", "deviation"):
            new[name] = ops.maximum(state[name], value)
        else:
            new[name] = state[name] + value
    return new


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
    keep_samples: bool,
    kind: str | None,
    backend: Any,
) -> Any:
    """The function ``(inputs, key) -> (states, samples)`` for one chunk.

    `states` holds one dict of running sums per model output; `samples` is
    None, or one ``(T, rows, ...)`` tensor per output.
    """

    def run_chunk(inputs, key):
        sampler = DropoutSampler(backend, backend.make_rng(key))
        _CURRENT.sampler = sampler
        try:
            cache: dict = {}
            interpreter.run(inputs, _graph.DETERMINISTIC, cache, sampler)
            sampler.start_sample(0)
            outputs = interpreter.run(inputs, _graph.SAMPLING, cache, sampler)
            interpreter.output_dtypes = [
                keras.backend.standardize_dtype(o.dtype) for o in outputs
            ]
            states = [start_state(output, kind) for output in outputs]

            def step(index, states):
                sampler.start_sample(index)
                outputs = interpreter.run(inputs, _graph.SAMPLING, cache, sampler)
                new = [
                    update_state(s, o, index, kind)
                    for s, o in zip(states, outputs, strict=True)
                ]
                return new, outputs

            return backend.run_loop(n_samples, step, states, outputs, keep_samples)
        finally:
            _CURRENT.sampler = None

    return backend.compile_chunk(run_chunk, interpreter)
