"""The schedules' maths: pure functions of the step, written with `keras.ops`.

Each function takes the step (a Python number, a NumPy scalar or a tensor, such
as `optimizer.iterations`) and returns a float32 scalar tensor. The constants
(rates, phase ends, ...) are Python floats computed once by the schedule
classes, so these functions trace into a handful of scalar ops and run inside
the compiled train step at every optimizer step.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops
from keras.backend import standardize_dtype

_DTYPE = "float32"


def _as_step(step: Any) -> Any:
    return ops.cast(step, _DTYPE)


def anneal_cos(start: float, end: float, fraction: Any) -> Any:
    """Cosine annealing from `start` (fraction 0) to `end` (fraction 1)."""
    return end + (start - end) / 2.0 * (ops.cos(math.pi * fraction) + 1.0)


def anneal_linear(start: float, end: float, fraction: Any) -> Any:
    """Linear annealing from `start` (fraction 0) to `end` (fraction 1).

    Written as a weighted mean rather than PyTorch's `(end - start) * fraction
    + start`: the same value in exact arithmetic, but in float32 it hits `end`
    exactly at fraction 1 instead of losing its small digits to cancellation.
    """
    return start * (1.0 - fraction) + end * fraction


ANNEALERS = {"cos": anneal_cos, "linear": anneal_linear}


def one_cycle_phase_ends(
    total_steps: int, pct_start: float, three_phase: bool
) -> tuple[float, ...]:
    """The last step of each phase, exactly as `torch.optim.lr_scheduler.OneCycleLR`.

    PyTorch ends the warm-up at step `pct_start * total_steps - 1` (and, with
    three phases, the way back at `2 * pct_start * total_steps - 2`); the last
    phase ends at `total_steps - 1`.
    """
    warmup_end = float(pct_start * total_steps) - 1
    if three_phase:
        return (warmup_end, float(2 * pct_start * total_steps) - 2, total_steps - 1.0)
    return (warmup_end, total_steps - 1.0)


def interpolate_phases(
    step: Any,
    ends: Sequence[float],
    levels: Sequence[tuple[float, float]],
    anneal_strategy: str,
) -> Any:
    """Piecewise annealing: phase `i` goes from `levels[i][0]` to `levels[i][1]`.

    Phase `i` covers the steps up to and including `ends[i]` (after the end of
    phase `i - 1`); the step is held at the last end, so the value past the end
    stays at `levels[-1][1]`.
    """
    anneal = ANNEALERS[anneal_strategy]
    step = ops.minimum(_as_step(step), ends[-1])
    value = None
    starts = (0.0, *ends[:-1])
    for start_step, end_step, (start, end) in reversed(
        list(zip(starts, ends, levels, strict=True))
    ):
        fraction = (step - start_step) / (end_step - start_step)
        phase_value = anneal(start, end, fraction)
        value = (
            phase_value
            if value is None
            else ops.where(ops.less_equal(step, end_step), phase_value, value)
        )
    return ops.cast(value, _DTYPE)


def one_cycle_learning_rate(
    step: Any,
    *,
    max_learning_rate: float,
    total_steps: int,
    pct_start: float,
    anneal_strategy: str,
    div_factor: float,
    final_div_factor: float,
    three_phase: bool,
) -> Any:
    """The 1cycle learning rate at `step` (PyTorch's `OneCycleLR`, step for step)."""
    initial = max_learning_rate / div_factor
    final = initial / final_div_factor
    ends = one_cycle_phase_ends(total_steps, pct_start, three_phase)
    if three_phase:
        levels = [
            (initial, max_learning_rate),
            (max_learning_rate, initial),
            (initial, final),
        ]
    else:
        levels = [(initial, max_learning_rate), (max_learning_rate, final)]
    return interpolate_phases(step, ends, levels, anneal_strategy)


def one_cycle_momentum(
    step: Any,
    *,
    total_steps: int,
    base_momentum: float,
    max_momentum: float,
    pct_start: float,
    anneal_strategy: str,
    three_phase: bool,
) -> Any:
    """The 1cycle momentum at `step` (`OneCycleLR(cycle_momentum=True)`)."""
    ends = one_cycle_phase_ends(total_steps, pct_start, three_phase)
    if three_phase:
        levels = [
            (max_momentum, base_momentum),
            (base_momentum, max_momentum),
            (max_momentum, max_momentum),
        ]
    else:
        levels = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
    return interpolate_phases(step, ends, levels, anneal_strategy)


def power_decay(
    step: Any, *, initial_learning_rate: float, decay_steps: float, power: float
) -> Any:
    """`initial_learning_rate / (1 + step / decay_steps) ** power`."""
    return initial_learning_rate / ops.power(1.0 + _as_step(step) / decay_steps, power)


def exponential_decay(
    step: Any, *, initial_learning_rate: float, decay_steps: float, decay_rate: float
) -> Any:
    """`initial_learning_rate * decay_rate ** (step / decay_steps)`."""
    return initial_learning_rate * ops.power(decay_rate, _as_step(step) / decay_steps)


def piecewise_constant(
    step: Any, *, boundaries: Sequence[float], values: Sequence[float]
) -> Any:
    """`values[i]` while `boundaries[i - 1] <= step < boundaries[i]`.

    Exact for integer steps however large: a Python or NumPy number is looked
    up in Python, an integer tensor (`optimizer.iterations`) is compared in
    its own integer dtype (in float32, steps past 2**24 would round and switch
    a step early). Only float tensors are compared in float32.
    """
    if isinstance(step, (numbers.Real, np.number)) and not isinstance(step, bool):
        index = bisect.bisect_right(boundaries, step)
        return ops.convert_to_tensor(values[index], _DTYPE)
    step = ops.convert_to_tensor(step)
    dtype = standardize_dtype(step.dtype)
    if "int" in dtype:
        largest = int(np.iinfo(dtype).max)
        # For an integer step, `step < b` is `step < ceil(b)`.
        thresholds = [min(math.ceil(boundary), largest + 1) for boundary in boundaries]
    else:
        largest = None
        step = ops.cast(step, _DTYPE)
        thresholds = [float(boundary) for boundary in boundaries]
    value = ops.convert_to_tensor(values[-1], _DTYPE)
    for threshold, below in reversed(list(zip(thresholds, values[:-1], strict=True))):
        if largest is not None and threshold > largest:
            value = ops.convert_to_tensor(below, _DTYPE)  # never reached
            continue
        value = ops.where(ops.less(step, threshold), below, value)
    return value
