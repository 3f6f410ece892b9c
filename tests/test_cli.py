"""The command line answers `--help` and `--version` without loading Keras or
TensorFlow, and the package imports under `python -OO`."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import keras_dnntools as kdt

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("keras", "tensorflow", "jax", "torch", "numpy")


def _python(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def _imported_top_level_modules(stderr: str) -> set[str]:
    """Top-level module names from `python -X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_help_and_version_import_no_framework(option):
    start = time.perf_counter()
    result = _python("-X", "importtime", "-m", "keras_dnntools", option)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = _imported_top_level_modules(result.stderr)
    assert "keras_dnntools" in loaded  # the parsing above sees imports
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    # Under 1 s on an idle machine; generous here, the suite runs in parallel.
    assert seconds < 10, seconds


def test_version_prints_the_package_version():
    result = _python("-m", "keras_dnntools", "--version")
    assert result.stdout.strip() == f"keras-dnntools {kdt.__version__}"


def test_console_script_is_as_quick_as_python_dash_m():
    """The `keras-dnntools` script (argv[0] ends with its name) loads lazily too,
    and a namespace used afterwards still loads (and registers) on first use."""
    code = (
        "import sys\n"
        "sys.argv = ['/venv/bin/keras-dnntools', '--version']\n"
        "import keras_dnntools\n"
        "assert 'keras' not in sys.modules, 'loaded keras'\n"
        "import keras\n"
        "assert keras_dnntools.layers.RReLU\n"
        "print(keras.saving.get_registered_object('keras_dnntools>RReLU').__name__)\n"
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "RReLU"


def test_a_plain_import_registers_everything_at_once():
    code = (
        "import keras, keras_dnntools\n"
        "print(keras.saving.get_registered_object('keras_dnntools>MCDropout'))\n"
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MCDropout" in result.stdout


def test_the_package_imports_under_python_dash_OO():
    """Docstrings are stripped under -OO: nothing may depend on them."""
    code = (
        "import keras_dnntools as kdt\n"
        "assert kdt.callbacks.OneCycleScheduler.__doc__ is None\n"
        "print(kdt.callbacks.OneCycleScheduler(0.1, total_steps=7).total_steps)\n"
    )
    result = _python("-OO", "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("7")
