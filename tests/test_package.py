"""Package-level promises: import surface, registration, docs, dependencies."""

import inspect
import json
import subprocess
import sys

import keras
import pytest

import keras_dnntools as kdt
from keras_dnntools._registry import PACKAGE, public_objects, serializable_objects

PUBLIC = public_objects()


def test_version_has_one_source():
    from importlib.metadata import version

    assert kdt.__version__ == version("keras-dnntools")


def test_import_pulls_in_no_optional_dependency():
    # Keras and its backend (that of this suite) may import some of these
    # themselves; we must not add any.
    code = (
        "import sys, keras; before = set(sys.modules); "
        "import keras_dnntools; "
        "print([m for m in ('matplotlib', 'sklearn', 'torch', 'pandas', 'scipy') "
        "if m in sys.modules and m not in before])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_api_namespace_is_populated():
    namespaces = {key.split(".")[0] for key in PUBLIC}
    expected = {
        "layers",
        "activations",
        "constraints",
        "schedules",
        "callbacks",
        "transfer",
        "uncertainty",
        "metrics",
    }
    assert expected <= namespaces


@pytest.mark.parametrize("key", sorted(PUBLIC))
def test_public_object_is_reachable_and_documented(key):
    namespace, name = key.split(".")
    obj = PUBLIC[key]
    assert getattr(getattr(kdt, namespace), name) is obj, f"kdt.{key} not exported"
    doc = inspect.getdoc(obj) or ""
    for section in ("Args:", "Example"):
        if section == "Args:" and not inspect.signature(obj).parameters:
            continue
        assert section in doc, f"kdt.{key} docstring lacks {section!r}"


@pytest.mark.parametrize("key", sorted(serializable_objects()))
def test_serializable_objects_are_registered_under_the_package(key):
    obj = PUBLIC[key]
    registered = keras.saving.get_registered_name(obj)
    assert registered == f"{PACKAGE}>{obj.__name__}"
    assert keras.saving.get_registered_object(registered) is obj
    if inspect.isclass(obj):
        assert callable(getattr(obj, "get_config", None)), f"{key}: no get_config"


def test_configs_are_json(tmp_path):
    # Spot check across families; the reliability matrix covers every object.
    objects = [
        kdt.layers.MCDropout(0.2, seed=1),
        kdt.layers.RReLU(),
        kdt.constraints.MaxNorm(2.0),
        kdt.schedules.OneCycleSchedule(0.1, 100),
    ]
    for obj in objects:
        config = obj.get_config()
        assert json.loads(json.dumps(config)) == config
