"""Lazy imports of optional dependencies, with messages that say how to get them."""

from __future__ import annotations

from types import ModuleType


def require_pyplot() -> ModuleType:
    """Returns ``matplotlib.pyplot``, or raises an ImportError naming the extra.

    Raises:
        ImportError: if matplotlib is not installed.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "Plotting needs matplotlib, an optional dependency of keras_dnntools. "
            "Install it with: pip install 'keras-dnntools[examples]' "
            "(or: pip install matplotlib)."
        ) from error
    return plt


def require_sklearn_digits():
    """Returns ``sklearn.datasets.load_digits``, or raises a helpful ImportError.

    Raises:
        ImportError: if scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "The demo and the examples use scikit-learn's bundled digits data set, "
            "an optional dependency of keras_dnntools. Install it with: "
            "pip install 'keras-dnntools[examples]' (or: pip install scikit-learn)."
        ) from error
    return load_digits
