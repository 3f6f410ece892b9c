"""The checks the fuzz tests run: refuse hostile values, accept unusual ones."""

from __future__ import annotations

import inspect
import math
import re
import time
import warnings

import numpy as np
from hypothesis import HealthCheck, Phase, settings

from keras_dnntools._registry import public_objects
from tests.fuzz._specs import SPECS, Context, same_state

#: A refusal must come at once: validation runs before any real work.
TIME_BOUND_S = 5.0

HOSTILE_SETTINGS = settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    # Every value is reported as drawn: shrinking a sampled value gains nothing
    # and would re-run slow calls (a model's fit) many times.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


def parameters(key):
    """The fuzzable parameters of a public callable (not self, *args, **kwargs)."""
    obj = public_objects()[key]
    target = obj.__init__ if inspect.isclass(obj) else obj
    return [
        p
        for p in inspect.signature(target).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def cases(predicate=lambda spec: True):
    """`(key, argument)` pairs of every public callable's fuzzed arguments."""
    return [
        (key, parameter.name)
        for key in sorted(public_objects())
        if key in SPECS and predicate(SPECS[key])
        for parameter in parameters(key)
    ]


def call(key, context, **overrides):
    return call_with(key, {**SPECS[key].valid(context), **overrides})


def call_with(key, arguments):
    obj = public_objects()[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return obj(**arguments)


def _names(message, argument):
    # `x`, or one element of it: `values[2]`, `x['image']`.
    return re.search(rf"`{re.escape(argument)}(\[[^\]`]*\])*`", message) is not None


def check_refused(key, argument, value, context):
    """Calling `key` with `argument=value` raises an error naming `argument`."""
    arguments = {**SPECS[key].valid(context), argument: value}
    before = context.snapshot()
    start = time.perf_counter()
    try:
        result = call_with(key, arguments)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert _names(message, argument), (
            f"kdt.{key}({argument}={value!r}): the error does not name "
            f"`{argument}`: {type(error).__name__}: {message}"
        )
    except Exception as error:
        raise AssertionError(
            f"kdt.{key}({argument}={value!r}) raised {type(error).__name__} "
            f"instead of ValueError/TypeError naming `{argument}`: {error}"
        ) from error
    else:
        raise AssertionError(
            f"kdt.{key}({argument}={value!r}) was accepted (returned {result!r})"
        )
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, (
        f"kdt.{key}({argument}={value!r}) took {elapsed:.1f} s to refuse"
    )
    after = context.snapshot()
    assert same_state(before, after), (
        f"kdt.{key}({argument}={value!r}) was refused but changed the model "
        "or its optimizer"
    )


def comparable(value):
    """The config of what a call built, without its auto-generated name."""
    if hasattr(value, "get_config"):
        config = dict(value.get_config())
        config.pop("name", None)
        return config
    return None


def _close(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6)
        except (TypeError, ValueError):
            return False
    return a == b


def check_accepted(key, argument, value, context, reference):
    """`argument=value` is accepted and configures what the Python value does."""
    try:
        result = call(key, context, **{argument: value})
    except Exception as error:
        raise AssertionError(
            f"kdt.{key}({argument}={value!r} of type {type(value).__name__}) "
            f"was refused: {type(error).__name__}: {error}"
        ) from error
    config = comparable(result)
    if reference is not None and config is not None:
        assert _close(config, reference), (
            f"kdt.{key}({argument}={value!r}): config {config} differs from "
            f"the Python value's {reference}"
        )
        for item in config.values():
            assert not isinstance(item, (np.generic, np.ndarray)), (
                f"kdt.{key}({argument}={value!r}) keeps a NumPy value in its "
                f"config (not JSON-serializable): {config}"
            )
    return result


def new_context():
    return Context()
