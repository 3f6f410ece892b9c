"""Scheduler callbacks: wrappers, resuming, several fit() calls, errors, logs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dnntools as kdt
from tests._backends import steps_per_execution
from tests.callbacks.simulation import linear_data

BATCH_SIZE = 8  # 256 samples: 32 steps per epoch
STEPS_PER_EPOCH = 32


def _model(optimizer, units=(1,), steps_per_execution=1):
    layers = [keras.Input((3,))]
    layers += [
        keras.layers.Dense(n, kernel_initializer="glorot_uniform") for n in units
    ]
    model = keras.Sequential(layers)
    model.compile(optimizer, "mse", steps_per_execution=steps_per_execution)
    return model


def _fit(model, callbacks, epochs=2, **kwargs):
    x, y = linear_data()
    return model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


def _rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


# ----------------------------------------------------------------- wrappers


def test_multi_optimizer_keeps_the_ratios_between_sub_optimizers():
    keras.utils.set_random_seed(1)
    slow = keras.optimizers.SGD(0.001, momentum=0.9)
    fast = keras.optimizers.Adam(0.01)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="body"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            default_optimizer=fast, optimizer_map={".*body/.*": slow}
        )
    )
    model.compile(optimizer, "mse", steps_per_execution=steps_per_execution(8))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # The momentum variables hold the value of the last step; Keras's
            # `learning_rate` property gives the rate of the next step.
            momenta = float(slow.momentum), float(fast.beta_1)
            rates = _rate(slow), _rate(fast)
            seen.append((int(optimizer.iterations), *rates, *momenta))

    scheduler = kdt.callbacks.OneCycleScheduler(0.05)
    history = _fit(model, [scheduler, Record()], epochs=3)
    schedule, momentum = scheduler.schedule, scheduler.momentum_schedule
    for iterations, slow_rate, fast_rate, slow_momentum, fast_beta in seen:
        assert fast_rate == pytest.approx(float(schedule(iterations)), rel=1e-6)
        assert slow_rate == pytest.approx(float(schedule(iterations)) * 0.1, rel=1e-5)
        expected_momentum = pytest.approx(float(momentum(iterations - 1)), rel=1e-6)
        assert slow_momentum == fast_beta == expected_momentum
    logged = [float(schedule(iterations - 1)) for iterations, *_ in seen]
    assert history.history["learning_rate"] == pytest.approx(logged, rel=1e-6)
    assert {"momentum", "beta_1"} <= set(history.history)
    # Both sub-optimizers took every step, at the MultiOptimizer's step count.
    assert int(slow.iterations) == int(fast.iterations) == 3 * STEPS_PER_EPOCH
    # Afterwards each keeps its last rate: the ratio is still 1:10.
    assert _rate(slow) / _rate(fast) == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "mixed_float16"])
def test_loss_scale_optimizer_is_driven_through(explicit):
    if explicit:
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.01, momentum=0.9)
        )
    else:
        keras.config.set_dtype_policy("mixed_float16")
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    model = _model(optimizer, steps_per_execution=steps_per_execution(4))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    scheduler = kdt.callbacks.OneCycleScheduler(0.05)
    history = _fit(model, [scheduler])
    last = int(model.optimizer.iterations) - 1
    inner = model.optimizer.inner_optimizer
    # Loss scaling may skip steps that overflow; the schedule counts applied ones.
    assert 0 < last + 1 <= 2 * STEPS_PER_EPOCH
    assert history.history["learning_rate"][-1] == pytest.approx(
        float(scheduler.schedule(last)), rel=1e-6
    )
    assert _rate(inner) == pytest.approx(float(scheduler.schedule(last)), rel=1e-6)
    assert inner.momentum == pytest.approx(float(scheduler.momentum_schedule(last)))


# ------------------------------------------------- several fits and resuming


def _one_cycle_run(chunks):
    """Trains 4 epochs in fit() calls of (epochs, total_steps); returns the model."""
    keras.utils.set_random_seed(3)
    model = _model(
        keras.optimizers.SGD(0.01, momentum=0.9),
        steps_per_execution=steps_per_execution(8),
    )
    epoch = 0
    for epochs, total_steps in chunks:
        _fit(
            model,
            [kdt.callbacks.OneCycleScheduler(0.05, total_steps=total_steps)],
            epochs=epoch + epochs,
            initial_epoch=epoch,
        )
        epoch += epochs
    return model


def test_several_fit_calls_and_initial_epoch_continue_the_cycle():
    total = 4 * STEPS_PER_EPOCH
    whole = _one_cycle_run([(4, None)])
    # With initial_epoch=2 and epochs=4, total_steps=None is 4 epochs again.
    resumed = _one_cycle_run([(2, total), (2, None)])
    explicit = _one_cycle_run([(1, total), (1, total), (2, total)])
    for other in (resumed, explicit):
        for a, b in zip(whole.get_weights(), other.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert int(other.optimizer.iterations) == 4 * STEPS_PER_EPOCH


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_the_cycle_where_it_stopped(tmp_path):
    def fresh():
        keras.utils.set_random_seed(4)
        return _model(
            keras.optimizers.Adam(0.01),
            steps_per_execution=steps_per_execution(8),
        )

    uninterrupted = fresh()
    history = _fit(uninterrupted, [kdt.callbacks.OneCycleScheduler(0.05)], epochs=4)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = fresh()
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(
            interrupted,
            [kdt.callbacks.OneCycleScheduler(0.05), backup, _Interrupt(at_epoch=1)],
            epochs=4,
        )
    resumed = fresh()  # a new process: same model, fresh optimizer
    resumed_history = _fit(
        resumed, [kdt.callbacks.OneCycleScheduler(0.05), backup], epochs=4
    )
    assert len(resumed_history.history["loss"]) == 2  # epochs 2 and 3 only
    assert int(resumed.optimizer.iterations) == 4 * STEPS_PER_EPOCH
    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        resumed_history.history["learning_rate"],
        history.history["learning_rate"][2:],
        rtol=1e-6,
    )


def test_model_checkpoint_mid_run_saves_a_loadable_model(tmp_path):
    path = tmp_path / "checkpoint.keras"
    model = _model(keras.optimizers.SGD(0.01, momentum=0.9))
    _fit(
        model,
        [kdt.callbacks.OneCycleScheduler(0.05), keras.callbacks.ModelCheckpoint(path)],
        epochs=1,
    )
    loaded = keras.models.load_model(path, safe_mode=True)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # A plain optimizer, with the rate and momentum of the last step, that a
    # scheduler can drive again.
    assert isinstance(loaded.optimizer.momentum, float)
    assert _rate(loaded.optimizer) == pytest.approx(_rate(model.optimizer))
    assert int(loaded.optimizer.iterations) == STEPS_PER_EPOCH
    _fit(loaded, [kdt.callbacks.OneCycleScheduler(0.05, total_steps=64)], epochs=1)


# --------------------------------------------------- install and uninstall


def test_optimizer_gets_its_float_rate_back_and_later_fits_are_plain():
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    model = _model(optimizer)
    _fit(model, [], epochs=1)  # traced once without a schedule
    variables_before = [v.path for v in optimizer.variables]
    scheduler = kdt.callbacks.PowerScheduler(0.1, decay_steps=8)
    _fit(model, [scheduler], epochs=1)
    # The schedule counts from the first step of this fit() (initial_epoch=0).
    final = float(scheduler.schedule(STEPS_PER_EPOCH - 1))
    assert _rate(optimizer) == pytest.approx(final, rel=1e-6)
    assert isinstance(optimizer.momentum, float)
    assert [v.path for v in optimizer.variables] == variables_before
    _fit(model, [], epochs=1)  # the schedule is gone: the rate stays put
    assert _rate(optimizer) == pytest.approx(final, rel=1e-6)
    assert optimizer.get_config()["learning_rate"] == pytest.approx(final, rel=1e-6)


def test_a_fit_interrupted_by_an_exception_is_cleaned_up_by_the_next_one():
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    model = _model(optimizer)
    with pytest.raises(RuntimeError):
        _fit(model, [kdt.callbacks.OneCycleScheduler(0.05), _Interrupt(0)])
    history = _fit(model, [kdt.callbacks.ExponentialScheduler(0.01, 100)], epochs=1)
    assert "momentum" not in history.history
    assert isinstance(optimizer.momentum, float)


def test_total_steps_from_a_dataset_of_known_cardinality():
    x, y = linear_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH_SIZE)
    model = _model(keras.optimizers.SGD(0.01, momentum=0.9))
    scheduler = kdt.callbacks.OneCycleScheduler(0.05)
    model.fit(dataset, epochs=3, verbose=0, shuffle=False, callbacks=[scheduler])
    assert scheduler.schedule.total_steps == 3 * STEPS_PER_EPOCH


# ------------------------------------------------------------------ errors


def test_error_when_total_steps_cannot_be_inferred():
    x, y = linear_data()
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True)
    model = _model(keras.optimizers.SGD(0.01, momentum=0.9))
    with pytest.raises(ValueError, match="total_steps"):
        model.fit(
            unknown.batch(8),
            epochs=2,
            verbose=0,
            shuffle=False,
            callbacks=[kdt.callbacks.OneCycleScheduler(0.05)],
        )
    with pytest.raises(ValueError, match="steps per epoch is unknown"):
        model.fit(
            unknown.batch(8),
            epochs=2,
            verbose=0,
            shuffle=False,
            callbacks=[kdt.callbacks.PowerScheduler(0.05, 2, update="epoch")],
        )


def test_error_when_the_rate_is_already_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    model = _model(keras.optimizers.SGD(schedule, momentum=0.9))
    with pytest.raises(ValueError, match="already has a learning-rate schedule"):
        _fit(model, [kdt.callbacks.OneCycleScheduler(0.05)])


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.01), lambda: keras.optimizers.Adagrad(0.01)],
    ids=["sgd-without-momentum", "adagrad"],
)
def test_error_when_cycling_a_momentum_the_optimizer_lacks(optimizer):
    model = _model(optimizer())
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        _fit(model, [kdt.callbacks.OneCycleScheduler(0.05)])
    history = _fit(model, [kdt.callbacks.OneCycleScheduler(0.05, cycle_momentum=False)])
    assert set(history.history) == {"loss", "learning_rate"}


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: kdt.callbacks.OneCycleScheduler(0.0), "max_learning_rate"),
        (lambda: kdt.callbacks.OneCycleScheduler(0.1, pct_start=1.0), "pct_start"),
        (
            lambda: kdt.callbacks.OneCycleScheduler(
                0.1, pct_start=0.6, three_phase=True
            ),
            "pct_start",
        ),
        (
            lambda: kdt.callbacks.OneCycleScheduler(0.1, anneal_strategy="exp"),
            "anneal_strategy",
        ),
        (lambda: kdt.callbacks.OneCycleScheduler(0.1, div_factor=-1.0), "div_factor"),
        (lambda: kdt.callbacks.OneCycleScheduler(0.1, total_steps=1), "total_steps"),
        (
            lambda: kdt.callbacks.OneCycleScheduler(0.1, base_momentum=0.99),
            "base_momentum",
        ),
        (lambda: kdt.callbacks.PowerScheduler(0.1, 10, update="step"), "update"),
        (lambda: kdt.callbacks.PowerScheduler(0.1, 0), "decay_steps"),
        (
            lambda: kdt.callbacks.ExponentialScheduler(0.1, 10, decay_rate=2.0),
            "decay_rate",
        ),
        (lambda: kdt.callbacks.ExponentialScheduler(0.1, 10, update=None), "update"),
    ],
)
def test_callbacks_reject_bad_arguments(factory, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        factory()
