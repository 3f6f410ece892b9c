"""The Monte Carlo loop on PyTorch: eager, without autograd, `torch` masks.

Masks come from one `torch.Generator` per chunk (`torch.rand`: 24-bit
uniforms, the keep probability within 2**-24 of ``1 - rate``). The loop is
plain Python: each sample runs only the layers after the first dropout layer.
"""

from __future__ import annotations

from typing import Any

import torch

from keras_dnntools.uncertainty import _backend_portable


def chunk_key(seed: int) -> int:
    return seed


class _Rng:
    """A torch generator per device, seeded from the chunk's key."""

    def __init__(self, key: int) -> None:
        self.key = key
        self.generators: dict = {}

    def get(self, device: Any) -> torch.Generator:
        if device not in self.generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.key)
            self.generators[device] = generator
        return self.generators[device]


def make_rng(key: int) -> _Rng:
    return _Rng(key)


def keep_mask(
    rng: _Rng, shape: list, rate: float, stream: int, sample: Any, like: Any
) -> Any:
    del stream, sample  # the generator is stateful: every draw is fresh.
    device = like.device
    sizes = [int(size) for size in shape]
    uniforms = torch.rand(sizes, generator=rng.get(device), device=device)
    return uniforms >= rate


run_loop = _backend_portable.run_loop
replicas = _backend_portable.replicas


def compile_chunk(run_chunk: Any, interpreter: Any) -> Any:
    del interpreter

    def no_grad_chunk(inputs: Any, key: Any) -> Any:
        with torch.no_grad():
            return run_chunk(inputs, key)

    return no_grad_chunk
