"""Fuzz-test setup: matplotlib imported up front, figures closed after each test."""

import sys

import pytest

try:  # The plot helpers import pyplot on first use: not inside a timed refusal.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
except ImportError:  # the plotting extra is optional; its tests skip without it
    pass


@pytest.fixture(autouse=True)
def _close_figures():
    """Plot helpers called with ``ax=None`` open a figure each: close them, or
    matplotlib warns past 20 open figures (and warnings are errors here)."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")
