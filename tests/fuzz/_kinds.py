"""Kinds of argument: what each must refuse (hypothesis strategies) and accept.

A kind describes one argument of one public callable by the rules of
`keras_dnntools/_validation.py`. `hostile()` draws values the argument must
refuse with a `ValueError`/`TypeError` naming it; `unusual(valid)` lists
equivalents of a valid value (NumPy scalars, 0-d arrays, tuples for lists)
that it must accept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

NAN, INF = float("nan"), float("inf")
FLOAT32_MAX = float(np.finfo("float32").max)
SEED_MAX = 2**31 - 1


class _Opaque:
    """An object of a type no argument accepts."""

    def __repr__(self):
        return "<opaque>"


def _alien():
    """Values of the wrong type for every number, bool, string or sequence."""
    return st.sampled_from(
        [
            _Opaque(),
            {"a": 1},
            {1, 2},
            b"1",
            1 + 2j,
        ]
    )


def _none_unless(optional):
    return st.nothing() if optional else st.just(None)


def _floats_outside(low, high, low_inclusive, high_inclusive):
    parts = []
    finite = {"allow_nan": False, "allow_infinity": False}
    if low is not None:
        parts.append(
            st.floats(max_value=low, exclude_max=low_inclusive, **finite).filter(
                lambda v: v != low or not low_inclusive
            )
        )
    if high is not None:
        parts.append(
            st.floats(min_value=high, exclude_min=high_inclusive, **finite).filter(
                lambda v: v != high or not high_inclusive
            )
        )
    return parts


@dataclass(frozen=True)
class Kind:
    """The base kind: refuses alien types and `None` (unless optional)."""

    optional: bool = False
    extra_hostile: tuple = ()
    extra_unusual: tuple = ()

    def hostile(self):
        parts = [_alien(), _none_unless(self.optional), *self._hostile()]
        if self.extra_hostile:
            parts.append(st.sampled_from(self.extra_hostile))
        return st.one_of(*parts)

    def _hostile(self):
        return []

    def unusual(self, valid):
        return [*self._unusual(valid), *self.extra_unusual]

    def _unusual(self, valid):
        return []


@dataclass(frozen=True)
class Real(Kind):
    """A finite real number, within `[low, high]` (bounds may be exclusive)."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def _hostile(self):
        fixed = [
            NAN,
            INF,
            -INF,
            True,
            False,
            "0.5",
            np.array([0.5, 0.5]),
            np.array([]),
            np.array("0.5"),
            np.bool_(True),
            np.float64(NAN),
            np.complex64(1),
            [0.5],
        ]
        outside = _floats_outside(
            self.low, self.high, self.low_inclusive, self.high_inclusive
        )
        big = (
            []
            if self.high is not None
            else [st.just(FLOAT32_MAX * 2), st.just(10**400)]
        )
        return [st.sampled_from(fixed), *outside, *big]

    def _unusual(self, valid):
        if valid is None:
            return []
        values = [np.float64(valid), np.array(valid, "float64"), np.float32(valid)]
        if float(valid).is_integer():
            values += [np.int64(valid), np.array(int(valid))]
        return values


@dataclass(frozen=True)
class Integer(Kind):
    """An integer (not a bool, not a float) within `[low, high]`."""

    low: int | None = None
    high: int | None = None

    def _hostile(self):
        fixed = [
            2.5,
            NAN,
            INF,
            True,
            "3",
            np.float64(2.5),
            np.array([1, 2]),
            np.array(2.5),
            np.bool_(True),
            10**30,
            -(10**30),
            [3],
        ]
        parts = [st.sampled_from(fixed)]
        if self.low is not None:
            parts.append(st.integers(max_value=self.low - 1))
        if self.high is not None:
            parts.append(st.integers(min_value=self.high + 1))
        return parts

    def _unusual(self, valid):
        if valid is None:
            return []
        return [np.int64(valid), np.int32(valid), np.array(valid)]


def Seed():
    """`None` or an integer in `[0, 2**31 - 1]`."""
    return Integer(optional=True, low=0, high=SEED_MAX)


@dataclass(frozen=True)
class Bool(Kind):
    def _hostile(self):
        return [
            st.sampled_from(
                [0, 1, 2, 0.5, "True", "", np.int64(1), np.array([True, False]), [True]]
            )
        ]

    def _unusual(self, valid):
        if valid is None:
            return []
        return [np.bool_(valid), np.array(valid)]


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple = ()

    def _hostile(self):
        strings = [c for c in self.choices if isinstance(c, str)]
        others = st.text(max_size=12).filter(lambda s: s not in self.choices)
        fixed = [5, 1.5, True, [strings[0]] if strings else [1]]
        return [others, st.sampled_from(fixed)]

    def _unusual(self, valid):
        return [np.str_(valid)] if isinstance(valid, str) else []


@dataclass(frozen=True)
class Name(Kind):
    """A layer/schedule/metric name: a string or `None`."""

    optional: bool = True

    def _hostile(self):
        return [st.sampled_from([5, 1.5, True, ["name"], np.float32(1)])]


@dataclass(frozen=True)
class Sequence(Kind):
    """A list/tuple/1-D array whose elements follow `element`."""

    element: Kind = field(default_factory=Kind)
    min_length: int = 0

    def _hostile(self):
        fixed = ["ab", 5, 0.5, np.zeros((2, 2)), [NAN, NAN], [INF, INF], ["a", "b"]]
        if self.min_length:
            fixed.append([])
        return [st.sampled_from(fixed)]

    def _unusual(self, valid):
        if valid is None:
            return []
        return [tuple(valid), np.array(valid)]


@dataclass(frozen=True)
class Model(Kind):
    """A `keras.Model` (a layer, an array or a string is refused)."""

    def _hostile(self):
        import keras

        return [st.sampled_from(["model", 5, np.zeros((2, 6)), keras.layers.Dense(2)])]


@dataclass(frozen=True)
class Fixed(Kind):
    """An argument with hand-listed hostile values only (plus aliens/None)."""

    def _hostile(self):
        return []


def float_data(n, features):
    """Hostile numeric inputs for a model taking `(n, features)` float arrays."""
    shape = (n, features)
    return (
        np.zeros((0, features), "float32"),
        np.full(shape, NAN, "float32"),
        np.full(shape, INF, "float32"),
        np.zeros((n, features + 3), "float32"),
        np.full(shape, "a"),
        np.zeros((n,), "float32") if features != 1 else np.zeros((n, 2, 2), "float32"),
        "x",
        5,
    )


def is_finite_number(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False
