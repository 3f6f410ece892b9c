"""TrainingMonitor's statistics against a float64 replay of the optimizer."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from keras_dnntools import _keras_compat

BACKEND = keras.backend.backend()
# torch trains one step per execution (Keras raises otherwise).
STEPS_PER_EXECUTION = 1 if BACKEND == "torch" else 4
BATCH, STEPS_PER_EPOCH, EPOCHS = 4, 6, 2


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS_PER_EPOCH, 5)).astype("float32")
    y = rng.normal(size=(BATCH * STEPS_PER_EPOCH, 2)).astype("float32")
    return x, y


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(
        0.05, decay_steps=2, decay_rate=0.5
    )


def _model(optimizer=None, **compile_kwargs):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="tanh", name="tanh"),
            keras.layers.Dense(4, activation="relu", name="relu"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(_schedule(), momentum=0.9),
        loss="mse",
        **compile_kwargs,
    )
    return model


def _replay(weights, x, y, steps, logged):
    """Float64 NumPy forward, backward and SGD-with-momentum, step by step."""
    w = [np.asarray(v, "float64") for v in weights]
    velocity = [np.zeros_like(v) for v in w]
    records = {}
    for t in range(steps):
        lr = 0.05 * 0.5 ** (t / 2)
        batch = slice((t % STEPS_PER_EPOCH) * BATCH, (t % STEPS_PER_EPOCH + 1) * BATCH)
        xb, yb = x[batch].astype("float64"), y[batch].astype("float64")
        a1 = np.tanh(xb @ w[0] + w[1])
        z2 = a1 @ w[2] + w[3]
        a2 = np.maximum(z2, 0)
        out = a2 @ w[4] + w[5]
        d_out = 2 * (out - yb) / out.size
        d_z2 = (d_out @ w[4].T) * (z2 > 0)
        d_z1 = (d_z2 @ w[2].T) * (1 - a1**2)
        grads = [xb.T @ d_z1, d_z1.sum(0), a1.T @ d_z2, d_z2.sum(0)]
        grads += [a2.T @ d_out, d_out.sum(0)]
        before = [v.copy() for v in w]
        for i, g in enumerate(grads):
            velocity[i] = 0.9 * velocity[i] - lr * g
            w[i] = w[i] + velocity[i]
        if t in logged:
            acts = [a1, a2, out]
            records[t] = {
                "learning_rate": lr,
                "gradient_norm": [
                    np.sqrt(np.sum(grads[2 * k] ** 2) + np.sum(grads[2 * k + 1] ** 2))
                    for k in range(3)
                ],
                "update_ratio": [
                    np.linalg.norm(w[2 * k] - before[2 * k])
                    / np.linalg.norm(before[2 * k])
                    for k in range(3)
                ],
                "activation_mean": [a.mean() for a in acts],
                "activation_std": [a.std() for a in acts],
                "dead_fraction": [0.0, np.mean(np.all(a2 <= 0, axis=0)), 0.0],
                "saturated_fraction": [np.mean(np.abs(a1) >= 0.95), 0.0, 0.0],
            }
    return records


def _fit(model, monitor, **kwargs):
    x, y = _data()
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        callbacks=[monitor],
        verbose=0,
        **kwargs,
    )


def test_statistics_match_a_float64_replay_at_the_logged_steps():
    model = _model(steps_per_execution=STEPS_PER_EXECUTION)
    initial = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    monitor = kdt.callbacks.TrainingMonitor(frequency=3)
    _fit(model, monitor)
    steps = EPOCHS * STEPS_PER_EPOCH
    np.testing.assert_array_equal(monitor.steps, np.arange(0, steps, 3))
    x, y = _data()
    reference = _replay(initial, x, y, steps, set(monitor.steps.tolist()))
    np.testing.assert_allclose(
        monitor.learning_rate,
        [reference[t]["learning_rate"] for t in monitor.steps],
        rtol=1e-6,
    )
    np.testing.assert_allclose(monitor.momentum, 0.9, rtol=1e-6)
    for k, name in enumerate(["tanh", "relu", "out"]):
        stats = monitor.layer_stats[name]
        for stat in (
            "gradient_norm",
            "update_ratio",
            "activation_mean",
            "activation_std",
            "dead_fraction",
            "saturated_fraction",
        ):
            expected = [reference[t][stat][k] for t in monitor.steps]
            np.testing.assert_allclose(
                stats[stat], expected, rtol=2e-4, atol=1e-6, err_msg=f"{name}/{stat}"
            )


def test_frequency_one_logs_every_step_and_layers_selects():
    model = _model()
    monitor = kdt.callbacks.TrainingMonitor(layers=["relu"])
    _fit(model, monitor)
    np.testing.assert_array_equal(monitor.steps, np.arange(EPOCHS * STEPS_PER_EPOCH))
    assert list(monitor.layer_stats) == ["relu"]
    edges, counts = monitor.activation_histograms["relu"]
    assert counts.shape == (len(monitor.steps), len(edges) - 1)
    np.testing.assert_allclose(counts.sum(axis=1), BATCH * 4)  # every output binned


def test_no_momentum_is_none():
    monitor = kdt.callbacks.TrainingMonitor(frequency=5)
    _fit(_model(keras.optimizers.Adagrad(0.01)), monitor)
    assert monitor.momentum is None
    np.testing.assert_allclose(monitor.learning_rate, 0.01, rtol=1e-6)


def test_adam_beta_1_is_reported_as_momentum():
    monitor = kdt.callbacks.TrainingMonitor(frequency=5)
    _fit(_model(keras.optimizers.Adam(0.01, beta_1=0.8)), monitor)
    np.testing.assert_allclose(monitor.momentum, 0.8, rtol=1e-6)


def test_mixed_precision_gradients_are_unscaled():
    reference = kdt.callbacks.TrainingMonitor(frequency=100)
    _fit(_model(), reference)
    keras.config.set_dtype_policy("mixed_float16")
    model = _model()
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    monitor = kdt.callbacks.TrainingMonitor(frequency=100)
    _fit(model, monitor)
    for name in ("tanh", "relu", "out"):
        np.testing.assert_allclose(
            monitor.layer_stats[name]["gradient_norm"],
            reference.layer_stats[name]["gradient_norm"],
            rtol=2e-2,
        )


def test_fit_leaves_nothing_installed():
    model = _model()
    _fit(model, kdt.callbacks.TrainingMonitor(frequency=2))
    assert not _keras_compat.is_instrumented(model)
    assert "train_function" not in vars(model) or model.train_function is None


class _Boom(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("boom")


def test_a_fit_that_raised_does_not_leave_the_monitor_behind():
    model = _model()
    monitor = kdt.callbacks.TrainingMonitor()
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(*_data(), batch_size=BATCH, callbacks=[monitor, _Boom()], verbose=0)
    assert _keras_compat.is_instrumented(model)  # Keras ran no on_train_end
    recorded = len(monitor._records)
    history = model.fit(*_data(), batch_size=BATCH, epochs=1, verbose=0)
    assert not _keras_compat.is_instrumented(model)
    assert len(monitor._records) == recorded
    assert np.isfinite(history.history["loss"][0])
    # Training continued exactly as a plain fit would.
    plain = _model()
    plain.set_weights(model.get_weights())
    assert np.isfinite(plain.evaluate(*_data(), verbose=0))


def test_train_on_batch_after_a_raised_fit_runs_plain():
    model = _model()
    monitor = kdt.callbacks.TrainingMonitor()
    with pytest.raises(RuntimeError):
        model.fit(*_data(), batch_size=BATCH, callbacks=[monitor, _Boom()], verbose=0)
    x, y = _data()
    model.train_on_batch(x[:4], y[:4])
    assert not _keras_compat.is_instrumented(model)


def test_works_with_our_scheduler_in_the_same_fit():
    model = _model(keras.optimizers.SGD(0.01, momentum=0.9))
    monitor = kdt.callbacks.TrainingMonitor()
    scheduler = kdt.callbacks.OneCycleScheduler(0.1, total_steps=EPOCHS * 6)
    model.fit(
        *_data(),
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[scheduler, monitor],
    )
    schedule = kdt.schedules.OneCycleSchedule(0.1, total_steps=EPOCHS * 6)
    expected = [float(schedule(step)) for step in monitor.steps]
    np.testing.assert_allclose(monitor.learning_rate, expected, rtol=1e-5)


def test_works_with_gradual_unfreezing_in_the_same_fit():
    model = _model(keras.optimizers.SGD(0.01))
    monitor = kdt.callbacks.TrainingMonitor()
    unfreezing = kdt.transfer.GradualUnfreezing({0: 1, 1: 3})
    model.fit(
        *_data(),
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[unfreezing, monitor],
    )
    first = monitor.steps < STEPS_PER_EPOCH
    tanh = monitor.layer_stats["tanh"]
    assert np.all(tanh["gradient_norm"][first] == 0)  # frozen in epoch 0
    assert np.all(tanh["update_ratio"][first] == 0)
    assert np.all(tanh["gradient_norm"][~first] > 0)
    assert np.all(monitor.layer_stats["out"]["gradient_norm"] > 0)


def test_tensorboard_scalars_and_histograms_read_back(tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard package is not installed",
    )
    monitor = kdt.callbacks.TrainingMonitor(
        frequency=2, log_dir=tmp_path, histograms=True
    )
    _fit(_model(), monitor)
    events = accumulator.EventAccumulator(
        str(tmp_path), size_guidance={"scalars": 0, "histograms": 0}
    )
    events.Reload()
    tags = events.Tags()
    assert "relu/gradient_norm" in tags["scalars"]
    assert {"learning_rate", "momentum"} <= set(tags["scalars"])
    read = events.Scalars("relu/gradient_norm")
    np.testing.assert_array_equal([e.step for e in read], monitor.steps)
    np.testing.assert_allclose(
        [e.value for e in read], monitor.layer_stats["relu"]["gradient_norm"], rtol=1e-6
    )
    rates = [e.value for e in events.Scalars("learning_rate")]
    np.testing.assert_allclose(rates, monitor.learning_rate, rtol=1e-6)
    histograms = events.Histograms("tanh/activations")
    assert [h.step for h in histograms] == monitor.steps.tolist()
    assert histograms[0].histogram_value.num == BATCH * 6
    gradients = events.Histograms("out/gradients")
    assert gradients[0].histogram_value.num == 4 * 2 + 2  # kernel + bias


def test_config_and_bad_arguments():
    monitor = kdt.callbacks.TrainingMonitor(5, layers=["relu"])
    assert monitor.get_config() == {
        "frequency": 5,
        "log_dir": None,
        "histograms": False,
        "layers": ["relu"],
    }
    with pytest.raises(ValueError, match="`frequency`"):
        kdt.callbacks.TrainingMonitor(0)
    with pytest.raises(TypeError, match="`histograms`"):
        kdt.callbacks.TrainingMonitor(histograms=1)
    with pytest.raises(TypeError, match="`layers`"):
        kdt.callbacks.TrainingMonitor(layers=3)
    model = _model()
    with pytest.raises(ValueError, match="`layers`"):
        _fit(model, kdt.callbacks.TrainingMonitor(layers=["nope"]))
    assert not _keras_compat.is_instrumented(model)


def test_a_partial_last_batch_retraces_without_breaking_the_fit():
    # The last batch of 2 retraces the step mid-epoch: on JAX, the monitor must
    # not sync the model state from inside the trace (Callback.model does).
    x, y = _data()
    model = _model()
    monitor = kdt.callbacks.TrainingMonitor(frequency=1)
    history = model.fit(
        x[:22], y[:22], batch_size=4, epochs=2, callbacks=[monitor], verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    np.testing.assert_array_equal(monitor.steps, np.arange(12))
    assert np.isclose(
        model.evaluate(x[:22], y[:22], verbose=0),
        model.evaluate(x[:22], y[:22], verbose=0),
    )
