"""Argument checks that raise errors in Keras's style: the one set of rules.

Every message names the argument, says what was expected and shows what was
received, e.g.::

    Invalid value for argument `lower`: expected 0 <= lower <= upper.
    Received: lower=0.5, upper=0.2

What each kind of argument accepts (the rules every public callable follows):

- **real numbers** (`check_float`, `check_positive`): Python `int`/`float`,
  NumPy integer and floating scalars and 0-d integer or floating arrays;
  finite; by default also finite in float32 (rates are float32 tensors).
  `bool`, strings, complex numbers and arrays with elements are refused.
- **integers** (`check_int`): Python `int`, NumPy integer scalars and 0-d
  integer arrays; `bool` and floats (even `3.0`) are refused.
- **bools** (`check_bool`): `True`/`False`, `np.bool_` and 0-d bool arrays;
  `0`/`1` are refused (they hide bugs).
- **choices** (`check_choice`): one of the listed values (strings compare
  exactly; `np.str_` is a `str`).
- **seeds** (`check_seed`): `None` or an integer in `[0, 2**31 - 1]`, the
  range every backend's random state holds (PyTorch's is int32).
- **sequences** (`check_sequence`): a list, tuple or 1-D NumPy array (not a
  string, mapping or set); each element is checked with the element rule and
  named `name[i]`.
- **names** (`check_name`): `None` or a string.

Use these helpers in every public constructor and function instead of
``assert`` (which disappears under ``python -O``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def _received(name: str, value: Any, **others: Any) -> str:
    parts = [f"{name}={value!r}"] + [f"{key}={val!r}" for key, val in others.items()]
    return "Received: " + ", ".join(parts)


def invalid_value(name: str, expected: str, value: Any, **others: Any) -> ValueError:
    """Builds the ``ValueError`` for argument ``name`` (the caller raises it)."""
    return ValueError(
        f"Invalid value for argument `{name}`: expected {expected}. "
        f"{_received(name, value, **others)}"
    )


def invalid_values(names: Sequence[str], expected: str, **received: Any) -> ValueError:
    """Builds the ``ValueError`` for arguments that are invalid together.

    Every argument is named, e.g. "Invalid values for arguments `lower` and
    `upper`: expected lower <= upper. Received: lower=0.5, upper=0.2".
    """
    quoted = [f"`{name}`" for name in names]
    listed = ", ".join(quoted[:-1]) + f" and {quoted[-1]}"
    shown = ", ".join(f"{key}={value!r}" for key, value in received.items())
    return ValueError(
        f"Invalid values for arguments {listed}: expected {expected}. Received: {shown}"
    )


def invalid_type(name: str, expected: str, value: Any) -> TypeError:
    """Builds the ``TypeError`` for argument ``name`` (the caller raises it)."""
    return TypeError(
        f"Invalid type for argument `{name}`: expected {expected}. "
        f"Received: {name}={value!r} of type {type(value).__name__}"
    )


FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINIEST = 1.401298464324817e-45  # the smallest positive float32
SEED_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _zero_d_kind(value: Any) -> str | None:
    """The NumPy dtype kind of a 0-d array or tensor (``None`` if not 0-d)."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return None
    try:
        if tuple(shape) != ():
            return None
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).kind
    except (TypeError, ValueError, AttributeError):
        name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
        try:
            return np.dtype(name).kind
        except TypeError:
            return None


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number by the rules above (NaN and inf too)."""
    # bool is an int subclass, but `rate=True` is a bug, not a number.
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    return _zero_d_kind(value) in ("i", "u", "f")


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer by the rules above (not a bool)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return _zero_d_kind(value) in ("i", "u")


def is_bool(value: Any) -> bool:
    """Whether ``value`` is a bool by the rules above (bool, np.bool_, 0-d)."""
    return isinstance(value, (bool, np.bool_)) or _zero_d_kind(value) == "b"


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    expected: str | None = None,
    float32: bool = True,
) -> float:
    """Checks that ``value`` is a finite real number within the given bounds.

    With ``float32=True`` (the default) the value must also be finite in
    float32, the dtype of every rate and factor our tensors hold.

    Returns:
        ``value`` as a Python ``float``.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is NaN/infinite or outside the bounds.
    """
    if not is_real(value):
        raise invalid_type(name, "a real number", value)
    try:
        result = float(value)
    except OverflowError:  # a Python int beyond float64's range
        result = math.inf if value > 0 else -math.inf
    description = expected or _interval(name, low, high, low_inclusive, high_inclusive)
    if not math.isfinite(result):
        raise invalid_value(name, description or "a finite number", value)
    if float32 and abs(result) > FLOAT32_MAX:
        raise invalid_value(
            name, f"{description} and finite in float32 (|{name}| <= 3.4e38)", value
        )
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
    if not is_integer(value):
        raise invalid_type(name, expected or "an integer", value)
    result = int(value)
    description = expected or _interval(name, low, high, True, True)
    if low is None and high is None:
        description = "an integer"
    # Every integer argument must fit the int64 the frameworks hold it in.
    low = INT64_MIN if low is None else low
    high = INT64_MAX if high is None else high
    if high == INT64_MAX and expected is None:
        description += " (within int64)"
    if (low is not None and result < low) or (high is not None and result > high):
        raise invalid_value(name, description, value)
    return result


def check_bool(name: str, value: Any) -> bool:
    """Checks that ``value`` is a bool (``0``/``1`` are rejected: they hide bugs).

    Returns:
        ``value`` as a Python ``bool`` (``np.bool_`` and 0-d bool arrays too).
    """
    if not is_bool(value):
        raise invalid_type(name, "a bool (True or False)", value)
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Checks that ``value`` is one of ``choices``."""
    options = tuple(choices)
    if not any(_same_choice(value, option) for option in options):
        listed = ", ".join(repr(option) for option in options)
        raise invalid_value(name, f"one of {listed}", value)
    return str(value) if isinstance(value, str) else value


def _same_choice(value: Any, option: Any) -> bool:
    # `True == 1` and `np.array([...]) == "x"` must not count as a match.
    if option is None or isinstance(option, bool):
        return value is option
    if isinstance(option, str):
        return isinstance(value, str) and value == option
    if isinstance(value, (bool, np.bool_, str)) or not is_real(value):
        return False
    return bool(value == option)


def element_of_type(types: Any, description: str) -> Callable[[str, Any], Any]:
    """An element check for `check_sequence`: an instance of ``types``."""

    def check(name: str, value: Any) -> Any:
        if not isinstance(value, types):
            raise invalid_type(name, description, value)
        return value

    return check


def check_seed(name: str, value: Any) -> int | None:
    """Checks a seed argument: ``None`` or an integer in ``[0, 2**31 - 1]``."""
    if value is None:
        return None
    return check_int(
        name,
        value,
        low=0,
        high=SEED_MAX,
        expected=f"None or an integer in [0, {SEED_MAX}] (2**31 - 1)",
    )


def check_dtype(name: str, value: Any) -> Any:
    """Checks a Keras `dtype` argument (a dtype or policy name, or a policy).

    Returns:
        ``value`` unchanged.
    """
    if value is None:
        return None
    import keras

    if not isinstance(value, (str, keras.DTypePolicy)) and not hasattr(value, "name"):
        raise invalid_type(name, "None, a dtype name or a keras.DTypePolicy", value)
    try:
        keras.dtype_policies.get(value)
    except (TypeError, ValueError) as error:
        raise invalid_value(
            name, "None, a dtype name or a keras.DTypePolicy", value
        ) from error
    return value


def check_rates_finite(names: Sequence[str], *rates: float, **received: Any) -> None:
    """Refuses arguments whose derived rates are not positive, finite float32s.

    A schedule's extreme rates (`max_learning_rate / div_factor`, say) must
    be finite and non-zero in float32, the dtype the optimizer applies them
    in: an inf or 0 rate would silently break or freeze training.
    """
    for rate in rates:
        if not (math.isfinite(rate) and 0 < rate <= FLOAT32_MAX):
            raise invalid_values(
                names,
                "rates that are positive and finite in float32 (the schedule "
                f"would reach {rate!r})",
                **received,
            )
        if rate < FLOAT32_TINIEST / 2:
            raise invalid_values(
                names,
                "rates that stay positive in float32 (the schedule would reach "
                f"{rate!r}, which float32 rounds to 0)",
                **received,
            )


def check_name(name: str, value: Any) -> str | None:
    """Checks a ``name`` argument: ``None`` or a string."""
    if value is not None and not isinstance(value, str):
        raise invalid_type(name, "a string or None", value)
    return value


def check_sequence(
    name: str,
    value: Any,
    check_element: Callable[[str, Any], Any],
    *,
    min_length: int = 0,
    expected: str = "a list or tuple",
) -> tuple:
    """Checks a list, tuple or 1-D NumPy array and each of its elements.

    Args:
        name: the argument's name; elements are named ``name[i]``.
        value: what the user passed.
        check_element: ``check_element(f"{name}[{i}]", element)`` validates and
            returns one element.
        min_length: the fewest elements accepted.
        expected: how the message describes the expected value.

    Returns:
        The checked elements, as a tuple.
    """
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise invalid_value(name, f"{expected} (a 1-D array)", value)
        value = list(value)
    elif not isinstance(value, (list, tuple)):
        raise invalid_type(name, expected, value)
    if len(value) < min_length:
        raise invalid_value(
            name, f"{expected} of at least {min_length} element(s)", value
        )
    return tuple(check_element(f"{name}[{i}]", item) for i, item in enumerate(value))


def _interval(
    name: str,
    low: float | None,
    high: float | None,
    low_inclusive: bool,
    high_inclusive: bool,
) -> str:
    left = "<=" if low_inclusive else "<"
    right = "<=" if high_inclusive else "<"
    named = {INT64_MIN: "-2**63", INT64_MAX: "2**63 - 1", SEED_MAX: "2**31 - 1"}
    low = named.get(low, low)  # type: ignore[arg-type]
    high = named.get(high, high)  # type: ignore[arg-type]
    if low is not None and high is not None:
        return f"{low} {left} {name} {right} {high}"
    if low is not None:
        return f"{name} {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"{name} {right} {high}"
    return "a finite number"


def as_numeric_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array of numbers (bool included); TypeError if not."""
    if not isinstance(value, np.ndarray) and hasattr(value, "dtype"):
        import keras

        if keras.ops.is_tensor(value):  # a backend tensor (also one with a grad)
            value = keras.ops.convert_to_numpy(value)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise invalid_type(name, "an array of numbers", value) from error
    if array.dtype.kind == "b":
        return array
    if array.dtype.kind not in "iuf":
        raise invalid_type(
            name, "an array of numbers (int, float or bool)", _short(array)
        )
    return array


def _short(value: Any) -> Any:
    """A readable stand-in for a large array in a message."""
    if isinstance(value, np.ndarray) and value.size > 6:
        return f"<array of shape {value.shape} and dtype {value.dtype}>"
    return value


def check_tensor_input(name: str, value: Any) -> Any:
    """Checks a call-time input: a tensor, or an array/nested list of numbers.

    Returns:
        ``value`` (tensors unchanged, the others as NumPy arrays).
    """
    if value is None or isinstance(value, (str, bytes, dict, set, frozenset)):
        raise invalid_type(name, "a tensor or an array of numbers", value)
    if isinstance(value, (list, tuple, np.ndarray, numbers.Number)):
        return as_numeric_array(name, value)
    return value


def check_float_inputs(layer: Any, inputs: Any, why: str) -> None:
    """Checks a layer's `inputs`: a floating-point tensor (``why``: the reason)."""
    dtype = getattr(inputs, "dtype", None)
    if dtype is None:
        raise invalid_type(
            "inputs", f"a floating-point tensor for layer {layer.name!r}", inputs
        )
    import keras

    dtype = keras.backend.standardize_dtype(dtype)
    if "float" not in dtype:
        raise TypeError(
            f"Invalid dtype for argument `inputs` of layer {layer.name!r}: "
            f"expected floating-point inputs ({why}: cast the inputs to a float "
            f"dtype first). Received: inputs of dtype {dtype}"
        )


def check_examples(name: str, value: Any, *, rows: int | None = None) -> int | None:
    """Checks in-memory examples (`x` or `y` of a fit-like function).

    NumPy arrays, tensors and nested lists of numbers must be numeric,
    non-empty and finite (a NaN or inf in the data would make every loss NaN
    and every answer meaningless); a dict, list or tuple of arrays (a model
    with several inputs or outputs) is checked array by array. Datasets,
    generators and `keras.utils.PyDataset`s are not looked into.

    Args:
        name: the argument's name.
        value: the examples.
        rows: the number of examples the arrays must have (that of `x`, for
            `y`); `None` for any.

    Returns:
        The number of examples, or `None` when `value` is not in memory.
    """
    if isinstance(value, (str, bytes, set, frozenset, numbers.Number)) or (
        value is None
    ):
        raise invalid_type(name, "an array, a tensor or a dataset", value)
    if isinstance(value, dict):
        counts = [
            check_examples(f"{name}[{key!r}]", item, rows=rows)
            for key, item in value.items()
        ]
        return counts[0] if counts else None
    if (
        isinstance(value, (list, tuple))
        and value
        and all(hasattr(item, "shape") for item in value)
    ):
        counts = [
            check_examples(f"{name}[{i}]", item, rows=rows)
            for i, item in enumerate(value)
        ]
        return counts[0]
    if not (isinstance(value, (list, tuple)) or hasattr(value, "shape")):
        if not any(hasattr(value, attr) for attr in ("__iter__", "__getitem__")):
            raise invalid_type(name, "an array, a tensor or a dataset", value)
        return None  # a dataset, generator or PyDataset
    array = as_numeric_array(name, value)
    if array.ndim == 0 or array.shape[0] == 0:
        raise invalid_value(name, "at least one example", _short(array))
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise invalid_value(name, "finite values (no NaN or inf)", _short(array))
    if rows is not None and array.shape[0] != rows:
        raise invalid_value(
            name, f"one row per example of x ({rows} rows)", _short(array)
        )
    return int(array.shape[0])
