"""The portable Monte Carlo loop: eager Python, masks from `keras.random`.

Used on Keras backends without a dedicated loop; also the reference the
others follow (see `_backends.py` for the interface).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def chunk_key(seed: int) -> int:
    return seed


def make_rng(key: int) -> Any:
    return keras.random.SeedGenerator(key % (2**31 - 1))


def keep_mask(
    rng: Any, shape: list, rate: float, stream: int, sample: Any, like: Any
) -> Any:
    del stream, sample, like  # `rng` is a stateful generator: every draw is fresh.
    return ops.greater_equal(keras.random.uniform(tuple(shape), seed=rng), rate)


def run_loop(
    steps: int,
    per_step: int,
    step: Any,
    states: list,
    blocks: list,
    keep_samples: bool,
) -> tuple:
    del per_step
    kept = [[block] for block in blocks] if keep_samples else None
    for index in range(steps):
        states, blocks = step(index, states)
        if kept is not None:
            for samples, block in zip(kept, blocks, strict=True):
                samples.append(block)
    stacked = None
    if kept is not None:
        stacked = [ops.concatenate(samples, axis=0) for samples in kept]
    return states, stacked


def compile_chunk(run_chunk: Any, interpreter: Any) -> Any:
    del interpreter
    return run_chunk


def replicas(chunk: Any, model: Any) -> None:
    """One device: the chunks run in turn (see `_backends.py`)."""
    del chunk, model
