"""The harness covers the whole public API: a new public object needs a spec."""

from __future__ import annotations

import pytest

from keras_dnntools._registry import public_objects
from tests.fuzz._harness import cases, parameters
from tests.fuzz._specs import SPECS


@pytest.mark.parametrize("key", sorted(public_objects()))
def test_every_public_object_has_a_fuzz_spec(key):
    assert key in SPECS, (
        f"kdt.{key} is public but not fuzzed: add it to SPECS in tests/fuzz/_specs.py"
    )
    names = {p.name for p in parameters(key)}
    kinds = set(SPECS[key].kinds)
    assert names == kinds, (
        f"kdt.{key}: arguments {sorted(names)} but kinds for {sorted(kinds)}"
    )


def test_specs_name_only_public_objects():
    assert set(SPECS) <= set(public_objects())


def test_the_harness_is_not_trivial():
    assert len(SPECS) >= 40
    assert len(cases()) >= 150
