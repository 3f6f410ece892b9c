"""Argument checks that raise errors in Keras's style.

Every message names the argument, says what was expected and shows what was
received, e.g.::

    Invalid value for argument `lower`: expected 0 <= lower <= upper.
    Received: lower=0.5, upper=0.2

Use these helpers in every public constructor and function instead of
``assert`` (which disappears under ``python -O``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def _received(name: str, value: Any, **others: Any) -> str:
    parts = [f"{name}={value!r}"] + [f"{key}={val!r}" for key, val in others.items()]
    return "Received: " + ", ".join(parts)


def invalid_value(name: str, expected: str, value: Any, **others: Any) -> ValueError:
    """Builds the ``ValueError`` for argument ``name`` (the caller raises it)."""
    return ValueError(
        f"Invalid value for argument `{name}`: expected {expected}. "
        f"{_received(name, value, **others)}"
    )


def invalid_type(name: str, expected: str, value: Any) -> TypeError:
    """Builds the ``TypeError`` for argument ``name`` (the caller raises it)."""
    return TypeError(
        f"Invalid type for argument `{name}`: expected {expected}. "
        f"Received: {name}={value!r} of type {type(value).__name__}"
    )


def _is_real(value: Any) -> bool:
    # bool is an int subclass, but `rate=True` is a bug, not a number.
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    # 0-d NumPy / tensor-like scalars.
    return (
        hasattr(value, "shape")
        and tuple(value.shape) == ()
        and hasattr(value, "__float__")
    )


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    expected: str | None = None,
) -> float:
    """Checks that ``value`` is a finite real number within the given bounds.

    Returns:
        ``value`` as a Python ``float``.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is NaN/infinite or outside the bounds.
    """
    if not _is_real(value):
        raise invalid_type(name, "a real number", value)
    result = float(value)
    description = expected or _interval(name, low, high, low_inclusive, high_inclusive)
    if not math.isfinite(result):
        raise invalid_value(name, description or "a finite number", value)
    if low is not None and (result < low or (not low_inclusive and result == low)):
        raise invalid_value(name, description, value)
    if high is not None and (result > high or (not high_inclusive and result == high)):
        raise invalid_value(name, description, value)
    return result


def check_positive(name: str, value: Any) -> float:
    """Checks that ``value`` is a finite real number ``> 0`` (rates, factors, ...).

    Returns:
        ``value`` as a Python ``float``.
    """
    return check_float(name, value, low=0.0, low_inclusive=False)


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    expected: str | None = None,
) -> int:
    """Checks that ``value`` is an integer (not a bool) within ``[low, high]``.

    Returns:
        ``value`` as a Python ``int``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid_type(name, expected or "an integer", value)
    result = int(value)
    description = expected or _interval(name, low, high, True, True)
    if (low is not None and result < low) or (high is not None and result > high):
        raise invalid_value(name, description, value)
    return result


def check_bool(name: str, value: Any) -> bool:
    """Checks that ``value`` is a bool (``0``/``1`` are rejected: they hide bugs)."""
    if not isinstance(value, bool):
        raise invalid_type(name, "a bool (True or False)", value)
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Checks that ``value`` is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise invalid_value(name, f"one of {listed}", value)
    return value


def check_seed(name: str, value: Any) -> int | None:
    """Checks a seed argument: ``None`` or a non-negative integer."""
    if value is None:
        return None
    return check_int(name, value, low=0, expected="None or a non-negative integer")


def _interval(
    name: str,
    low: float | None,
    high: float | None,
    low_inclusive: bool,
    high_inclusive: bool,
) -> str:
    left = "<=" if low_inclusive else "<"
    right = "<=" if high_inclusive else "<"
    if low is not None and high is not None:
        return f"{low} {left} {name} {right} {high}"
    if low is not None:
        return f"{name} {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"{name} {right} {high}"
    return "a finite number"
