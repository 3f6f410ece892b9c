"""Plot helpers draw what they claim and fail clearly without matplotlib."""

import subprocess
import sys

import matplotlib
import numpy as np
import pytest

import keras_dnntools as kdt
from keras_dnntools.plotting import reliability_bins

matplotlib.use("Agg")


def test_reliability_bins_match_a_hand_computed_table():
    probs = np.array([[0.95, 0.05], [0.15, 0.85], [0.55, 0.45], [0.35, 0.65]])
    labels = np.array([0, 0, 0, 1])
    bins = reliability_bins(labels, probs, n_bins=2)  # (0, .5], (.5, 1]
    np.testing.assert_allclose(bins["count"], [0, 4])
    np.testing.assert_allclose(bins["confidence"][1], np.mean([0.95, 0.85, 0.55, 0.65]))
    np.testing.assert_allclose(bins["accuracy"][1], 3 / 4)
    one_hot = np.eye(2)[labels]
    np.testing.assert_allclose(reliability_bins(one_hot, probs, 2)["accuracy"][1], 0.75)


def test_reliability_diagram_title_carries_the_ece():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200)
    labels = rng.integers(0, 3, size=200)
    ax = kdt.plotting.plot_reliability_diagram(labels, probs, n_bins=10)
    expected = float(kdt.metrics.expected_calibration_error(labels, probs, n_bins=10))
    assert f"{expected:.3f}" in ax.get_title()


def test_plot_schedule_draws_the_schedule_values():
    schedule = kdt.schedules.OneCycleSchedule(0.1, total_steps=50)
    ax = kdt.plotting.plot_schedule(
        schedule, momentum=kdt.schedules.OneCycleMomentum(50)
    )
    line = ax.get_lines()[0]
    expected = [float(schedule(step)) for step in range(50)]
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-6)


def test_plot_schedule_needs_a_length():
    with pytest.raises(ValueError, match="`total_steps`"):
        kdt.plotting.plot_schedule(kdt.schedules.PowerSchedule(0.1, 10))
    with pytest.raises(TypeError, match="`schedule`"):
        kdt.plotting.plot_schedule(0.1, 10)


def test_bad_inputs_name_the_argument():
    probs = np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="`n_bins`"):
        kdt.plotting.plot_reliability_diagram([0, 1, 0, 1], probs, n_bins=0)
    with pytest.raises(ValueError, match="`y_true`"):
        kdt.plotting.plot_reliability_diagram([0, 1], probs)


def test_missing_matplotlib_names_the_extra():
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        "sys.modules['matplotlib.pyplot'] = None\n"
        "import keras_dnntools as kdt\n"
        "try:\n"
        "    kdt.plotting.plot_schedule(kdt.schedules.PowerSchedule(0.1, 10), 5)\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "keras-dnntools[examples]" in out.stdout


def test_reliability_diagram_labels_each_bar_with_its_count():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=300)
    labels = rng.integers(0, 4, size=300)
    ax = kdt.plotting.plot_reliability_diagram(labels, probs, n_bins=10)
    counts = reliability_bins(labels, probs, n_bins=10)["count"]
    assert [int(t.get_text()) for t in ax.texts] == [int(c) for c in counts if c > 0]
    assert sum(int(t.get_text()) for t in ax.texts) == 300
    assert ax.get_xlabel() and ax.get_ylabel() and "ECE" in ax.get_title()


def test_reliability_diagram_legend_hides_no_data():
    """The legend sits outside the axes: it cannot cover a bar or a count."""
    probs = np.array([[0.99, 0.01]] * 50 + [[0.02, 0.98]] * 50)  # full top-right bar
    ax = kdt.plotting.plot_reliability_diagram(np.r_[[0] * 50, [1] * 50], probs)
    figure = ax.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.y1 <= axes.y0, (legend, axes)
    for text in ax.texts:  # the counts stay inside the axes
        box = text.get_window_extent(renderer)
        assert axes.y0 <= box.y0 and box.y1 <= axes.y1


def test_plot_schedule_is_exact_for_long_schedules_and_plain_callables():
    schedule = kdt.schedules.PiecewiseConstantSchedule([500, 1500], [0.1, 0.01, 0.001])
    ax = kdt.plotting.plot_schedule(schedule, 2000)
    values = ax.get_lines()[0].get_ydata()
    steps = np.arange(2000)
    expected = np.where(steps < 500, 0.1, np.where(steps < 1500, 0.01, 0.001))
    np.testing.assert_allclose(values, expected, rtol=1e-6)

    def step_function(step):  # Python control flow: evaluated step by step
        return 0.1 if step < 10 else 0.01

    ax = kdt.plotting.plot_schedule(step_function, 20)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.1] * 10 + [0.01] * 10)


def test_every_plot_has_a_title_and_labelled_axes():
    from types import SimpleNamespace

    # Any object with the MCPrediction attributes the plot reads.
    prediction = SimpleNamespace(
        predictive_entropy=np.linspace(0.0, 1.0, 6), predicted_class=np.zeros(6)
    )
    axes = [
        kdt.plotting.plot_schedule(kdt.schedules.OneCycleSchedule(0.1, 20)),
        kdt.plotting.plot_reliability_diagram([0, 1], np.eye(2)),
        kdt.plotting.plot_uncertainty_histogram(prediction),
    ]
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), ax
