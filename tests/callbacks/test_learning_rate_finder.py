"""LearningRateFinder and kdt.find_learning_rate."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dnntools as kdt
from keras_dnntools.callbacks.learning_rate_finder import valley
from tests._backends import (
    skip_steps_per_execution_on_torch,
    steps_per_execution,
)
from tests.callbacks.simulation import linear_data


def _model(optimizer, steps_per_execution=1):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer, "mse", steps_per_execution=steps_per_execution)
    return model


def _state(model):
    variables = [*model.variables, *model.optimizer.variables]
    return [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.parametrize("steps_per_execution", [1, 8])
def test_weights_and_every_optimizer_variable_are_restored_bit_for_bit(
    steps_per_execution,
):
    x, y = linear_data()
    skip_steps_per_execution_on_torch(steps_per_execution)
    model = _model(keras.optimizers.Adam(1e-3), steps_per_execution)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # non-trivial state
    before = _state(model)
    paths = [v.path for v in model.optimizer.variables]
    result = kdt.find_learning_rate(model, x, y, batch_size=16, steps=40)
    after = _state(model)
    assert [v.path for v in model.optimizer.variables] == paths
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    assert int(model.optimizer.iterations) == 16  # iterations included
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert len(result.learning_rates) == len(result.losses) == len(result.raw_losses)
    # The model trains on as before, without any schedule left behind.
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert np.isfinite(history.history["loss"][0])


def _sweep(model, x, y, batch_size, epochs, **arguments):
    finder = kdt.callbacks.LearningRateFinder(**arguments)
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[finder],
    )
    return finder.result


def test_rates_grow_geometrically_and_losses_are_per_batch():
    x, y = linear_data()
    model = _model(keras.optimizers.SGD())
    initial = model.get_weights()
    # Rates so small that the model does not move: each recorded loss must be
    # the loss of one batch under the initial weights, not a running mean.
    result = _sweep(
        model,
        x,
        y,
        batch_size=32,
        epochs=3,
        steps=20,
        min_learning_rate=1e-12,
        max_learning_rate=1e-11,
    )
    expected_rates = 1e-12 * 10.0 ** (np.arange(20) / 19)
    np.testing.assert_allclose(result.learning_rates, expected_rates, rtol=1e-5)
    model.set_weights(initial)
    batch_losses = [
        float(
            model.evaluate(
                x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32], verbose=0
            )
        )
        for i in range(8)
    ]
    expected = [batch_losses[i % 8] for i in range(20)]  # 8 batches an epoch
    np.testing.assert_allclose(result.raw_losses, expected, rtol=2e-4)
    # Smoothed with bias correction: the first smoothed loss is the first loss.
    beta = 0.98
    average = beta * ((1 - beta) * expected[0]) + (1 - beta) * expected[1]
    assert result.losses[0] == pytest.approx(expected[0], rel=2e-4)
    assert result.losses[1] == pytest.approx(average / (1 - beta**2), rel=2e-4)


def test_stops_when_the_loss_diverges():
    x, y = linear_data()
    model = _model(keras.optimizers.SGD())
    result = kdt.find_learning_rate(
        model,
        x,
        y,
        batch_size=8,
        steps=200,
        min_learning_rate=1e-4,
        max_learning_rate=1e3,
    )
    assert len(result.learning_rates) < 200
    finite = result.losses[np.isfinite(result.losses)]
    assert finite[-1] > 4.0 * finite.min() or not np.isfinite(result.raw_losses[-1])
    assert 1e-4 <= result.suggestion < result.learning_rates[-1]


def test_stops_on_nan_loss():
    x, y = linear_data()
    y = y.copy()
    y[40:] = np.nan  # the sixth batch of 8 is NaN
    model = _model(keras.optimizers.SGD())
    result = _sweep(
        model,
        x,
        y,
        batch_size=8,
        epochs=1,
        steps=30,
        min_learning_rate=1e-5,
        max_learning_rate=1e-3,
    )
    assert len(result.raw_losses) == 6
    assert np.isnan(result.raw_losses[-1]) and np.isnan(result.losses[-1])
    assert np.isfinite(result.suggestion)


def test_works_on_a_dataset_and_as_a_callback_with_steps_per_execution():
    x, y = linear_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    per_execution = steps_per_execution(4)
    model = _model(keras.optimizers.SGD(), per_execution)
    result = kdt.find_learning_rate(
        model, dataset, steps=32, min_learning_rate=1e-4, max_learning_rate=1e-2
    )
    # one point per execution, at the rate of its last step
    assert len(result.learning_rates) == 32 // per_execution
    last_steps = np.arange(per_execution - 1, 32, per_execution)
    np.testing.assert_allclose(
        result.learning_rates, 1e-4 * 1e2 ** (last_steps / 31), rtol=1e-5
    )


def test_valley_picks_inside_the_longest_descent():
    losses = np.array([5.0, 4.0, 4.5, 3.0, 2.0, 1.0, 0.5, 0.4, 2.0, 9.0])
    # longest decreasing run: 5, 4, 3, 2, 1, 0.5, 0.4 (indices 0..7)
    assert valley(losses) == 3
    assert valley(np.array([1.0])) == 0


def test_plot_marks_the_suggestion(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    x, y = linear_data()
    result = kdt.find_learning_rate(_model(keras.optimizers.SGD()), x, y, steps=16)
    ax = result.plot()
    assert ax.get_xscale() == "log"
    assert any(line.get_xdata()[0] == result.suggestion for line in ax.get_lines()[1:])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="examples"):
        result.plot()


def test_error_when_the_rate_is_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    x, y = linear_data()
    with pytest.raises(ValueError, match="learning-rate schedule"):
        kdt.find_learning_rate(_model(keras.optimizers.SGD(schedule)), x, y)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (dict(min_learning_rate=1.0, max_learning_rate=1.0), "max_learning_rate"),
        (dict(min_learning_rate=2.0, max_learning_rate=1.0), "max_learning_rate"),
        (dict(min_learning_rate=0.0), "min_learning_rate"),
        (dict(steps=1), "steps"),
        (dict(stop_factor=1.0), "stop_factor"),
    ],
)
def test_rejects_bad_arguments(arguments, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        kdt.callbacks.LearningRateFinder(**arguments)


def test_find_learning_rate_rejects_bad_batch_size():
    x, y = linear_data()
    with pytest.raises(ValueError, match="`batch_size`"):
        kdt.find_learning_rate(_model(keras.optimizers.SGD()), x, y, batch_size=0)


def _synthetic_result():
    """A sweep whose loss falls around 1e-3, bottoms out, then diverges to ~900."""
    rates = np.logspace(-5, 1, 120)
    u = np.log10(rates)
    losses = 2.0 - 1.5 / (1.0 + np.exp(-3.0 * (u + 3.0))) + np.exp(3.0 * u) * 45.0
    return kdt.LRFinderResult(rates, losses, losses, suggestion=1e-3)


def test_suggestion_rules_against_numpy():
    result = _synthetic_result()
    rates, losses = result.learning_rates[12:-5], result.losses[12:-5]
    assert result.suggest() == result.suggestion
    assert result.suggest("minimum") == pytest.approx(rates[np.argmin(losses)] / 10)
    slopes = np.diff(losses) / np.diff(np.log(rates))
    assert result.suggest("steep") == pytest.approx(rates[np.argmin(slopes)])
    # The steepest descent of this curve is at 1e-3 (its sigmoid's centre).
    assert 5e-4 < result.suggest("steep") < 2e-3
    slide = result.suggest("slide")
    assert rates[0] <= slide <= rates[-1]
    with pytest.raises(ValueError, match="method"):
        result.suggest("fastest")


def test_plot_shows_the_useful_range_and_marks_the_suggestion():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    result = _synthetic_result()
    ax = result.plot(method="minimum")
    bottom, top = ax.get_ylim()
    assert top < 3.0  # the divergence to ~900 is cut, not squashing the curve
    assert bottom < result.losses.min()
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert "minimum" in ax.get_legend_handles_labels()[1][1]
    plotted = ax.get_lines()[0].get_ydata()
    # Up to the first point past the minimum above the starting loss.
    assert plotted[:-1].max() <= result.losses[0] + 1e-9 < plotted[-1]
    matplotlib.pyplot.close("all")
