"""`mc_predict` over several JAX processes: each samples its own instances.

In a multi-process JAX run (`jax.distributed.initialize`, one Python process
per host or device group) every process calls `mc_predict` with the same `x`.
Process p samples only its own contiguous block of the instances (the blocks
of `np.array_split`), on its first local device, with no collective inside
the Monte Carlo loop; the per-instance results are then gathered, so that
every process returns the `MCPrediction` of all the instances. The masks of a
block are drawn from `(seed, p)`: a seed reproduces the result for a fixed
number of processes, and the samples are T independent passes as on one
process (the same joint distribution, not the same values).

With one process (TensorFlow, torch, or JAX without `jax.distributed`) none
of this runs: `process_shard` returns None.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class ProcessShard:
    """The instances `[start, stop)` that process `index` of `count` samples."""

    index: int
    count: int
    start: int
    stop: int
    boundaries: tuple  # every process's (start, stop), in process order


def process_shard(n_instances: int) -> ProcessShard | None:
    """This process's block of `n_instances`, or None when there is one process
    (or fewer instances than processes: every process then samples them all)."""
    if keras.backend.backend() != "jax":
        return None
    import jax

    count = jax.process_count()
    if count == 1 or n_instances < count:
        return None
    edges = np.linspace(0, n_instances, count + 1).astype(int)
    boundaries = tuple(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    index = jax.process_index()
    start, stop = boundaries[index]
    return ProcessShard(index, count, start, stop, boundaries)


def _all_gather(value: np.ndarray) -> np.ndarray:
    """`value` of every process, stacked on a new first axis (shapes must match)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=False))


def gather_rows(shard: ProcessShard, local: np.ndarray, axis: int = 0) -> np.ndarray:
    """Every process's `local` rows (along `axis`), concatenated in process order.

    Blocks differ by at most one row: each is padded to the longest for the
    collective, and the padding is dropped afterwards.
    """
    longest = max(stop - start for start, stop in shard.boundaries)
    padding = [(0, 0)] * local.ndim
    padding[axis] = (0, longest - local.shape[axis])
    gathered = _all_gather(np.pad(local, padding))
    blocks = [
        np.take(block, np.arange(stop - start), axis=axis)
        for block, (start, stop) in zip(gathered, shard.boundaries, strict=True)
    ]
    return np.concatenate(blocks, axis=axis)


def gather_extremes(low: float, high: float, deviation: float) -> tuple:
    """The smallest `low` and the largest `high` and `deviation` of all processes."""
    gathered = _all_gather(np.array([low, -high, -deviation], np.float64))
    smallest = gathered.min(axis=0)
    return float(smallest[0]), float(-smallest[1]), float(-smallest[2])
