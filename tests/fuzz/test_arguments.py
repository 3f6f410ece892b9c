"""Every argument of every public callable, against hostile and unusual values.

Hostile values (wrong types, None, NaN, inf, out-of-range and huge numbers,
NumPy scalars of the wrong kind, empty and mis-shaped arrays) must raise a
`ValueError`/`TypeError` naming the argument, within `TIME_BOUND_S`, leaving
the model and its optimizer unchanged. Unusual but valid values (NumPy scalars,
0-d arrays, tuples and arrays for lists) must be accepted and configure the
same object as the plain Python value.
"""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given

from keras_dnntools._registry import public_objects
from tests.fuzz._harness import (
    HOSTILE_SETTINGS,
    cases,
    check_accepted,
    check_refused,
    comparable,
    new_context,
    parameters,
)
from tests.fuzz._specs import SPECS, Context


class _NotBuilt:
    """Stands for a model or result at collection time (nothing is built)."""

    def __getattr__(self, name):
        return self

    def __iter__(self):
        return iter(())


_SENTINEL = _NotBuilt()


class _CollectionContext(Context):
    """Answers the plain values at collection time; models are not built."""

    model = monitor = report = prediction = _SENTINEL


def _valid_value(key, argument):
    valid = SPECS[key].valid(_CollectionContext())
    if argument in valid:
        return valid[argument]
    default = {p.name: p.default for p in parameters(key)}[argument]
    return None if default is inspect.Parameter.empty else default


def _unusual_cases():
    result = []
    for key, argument in cases():
        valid = _valid_value(key, argument)
        if isinstance(valid, _NotBuilt):
            continue
        values = SPECS[key].kinds[argument].unusual(valid)
        limit = SPECS[key].unusual_limit
        for index, value in enumerate(values[:limit]):
            result.append(
                pytest.param(key, argument, value, id=f"{key}-{argument}-{index}")
            )
    return result


@pytest.mark.parametrize("key, argument", cases())
def test_hostile_values_are_refused_naming_the_argument(key, argument):
    context = new_context()

    @HOSTILE_SETTINGS
    @given(value=SPECS[key].kinds[argument].hostile())
    def refused(value):
        check_refused(key, argument, value, context)

    refused()


@pytest.mark.parametrize("key, argument, value", _unusual_cases())
def test_unusual_valid_values_are_accepted(key, argument, value):
    context = new_context()
    reference = None
    if not SPECS[key].touches_model:
        result = public_objects()[key](**SPECS[key].valid(context))
        reference = comparable(result)
    check_accepted(key, argument, value, context, reference)
