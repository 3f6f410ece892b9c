"""Piecewise constant scheduling: fixed rates between step boundaries."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_float,
    check_positive,
    check_rates_finite,
    check_sequence,
    invalid_value,
)
from keras_dnntools.schedules import _functional
from keras_dnntools.schedules._base import FunctionalSchedule


@public("schedules", serializable=True)
class PiecewiseConstantSchedule(FunctionalSchedule):
    """Piecewise constant scheduling: `values[i]` between two boundaries.

    The rate is `values[i]` while `boundaries[i - 1] <= t < boundaries[i]`
    (`values[0]` before the first boundary, `values[-1]` from the last one on):
    the new value starts *at* the boundary, as in the book's
    `piecewise_constant`. Note that
    `keras.optimizers.schedules.PiecewiseConstantDecay` switches one step
    later (it keeps `values[i]` while `t <= boundaries[i]`).

    Args:
        boundaries: strictly increasing steps (non-negative numbers).
        values: the rates, one more than `boundaries`, each > 0.
        name: the schedule's name (defaults to the class name).

    Call arguments:
        step: the optimizer step (an integer or a scalar tensor). Integer steps
            are compared exactly with the boundaries (also past 2**24, where
            float32 can no longer count steps).

    Returns:
        The learning rate at `step`, a float32 scalar tensor.

    Raises:
        ValueError: if `boundaries` are not strictly increasing, a value is not
            positive, or `len(values) != len(boundaries) + 1`.
        TypeError: if they are not lists of numbers.

    Example:

    >>> schedule = kdt.schedules.PiecewiseConstantSchedule(
    ...     boundaries=[100, 200], values=[0.1, 0.01, 0.001])
    >>> [round(float(schedule(t)), 6) for t in (0, 99, 100, 199, 200, 10_000)]
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    """

    def __init__(
        self,
        boundaries: Sequence[float],
        values: Sequence[float],
        name: str | None = None,
    ) -> None:
        super().__init__()
        boundaries = [
            int(b) if b.is_integer() else b
            for b in check_sequence(
                "boundaries",
                boundaries,
                lambda name, b: check_float(name, b, low=0.0, float32=False),
                expected="a list of steps",
            )
        ]
        values = list(
            check_sequence(
                "values",
                values,
                check_positive,
                min_length=1,
                expected="a list of rates",
            )
        )
        check_rates_finite(("values",), *values, values=values)
        if any(later <= earlier for earlier, later in itertools.pairwise(boundaries)):
            raise invalid_value("boundaries", "strictly increasing steps", boundaries)
        if len(values) != len(boundaries) + 1:
            raise invalid_value(
                "values",
                f"one more value than boundaries (len(values) == "
                f"len(boundaries) + 1 == {len(boundaries) + 1})",
                values,
                boundaries=boundaries,
            )
        self._set_arguments(name, boundaries=boundaries, values=values)

    def _value(self, step: Any) -> Any:
        return _functional.piecewise_constant(step, **self._arguments)
