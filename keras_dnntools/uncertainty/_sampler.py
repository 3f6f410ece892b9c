"""The compiled Monte Carlo loop behind `mc_predict`, and its cheap masks.

One call of the compiled function handles one chunk of instances and all T
samples:

1. the deterministic phase computes, once, every layer that does not depend
   on dropout (the whole trunk when dropout sits before the head);
2. sample 0 runs in the function body and creates, for every dropout layer, a
   *mask pool*: one draw of ``rows + T - 1`` random masks of the layer's noise
   shape;
3. samples 1 .. T-1 run in a `tf.while_loop`; sample ``t`` gives instance ``i``
   the pool's mask ``i + t``;
4. running sums (Welford's mean and squared deviations, the entropy of each
   sample, the range of the outputs) are accumulated in float64, so that the
   ``(T, N, ...)`` array of samples is never built unless it was asked for.

Why a pool: drawing the random bits costs more than the matrix products of a
dense network on a CPU (measured: a plain compiled loop drawing fresh masks
runs at 1.9x the cost of T deterministic passes). With the pool the bits are
drawn once per chunk and each sample only slices them. Each instance still
gets T distinct, independent masks (rows ``i .. i+T-1`` of the pool), and the
masks of the instances of one sample are distinct rows too, so every
per-instance quantity (mean, std, entropies, the samples of one instance) has
exactly the distribution it has with fresh masks. What is shared is a mask
between instance ``i`` at sample ``t`` and instance ``i+1`` at sample ``t-1``;
no per-instance statistic can see that. Masks whose noise shape has 1 on the
batch axis (one mask for the whole batch) are drawn fresh at every sample.

The random bits are Philox (`tf.random.stateless_uniform` with
``alg="philox"``), keyed by the seed, the dropout layer's position and the
chunk: the same seed and the same `batch_size` give the same masks.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_dnntools.uncertainty import _graph

# Keras's AlphaDropout constants (SELU's alpha and scale).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_INT32_MIN = -(2**31)
_INT63 = (1 << 63) - 1


def _mix(value: int) -> int:
    """SplitMix64 finalizer: a well-spread 63-bit constant per integer."""
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (value ^ (value >> 31)) & _INT63


def seed_key(seed: int) -> int:
    """The 63-bit Philox key used for `seed`."""
    return _mix(seed)


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


def _noise_shape(layer: Any, x: tf.Tensor) -> tuple[bool, list]:
    """Returns (one mask per instance?, the mask shape without the batch axis)."""
    rank = x.shape.rank
    dynamic = tf.shape(x)
    dims = [x.shape[i] if x.shape[i] is not None else dynamic[i] for i in range(rank)]
    shared = _spatial_axes(layer, rank)
    if shared is not None:
        return True, [1 if i in shared else dims[i] for i in range(1, rank)]
    noise_shape = getattr(layer, "noise_shape", None)
    if noise_shape is None:
        return True, dims[1:]
    noise_shape = list(noise_shape)
    if len(noise_shape) != rank:
        raise ValueError(
            f"Dropout layer {layer.name!r} has noise_shape={tuple(noise_shape)}, "
            f"which does not match the rank of its input ({rank})."
        )
    rest = [
        dims[i] if noise_shape[i] is None else noise_shape[i] for i in range(1, rank)
    ]
    return noise_shape[0] != 1, rest


def _threshold(rate: float) -> int:
    """int32 threshold: uniform int32 bits >= threshold with probability 1 - rate."""
    return min(_INT32_MIN + round(rate * 2**32), 2**31 - 1)


class DropoutSampler:
    """Draws and applies the dropout masks of one chunk (see the module doc).

    Args:
        n_samples: T.
        key: int64 scalar tensor, the Philox key of this call.
        chunk: int64 scalar tensor, the index of the chunk.
    """

    def __init__(self, n_samples: int, key: tf.Tensor, chunk: tf.Tensor) -> None:
        self.n_samples = n_samples
        self._key = key
        self._chunk = chunk
        self._pools: list = []
        self._occurrence = 0
        self._sample = None
        self._first = True

    def start_sample(self, sample: Any, *, first: bool) -> None:
        """Called before each sample; `first` creates the mask pools."""
        self._occurrence = 0
        self._sample = tf.cast(sample, tf.int64)
        self._first = first

    def _seed(self, salt: int, counter: tf.Tensor) -> tf.Tensor:
        key = tf.bitwise.bitwise_xor(self._key, tf.constant(salt, tf.int64))
        return tf.stack([key, counter])

    def _bits(self, shape: list, salt: int, counter: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform(
            tf.stack([tf.cast(d, tf.int32) for d in shape]),
            self._seed(salt, counter),
            minval=None,
            maxval=None,
            dtype=tf.int32,
            alg="philox",
        )

    def keep_mask(self, layer: Any, x: tf.Tensor, rate: float) -> tf.Tensor:
        """A boolean keep mask for `x` (broadcastable), P(keep) = 1 - rate."""
        index = self._occurrence
        self._occurrence += 1
        per_instance, rest = _noise_shape(layer, x)
        threshold = _threshold(rate)
        if not per_instance:
            counter = self._chunk * self.n_samples + self._sample
            return self._bits([1, *rest], _mix(2 * index + 1), counter) >= threshold
        rows = tf.shape(x)[0]
        if self._first:
            pool_rows = rows + (self.n_samples - 1)
            pool = self._bits([pool_rows, *rest], _mix(2 * index), self._chunk)
            self._pools.append(pool >= threshold)
        elif index >= len(self._pools):
            raise RuntimeError(
                "The model ran a different number of dropout layers in two samples."
            )
        start = tf.cast(self._sample, tf.int32)
        pool = self._pools[index]
        keep = pool[start : start + rows]
        # Same static shape in every sample (a batch of 1 must not broadcast).
        keep.set_shape([x.shape[0], *pool.shape[1:]])
        return keep

    def __call__(self, layer: Any, x: tf.Tensor) -> tf.Tensor:
        rate = float(layer.rate)
        x = tf.convert_to_tensor(x)
        if rate <= 0.0:
            return tf.identity(x)
        zero = tf.constant(0, x.dtype)
        if isinstance(layer, keras.layers.AlphaDropout):
            alpha_p = -_SELU_ALPHA * _SELU_SCALE
            if rate >= 1.0:
                return tf.fill(tf.shape(x), tf.constant(math.nan, x.dtype))
            a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
            b = -a * alpha_p * rate
            keep = self.keep_mask(layer, x, rate)
            dropped = tf.constant(a * alpha_p + b, x.dtype)
            return tf.where(keep, x * a + b, dropped)
        if rate >= 1.0:
            return tf.zeros_like(x)
        keep = self.keep_mask(layer, x, rate)
        return tf.where(keep, x * (1.0 / (1.0 - rate)), zero)


# -- accumulators -----------------------------------------------------------------


def _xlogx(p: tf.Tensor) -> tf.Tensor:
    positive = p > 0
    return tf.where(positive, p * tf.math.log(tf.where(positive, p, 1.0)), 0.0)


def is_categorical_shape(shape: tuple) -> bool:
    """Whether outputs of this shape carry a class axis (last axis, size >= 2)."""
    return len(shape) >= 2 and (shape[-1] is None or shape[-1] >= 2)


def _sample_entropy(p: tf.Tensor, categorical: bool) -> tf.Tensor:
    if categorical:
        return -tf.reduce_sum(_xlogx(p), axis=-1)
    return -(_xlogx(p) + _xlogx(1.0 - p))


def _start(output: tf.Tensor, n_samples: int, keep_samples: bool) -> dict:
    p = tf.cast(output, tf.float64)
    categorical = is_categorical_shape(tuple(output.shape))
    state = {
        "mean": p,
        "m2": tf.zeros_like(p),
        "entropy": _sample_entropy(p, categorical),
        "low": tf.reduce_min(p),
        "high": tf.reduce_max(p),
        "deviation": _sum_deviation(p, categorical),
    }
    if keep_samples:
        samples = tf.TensorArray(
            output.dtype, size=n_samples, element_shape=output.shape
        )
        state["samples"] = samples.write(0, output)
    return state


def _sum_deviation(p: tf.Tensor, categorical: bool) -> tf.Tensor:
    if not categorical:
        return tf.constant(0.0, tf.float64)
    return tf.reduce_max(tf.abs(tf.reduce_sum(p, axis=-1) - 1.0))


def _update(state: dict, output: tf.Tensor, index: tf.Tensor) -> dict:
    p = tf.cast(output, tf.float64)
    categorical = is_categorical_shape(tuple(output.shape))
    count = tf.cast(index + 1, tf.float64)
    delta = p - state["mean"]
    mean = state["mean"] + delta / count
    new = {
        "mean": mean,
        "m2": state["m2"] + delta * (p - mean),
        "entropy": state["entropy"] + _sample_entropy(p, categorical),
        "low": tf.minimum(state["low"], tf.reduce_min(p)),
        "high": tf.maximum(state["high"], tf.reduce_max(p)),
        "deviation": tf.maximum(state["deviation"], _sum_deviation(p, categorical)),
    }
    if "samples" in state:
        new["samples"] = state["samples"].write(index, output)
    return new


def _finish(state: dict, output: tf.Tensor) -> dict:
    result = dict(state)
    if "samples" in result:
        result["samples"] = result["samples"].stack()
    result["dtype"] = tf.zeros([0], output.dtype)  # tells NumPy the output dtype
    return result


_CURRENT = threading.local()


def sample_with_current(layer: Any, inputs: Any) -> Any:
    """Samples `layer` with the sampler of the chunk function being traced.

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
    interpreter: _graph.Interpreter, n_samples: int, keep_samples: bool
) -> Any:
    """The compiled function ``(inputs, key, chunk) -> [state per output]``."""

    def run_chunk(inputs, key, chunk):
        sampler = DropoutSampler(n_samples, key, chunk)
        _CURRENT.sampler = sampler
        try:
            cache: dict = {}
            interpreter.run(inputs, _graph.DETERMINISTIC, cache, sampler)
            sampler.start_sample(0, first=True)
            outputs = interpreter.run(inputs, _graph.SAMPLING, cache, sampler)
            states = [_start(output, n_samples, keep_samples) for output in outputs]

            def body(index, states):
                sampler.start_sample(index, first=False)
                outputs = interpreter.run(inputs, _graph.SAMPLING, cache, sampler)
                new = [
                    _update(s, o, index) for s, o in zip(states, outputs, strict=True)
                ]
                return index + 1, new

            _, states = tf.while_loop(
                lambda index, _: index < n_samples,
                body,
                (tf.constant(1, tf.int32), states),
                parallel_iterations=1,
            )
        finally:
            _CURRENT.sampler = None
        return [
            _finish(state, output)
            for state, output in zip(states, outputs, strict=True)
        ]

    return tf.function(run_chunk, reduce_retracing=True, autograph=False)


def as_numpy(state: dict) -> dict:
    """Converts one chunk's result to NumPy."""
    return {name: np.asarray(value) for name, value in state.items()}
