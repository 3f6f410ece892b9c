"""The unstable-gradient plots draw the monitor's and the report's numbers."""

import keras
import matplotlib
import numpy as np
import pytest

import keras_dnntools as kdt
from tests.diagnostics import models as m

matplotlib.use("Agg")
X, XS, Y = m.digits()


@pytest.fixture(scope="module")
def monitored():
    model = m.naive_sigmoid(depth=3)
    monitor = kdt.callbacks.TrainingMonitor(frequency=4)
    model.fit(X[:256], Y[:256], batch_size=32, epochs=2, callbacks=[monitor], verbose=0)
    return model, monitor


def test_activation_histograms_show_log_counts(monitored):
    _, monitor = monitored
    axes = kdt.plotting.plot_activation_histograms(monitor)
    assert len(axes) == len(monitor.layer_stats)
    name = list(monitor.layer_stats)[1]
    edges, counts = monitor.activation_histograms[name]
    assert axes[1].get_ylim() == (edges[0], edges[-1])
    mesh = axes[1].collections[0]
    np.testing.assert_allclose(
        np.asarray(mesh.get_array()).reshape(counts.T.shape), np.log1p(counts.T)
    )
    assert axes[1].get_title() == name and axes[1].get_xlabel() == "step"


def test_gradient_norm_lines_are_the_recorded_norms(monitored):
    _, monitor = monitored
    ax = kdt.plotting.plot_gradient_norms(monitor)
    for line, name in zip(ax.get_lines(), monitor.layer_stats, strict=True):
        assert line.get_label() == name
        np.testing.assert_allclose(line.get_xdata(), monitor.steps)
        np.testing.assert_allclose(
            line.get_ydata(), monitor.layer_stats[name]["gradient_norm"]
        )
    ax = kdt.plotting.plot_gradient_norms(monitor, stat="dead_fraction", layers="dense")
    assert ax.get_ylabel() == "dead fraction"


def test_report_bars_are_the_gradient_rms():
    report = kdt.diagnostics.check(m.naive_sigmoid(), X, Y)
    ax = report.plot()
    heights = [patch.get_height() for patch in ax.patches]
    np.testing.assert_allclose(heights, [row.gradient_rms for row in report.layers])
    assert "vanishing_gradients" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        row.name for row in report.layers
    ]


def test_plots_reject_an_unused_monitor_and_unknown_names(monitored):
    _, monitor = monitored
    with pytest.raises(ValueError, match="`monitor`"):
        kdt.plotting.plot_gradient_norms(kdt.callbacks.TrainingMonitor())
    with pytest.raises(ValueError, match="`layers`"):
        kdt.plotting.plot_activation_histograms(monitor, layers=["nope"])
    with pytest.raises(ValueError, match="`stat`"):
        kdt.plotting.plot_gradient_norms(monitor, stat="speed")
    with pytest.raises(TypeError, match="`report`"):
        kdt.plotting.plot_diagnostic_report(keras.Sequential())
