"""keras_dnntools: drop-in Keras 3 components for training deep networks well.

Import style::

    import keras
    import keras_dnntools as kdt

Namespaces mirror Keras's: ``kdt.layers``, ``kdt.activations``,
``kdt.constraints``, ``kdt.schedules``, ``kdt.callbacks``, ``kdt.metrics``, plus
``kdt.transfer``, ``kdt.uncertainty``, ``kdt.diagnostics`` and
``kdt.initializers``.
"""

import os as _os
import sys as _sys

from keras_dnntools._version import __version__

__all__ = [
    "LRFinderResult",
    "__version__",
    "activations",
    "callbacks",
    "constraints",
    "diagnostics",
    "find_learning_rate",
    "initializers",
    "layers",
    "metrics",
    "plotting",
    "schedules",
    "transfer",
    "uncertainty",
]


_NAMESPACES = (
    "activations",
    "callbacks",
    "constraints",
    "diagnostics",
    "initializers",
    "layers",
    "metrics",
    "plotting",
    "schedules",
    "transfer",
    "uncertainty",
)


def _load() -> None:
    """Imports every public namespace (which registers the serializable objects)."""
    import importlib

    for name in _NAMESPACES:
        importlib.import_module(f"keras_dnntools.{name}")
    from keras_dnntools.callbacks import LRFinderResult, find_learning_rate

    globals()["LRFinderResult"] = LRFinderResult
    globals()["find_learning_rate"] = find_learning_rate


def _started_as_command_line() -> bool:
    """True when this import only serves `python -m keras_dnntools ...` or the
    `keras-dnntools` script: `--help` and `--version` must not pay for Keras and
    TensorFlow (seconds), so the namespaces are then loaded on first use."""
    argv = list(getattr(_sys, "orig_argv", ()))
    for index, argument in enumerate(argv[:-1]):
        if argument == "-m":
            return argv[index + 1] in ("keras_dnntools", "keras_dnntools.__main__")
    script = _os.path.basename(_sys.argv[0]) if _sys.argv else ""
    return script.split(".")[0] in ("keras-dnntools", "keras-dnntools-script")


if _started_as_command_line():

    def __getattr__(name: str):
        if name in __all__:
            _load()
            return globals()[name]
        raise AttributeError(f"module 'keras_dnntools' has no attribute {name!r}")

else:
    _load()
