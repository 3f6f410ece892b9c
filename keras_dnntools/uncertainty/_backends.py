"""Which Monte Carlo loop runs `mc_predict` on the current Keras backend.

Each backend module offers the same five functions:

* ``chunk_key(seed)``: the key of one chunk, from a 63-bit Python int;
* ``make_rng(key)``: the random state a chunk draws its masks from;
* ``keep_mask(rng, shape, rate, stream, sample, like)``: a fresh boolean mask
  (on the device of the tensor `like`),
  ``True`` with probability ``1 - rate``; `stream` numbers the dropout calls of
  one sample and `sample` the sample (together they make every mask of a
  chunk independent);
* ``run_loop(steps, per_step, step, states, blocks, keep_samples)``: the
  loop steps 0 .. steps-1 (``step(index, states) -> (states, blocks)``, each
  block ``(per_step, rows, ...)``) after the first `blocks`, and all the
  samples concatenated when asked;
* ``compile_chunk(run_chunk, interpreter)``: the compiled chunk function,
  called as ``f(inputs, key)``;
* ``replicas(chunk, model)``: None, or the model's local replicas (the
  replicas of a `tf.distribute.MirroredStrategy`, the local devices of a
  JAX `keras.distribution`): an object with ``count`` and ``run(calls)``,
  which runs up to ``count`` chunk calls ``(inputs, key)`` at once, one per
  replica, and returns their results in order.

The modules are imported lazily: under JAX or torch TensorFlow is never
imported.
"""

from __future__ import annotations

import importlib
from typing import Any

import keras

_MODULES = {
    "tensorflow": "keras_dnntools.uncertainty._backend_tensorflow",
    "jax": "keras_dnntools.uncertainty._backend_jax",
    "torch": "keras_dnntools.uncertainty._backend_torch",
}
_PORTABLE = "keras_dnntools.uncertainty._backend_portable"


def current() -> Any:
    """The loop module of `keras.backend.backend()` (portable when unknown)."""
    return importlib.import_module(_MODULES.get(keras.backend.backend(), _PORTABLE))
