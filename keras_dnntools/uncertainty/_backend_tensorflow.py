"""The Monte Carlo loop on TensorFlow: one `tf.function`, a `tf.while_loop`.

Masks are TensorFlow's stateless Philox bits, keyed by the chunk's seed, the
dropout call and the sample, so every mask is independent of every other and
the same seed gives the same masks. Each mask element takes `mask_bits(rate)`
bits (8 or 16 for the usual rates): one 32-bit draw is bitcast into 4 or 2
mask elements, which divides the random-number work by 4 or 2.
"""

from __future__ import annotations

import weakref
from typing import Any

import tensorflow as tf

from keras_dnntools.uncertainty._sampler import keep_threshold, mask_bits, mix

_UNSIGNED = {8: tf.uint8, 16: tf.uint16}


def chunk_key(seed: int) -> Any:
    return tf.constant(seed, tf.int64)


def make_rng(key: Any) -> Any:
    return key


def keep_mask(
    rng: Any, shape: list, rate: float, stream: int, sample: Any, like: Any
) -> Any:
    del like
    bits = mask_bits(rate)
    shape = tf.stack([tf.cast(size, tf.int32) for size in shape])
    size = tf.reduce_prod(shape)
    per_word = 32 // bits
    key = tf.bitwise.bitwise_xor(rng, tf.constant(mix(stream), tf.int64))
    seed = tf.stack([key, tf.cast(sample, tf.int64)])
    words = tf.random.stateless_uniform(
        tf.reshape((size + per_word - 1) // per_word, [1]),
        seed,
        minval=None,
        maxval=None,
        dtype=tf.uint32,
        alg="philox",
    )
    if bits < 32:
        words = tf.reshape(tf.bitcast(words, _UNSIGNED[bits]), [-1])[:size]
    threshold = tf.constant(keep_threshold(rate, bits), words.dtype)
    return tf.reshape(words < threshold, shape)


def run_loop(
    steps: int,
    per_step: int,
    step: Any,
    states: list,
    blocks: list,
    keep_samples: bool,
) -> tuple:
    del per_step
    arrays = []
    if keep_samples:
        arrays = [
            tf.TensorArray(b.dtype, size=steps + 1, infer_shape=False).write(0, b)
            for b in blocks
        ]
    if steps:

        def body(index, states, arrays):
            states, blocks = step(index, states)
            # `arrays` is empty unless the samples are kept.
            arrays = [
                a.write(index + 1, b) for a, b in zip(arrays, blocks, strict=False)
            ]
            return index + 1, states, arrays

        _, states, arrays = tf.while_loop(
            lambda index, *_: index < steps,
            body,
            (tf.constant(0, tf.int32), states, arrays),
            parallel_iterations=1,
        )
    samples = [a.concat() for a in arrays] if keep_samples else None
    return states, samples


def compile_chunk(run_chunk: Any, interpreter: Any) -> Any:
    del interpreter
    return tf.function(run_chunk, reduce_retracing=True, autograph=False)


# The distributed chunk function of each (chunk, strategy), traced once.
_DISTRIBUTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def replicas(chunk: Any, model: Any) -> _MirroredReplicas | None:
    """The replicas of the model's `MirroredStrategy` (None for one replica)."""
    strategy = getattr(model, "distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MirroredStrategy):
        return None
    if strategy.num_replicas_in_sync < 2:
        return None
    return _MirroredReplicas(strategy, chunk)


class _MirroredReplicas:
    """Runs one chunk per replica of a `MirroredStrategy`, in one graph.

    Inside `strategy.run` every replica reads its own copy of the weights and
    samples its own chunk on its own device; the replicas run concurrently.
    """

    def __init__(self, strategy: Any, chunk: Any) -> None:
        self.count = strategy.num_replicas_in_sync
        self._strategy = strategy
        self._chunk = chunk
        functions = _DISTRIBUTED.setdefault(chunk, {})
        if id(strategy) not in functions:

            def run_replicas(inputs, keys):
                return strategy.run(chunk, args=(inputs, keys))

            functions[id(strategy)] = (
                strategy,  # kept alive with its function: ids are not reused
                tf.function(run_replicas, reduce_retracing=True, autograph=False),
            )
        self._run = functions[id(strategy)][1]

    def run(self, calls: list) -> list:
        if len(calls) < self.count:  # the last few chunks: one after another
            return [self._chunk(inputs, key) for inputs, key in calls]
        strategy = self._strategy

        def per_replica(position):
            def value(context):
                return calls[context.replica_id_in_sync_group][position]

            return strategy.experimental_distribute_values_from_function(value)

        outputs = self._run(per_replica(0), per_replica(1))

        def replica(index):
            def local(value):
                if isinstance(value, tf.distribute.DistributedValues):
                    return strategy.experimental_local_results(value)[index]
                return value

            return tf.nest.map_structure(local, outputs)

        return [replica(index) for index in range(self.count)]
