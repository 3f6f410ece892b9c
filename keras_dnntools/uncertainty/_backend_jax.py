"""The Monte Carlo loop on JAX: one `jax.jit`, a `jax.lax.fori_loop`.

The weights enter the jitted function as arguments (through a
`keras.StatelessScope`), so a trained model is never run with stale weights
and a new call does not compile again. Masks are `jax.random.bits` of the
chunk's key folded with the dropout call and the sample: every mask is
independent of every other. Each mask element takes `mask_bits(rate)` bits
(JAX packs 4 or 2 of them into one 32-bit draw).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import keras

from keras_dnntools.uncertainty._sampler import keep_threshold, mask_bits

_UNSIGNED = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}


def chunk_key(seed: int) -> Any:
    return jax.random.key_data(jax.random.key(seed % (2**32)))


def make_rng(key: Any) -> Any:
    return jax.random.wrap_key_data(key)


def keep_mask(
    rng: Any, shape: list, rate: float, stream: int, sample: Any, like: Any
) -> Any:
    del like
    bits = mask_bits(rate)
    key = jax.random.fold_in(jax.random.fold_in(rng, stream), sample)
    values = jax.random.bits(key, tuple(int(s) for s in shape), _UNSIGNED[bits])
    return values < jnp.asarray(keep_threshold(rate, bits), _UNSIGNED[bits])


def run_loop(
    steps: int,
    per_step: int,
    step: Any,
    states: list,
    blocks: list,
    keep_samples: bool,
) -> tuple:
    first = blocks[0].shape[0]
    arrays = []
    if keep_samples:
        total = first + steps * per_step
        arrays = [
            jnp.zeros((total, *b.shape[1:]), b.dtype).at[:first].set(b) for b in blocks
        ]

    def body(index, carry):
        states, arrays = carry
        states, blocks = step(index, states)
        start = first + index * per_step
        # `arrays` is empty unless the samples are kept.
        arrays = [
            jax.lax.dynamic_update_slice(a, b, (start,) + (0,) * (b.ndim - 1))
            for a, b in zip(arrays, blocks, strict=False)
        ]
        return states, arrays

    if steps:
        states, arrays = jax.lax.fori_loop(0, steps, body, (states, arrays))
    return states, (arrays if keep_samples else None)


def _local(value: Any) -> Any:
    """`value` whole on one device of this process.

    Under a `keras.distribution` the weights are arrays laid out over several
    devices (of several processes). The Monte Carlo loop of a process runs on
    one device, on its own instances, with no collective: a replicated weight
    gives its local copy; a sharded one is gathered once per call.
    """
    if not isinstance(value, jax.Array) or len(value.sharding.device_set) == 1:
        return value
    if value.is_fully_replicated:
        return value.addressable_data(0)
    if value.is_fully_addressable:
        return jax.device_put(value, jax.local_devices()[0])
    from jax.experimental import multihost_utils

    return jnp.asarray(multihost_utils.process_allgather(value, tiled=True))


def compile_chunk(run_chunk: Any, interpreter: Any) -> _Chunk:
    def stateless_chunk(values, inputs, key):
        variables = interpreter.model.variables
        mapping = list(zip(variables, values, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return run_chunk(inputs, key)

    return _Chunk(jax.jit(stateless_chunk), interpreter)


class _Chunk:
    """The jitted chunk, called with the model's current weights."""

    def __init__(self, jitted: Any, interpreter: Any) -> None:
        self.jitted = jitted
        self.interpreter = interpreter

    def weights(self) -> list:
        return [_local(variable.value) for variable in self.interpreter.model.variables]

    def __call__(self, inputs: Any, key: Any) -> Any:
        return self.jitted(self.weights(), inputs, key)


def replicas(chunk: _Chunk, model: Any) -> _DeviceReplicas | None:
    """This process's devices under a `keras.distribution` (None for one)."""
    del model  # the distribution is global in Keras
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    mine = jax.process_index()
    devices = [
        device
        for device in distribution.device_mesh.devices.flatten().tolist()
        if device.process_index == mine
    ]
    if len(devices) < 2:
        return None
    return _DeviceReplicas(chunk, devices)


class _DeviceReplicas:
    """Runs one chunk per local device: a copy of the weights on each device,
    the chunk's inputs committed there, so that `jit` runs it there; JAX's
    asynchronous dispatch runs the devices concurrently."""

    def __init__(self, chunk: _Chunk, devices: list) -> None:
        self.count = len(devices)
        self._chunk = chunk
        weights = chunk.weights()
        self._placed = [(device, jax.device_put(weights, device)) for device in devices]

    def run(self, calls: list) -> list:
        return [
            self._chunk.jitted(
                weights,
                jax.device_put(inputs, device),
                jax.device_put(key, device),
            )
            for (inputs, key), (device, weights) in zip(
                calls, self._placed, strict=False
            )
        ]
