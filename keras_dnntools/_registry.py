"""One place that registers public objects and keeps the public list.

Every public class or function of keras_dnntools is decorated with
:func:`public`. Serializable objects (layers, constraints, schedules, metrics)
are registered with Keras under the package name ``"keras_dnntools"``, which is
written into users' saved models and therefore fixed for good. The registry is
also what the reliability test matrix iterates over, so a component added later
fails that matrix until it is covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import keras

PACKAGE = "keras_dnntools"

_T = TypeVar("_T")

# "namespace.Name" -> object, in definition order.
_PUBLIC: dict[str, object] = {}
_SERIALIZABLE: set[str] = set()


def public(namespace: str, *, serializable: bool = False) -> Callable[[_T], _T]:
    """Marks ``obj`` as part of the public API of ``kdt.<namespace>``.

    Args:
        namespace: the public namespace, e.g. ``"layers"`` or ``"schedules"``.
        serializable: also register the object with
            ``keras.saving.register_keras_serializable(package="keras_dnntools")``.

    Returns:
        A decorator returning the object unchanged (apart from registration).
    """

    def decorate(obj: _T) -> _T:
        key = f"{namespace}.{obj.__name__}"  # type: ignore[attr-defined]
        if key in _PUBLIC and _PUBLIC[key] is not obj:
            raise RuntimeError(f"Public name registered twice: {key}")
        if serializable:
            obj = keras.saving.register_keras_serializable(package=PACKAGE)(obj)
            _SERIALIZABLE.add(key)
        _PUBLIC[key] = obj
        return obj

    return decorate


def public_objects() -> dict[str, object]:
    """Returns a copy of ``{"namespace.Name": object}`` for every public object."""
    return dict(_PUBLIC)


def serializable_objects() -> dict[str, object]:
    """Returns the public objects registered for Keras serialization."""
    return {key: obj for key, obj in _PUBLIC.items() if key in _SERIALIZABLE}
