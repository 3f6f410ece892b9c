"""Fast random primitives for the stochastic layers (dropout masks, RReLU slopes).

Every function takes a ``seed``: a ``keras.random.SeedGenerator`` (a fresh draw
on every call, works in compiled functions; what our layers pass), an ``int``
(stateless: the same draw on every call, as in ``keras.random``) or ``None``
(Keras's global generator).

Why not simply ``keras.random``: on the TensorFlow backend, ``keras.random``
calls ``tf.random.stateless_*`` with the default ``alg="auto_select"``. Inside
an XLA-compiled function (``jit_compile=True``) on CPU, XLA lowers that to its
Philox bit generator *and fuses the seed -> (key, counter) scrambling into the
per-element loop*, so that scalar hash is recomputed for every element drawn
(whether it happens depends on XLA's fusion decisions). Measured on 2 CPU
cores (``benchmarks/bench_layers.py``): ``keras.layers.Dropout`` on a
``(256, 1024)`` tensor took 135 ms under XLA against 2.0 ms without it (64x),
and a Dense-ReLU-Dropout-Dense training step 152 ms against 17 ms; with the
masks drawn here, 1.2 ms and 21.6 ms under XLA (19.8 ms without any dropout).
Naming the algorithm avoids the problem: ``"threefry"`` inside XLA (fastest
there: XLA's own Philox expansion is ~5x slower than its ThreeFry; TensorFlow
has no non-XLA ThreeFry kernel) and ``"philox"`` outside it (TensorFlow's
native kernel, what ``auto_select`` picks there anyway). See
``benchmarks/bench_layers.py`` for the figures.

Dropout masks are drawn as raw ``uint32`` random bits compared with an integer
threshold instead of float uniforms compared with ``rate``: cheaper (no
int -> float conversion) and exact to 2**-32 whatever the compute dtype (a
``bfloat16`` uniform has only 128 levels in [0, 1), which biases ``rate``).

The TensorFlow-specific code is isolated here; on the other backends every
function falls back to ``keras.random``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_dnntools._distribution import replica_context

_TWO_32 = 2**32
# Replica r of a MirroredStrategy draws from seed + r * _REPLICA_STRIDE (the
# seed's first word; the generator counts in the second).
_REPLICA_STRIDE = 0x2545F491


def _is_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def _in_xla_context() -> bool:
    """Whether we are tracing a function that XLA compiles (``jit_compile=True``).

    TensorFlow marks the graph of a ``tf.function(jit_compile=True)`` (and of
    any function traced inside it) with an XLA control-flow context. There is
    no public API for this; if the private module moves, we use Philox
    everywhere, which is still correct (only slower under XLA).
    """
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - depends on TensorFlow's layout
        return False
    return bool(
        control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())
    )


def _tf_seed_and_algorithm(seed: Any) -> tuple[Any, str]:
    """An int32 ``[2]`` seed tensor and the fastest algorithm for this context."""
    import tensorflow as tf

    if isinstance(seed, keras.random.SeedGenerator):
        state = seed.next()
    else:  # an int: the stateless [seed, 0], as keras.random does.
        state = tf.constant([seed, 0], dtype="int64")
    context = replica_context()
    if context is not None:
        # Under a MirroredStrategy every replica reads the same generator
        # state: without its id, each replica would draw the same masks for
        # its share of the global batch (as keras.layers.Dropout does).
        replica = tf.cast(context.replica_id_in_sync_group, state.dtype)
        state = state + tf.stack([replica * _REPLICA_STRIDE, tf.zeros_like(replica)])
    # As keras.random does: the state is int64, stateless kernels want int32.
    state = tf.cast(tf.math.floormod(state, tf.int32.max - 1), "int32")
    algorithm = "threefry" if _in_xla_context() else "philox"
    return state, algorithm


def _fast_path(seed: Any) -> bool:
    return _is_tensorflow() and seed is not None


def uniform(
    shape: Any,
    seed: Any,
    *,
    minval: float = 0.0,
    maxval: float = 1.0,
    dtype: str = "float32",
) -> Any:
    """Uniform floats in ``[minval, maxval)`` of ``shape`` and ``dtype``.

    Example:

    >>> from keras_dnntools import _random
    >>> generator = keras.random.SeedGenerator(1)
    >>> values = _random.uniform((2, 3), generator, minval=0.1, maxval=0.3)
    >>> bool(keras.ops.all((values >= 0.1) & (values < 0.3)))
    True
    """
    if not _fast_path(seed):
        return keras.random.uniform(
            shape, minval=minval, maxval=maxval, dtype=dtype, seed=seed
        )
    import tensorflow as tf

    state, algorithm = _tf_seed_and_algorithm(seed)
    return tf.random.stateless_uniform(
        shape,
        seed=state,
        minval=tf.cast(minval, dtype),
        maxval=tf.cast(maxval, dtype),
        dtype=dtype,
        alg=algorithm,
    )


def uniform_16bit(shape: Any, seed: Any, *, minval: float, maxval: float) -> Any:
    """float32 uniforms in ``(minval, maxval)`` from 16 random bits each.

    Half the random bits of :func:`uniform`, so about half its cost, which is
    most of what RReLU adds to a training step. The values are the midpoints of
    65,536 equal cells of ``[minval, maxval]``: the mean is exact and the
    resolution, ``(maxval - minval) / 65536``, is far below anything a slope
    needs. (TensorFlow fast path; other backends get :func:`uniform`.)

    Example:

    >>> from keras_dnntools import _random
    >>> generator = keras.random.SeedGenerator(1)
    >>> values = _random.uniform_16bit((3, 5), generator, minval=0.1, maxval=0.3)
    >>> tuple(values.shape), bool(keras.ops.all((values > 0.1) & (values < 0.3)))
    ((3, 5), True)
    """
    if not _fast_path(seed):
        return uniform(shape, seed, minval=minval, maxval=maxval)
    import tensorflow as tf

    state, algorithm = _tf_seed_and_algorithm(seed)
    shape = tf.convert_to_tensor(shape, dtype="int32")
    size = tf.reduce_prod(shape)
    bits = tf.random.stateless_uniform(
        tf.reshape((size + 1) // 2, [1]),
        seed=state,
        minval=None,
        maxval=None,
        dtype="uint32",
        alg=algorithm,
    )
    # Each 32-bit draw gives two 16-bit ones; bitcast is free (no copy).
    halves = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:size]
    cell = (maxval - minval) / 65536.0
    values = tf.cast(tf.reshape(halves, shape), "float32")
    return values * cell + (minval + cell / 2.0)


def keep_threshold(rate: float) -> int:
    """The ``uint32`` threshold ``t`` with ``P(bits < t) = 1 - rate`` (to 2**-32)."""
    return min(max(round((1.0 - rate) * _TWO_32), 0), _TWO_32 - 1)


def keep_mask(shape: Any, rate: float, seed: Any) -> Any:
    """A boolean mask of ``shape``, each element ``True`` with probability ``1 - rate``.

    ``rate`` is a Python float in ``[0, 1)``.

    Example:

    >>> from keras_dnntools import _random
    >>> mask = _random.keep_mask((1000,), 0.25, keras.random.SeedGenerator(0))
    >>> 0.70 < float(keras.ops.mean(keras.ops.cast(mask, "float32"))) < 0.80
    True
    """
    if not _fast_path(seed):
        return ops.greater_equal(keras.random.uniform(shape, seed=seed), rate)
    import tensorflow as tf

    state, algorithm = _tf_seed_and_algorithm(seed)
    bits = tf.random.stateless_uniform(
        shape, seed=state, minval=None, maxval=None, dtype="uint32", alg=algorithm
    )
    return tf.less(bits, tf.constant(keep_threshold(rate), dtype="uint32"))


def noise_shape_of(inputs: Any, noise_shape: Any) -> Any:
    """The concrete mask shape: ``noise_shape`` with ``None`` taken from ``inputs``."""
    if noise_shape is None:
        return ops.shape(inputs)
    input_shape = ops.shape(inputs)
    return tuple(
        input_shape[index] if size is None else size
        for index, size in enumerate(noise_shape)
    )


def dropout(inputs: Any, rate: float, seed: Any, noise_shape: Any = None) -> Any:
    """Inverted dropout: zeroes elements with probability ``rate``, scales the rest.

    Same semantics as ``keras.random.dropout`` (kept elements are multiplied by
    ``1 / (1 - rate)``; ``noise_shape`` entries of ``None`` follow ``inputs``),
    fast under XLA too.

    Example:

    >>> from keras_dnntools import _random
    >>> x = keras.ops.ones((4, 5))
    >>> y = _random.dropout(x, 0.5, keras.random.SeedGenerator(0))
    >>> sorted(set(np.unique(keras.ops.convert_to_numpy(y)).tolist()) - {0.0, 2.0})
    []
    """
    if rate == 0:
        return inputs
    mask = keep_mask(noise_shape_of(inputs, noise_shape), rate, seed)
    scaled = ops.multiply(inputs, ops.cast(1.0 / (1.0 - rate), inputs.dtype))
    return ops.where(mask, scaled, ops.zeros((), dtype=inputs.dtype))
