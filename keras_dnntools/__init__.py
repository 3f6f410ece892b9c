"""keras_dnntools: drop-in Keras 3 components for training deep networks well.

Import style::

    import keras
    import keras_dnntools as kdt

Namespaces mirror Keras's: ``kdt.layers``, ``kdt.activations``,
``kdt.constraints``, ``kdt.schedules``, ``kdt.callbacks``, ``kdt.metrics``, plus
``kdt.transfer``, ``kdt.uncertainty``, ``kdt.diagnostics`` and
``kdt.initializers``.
"""

from keras_dnntools import (
    activations,
    callbacks,
    constraints,
    diagnostics,
    initializers,
    layers,
    metrics,
    plotting,
    schedules,
    transfer,
    uncertainty,
)
from keras_dnntools._version import __version__
from keras_dnntools.callbacks import LRFinderResult, find_learning_rate

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
