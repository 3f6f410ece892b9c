"""The rate and momentum used at every optimizer step are the schedule's.

A 1-unit linear model is trained on fixed, unshuffled data with
`steps_per_execution=32`; its learned weights must equal a NumPy
re-simulation of Keras's update rule fed with the schedule's value at every
step. A per-batch Python callback would only change the values once every 32
steps: the same test tells that apart (see the `_book_style` checks).
"""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests._backends import STEPS_PER_EXECUTION_REASON
from tests._backends import steps_per_execution as backend_steps_per_execution
from tests.callbacks.simulation import linear_data, simulate

BATCH_SIZE = 4
EPOCHS = 2


SPE = backend_steps_per_execution(32)


def _train(optimizer, callback, steps_per_execution=SPE):
    x, y = linear_data()
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="zeros")]
    )
    model.compile(optimizer, "mse", steps_per_execution=steps_per_execution)
    history = model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[callback],
    )
    return model, history, x, y


def _values(schedule, steps):
    return [float(schedule(step)) for step in range(steps)]


def _book_style(values, every=32):
    """What a per-batch callback achieves: one new value per execution."""
    return [values[(step // every) * every] for step in range(len(values))]


def _assert_weights(model, expected, message):
    kernel, bias = model.get_weights()
    np.testing.assert_allclose(
        kernel, expected[0], rtol=2e-5, atol=2e-6, err_msg=message
    )
    np.testing.assert_allclose(bias, expected[1], rtol=2e-5, atol=2e-6, err_msg=message)


def _differs(model, expected):
    kernel, bias = model.get_weights()
    gap = max(np.max(np.abs(kernel - expected[0])), np.max(np.abs(bias - expected[1])))
    return gap > 1e-3


@pytest.mark.parametrize(
    ("kind", "optimizer"),
    [
        ("sgd", lambda: keras.optimizers.SGD(0.01, momentum=0.9)),
        ("adam", lambda: keras.optimizers.Adam(0.01)),
    ],
)
def test_one_cycle_rate_and_momentum_exact_at_every_step(kind, optimizer):
    scheduler = kdt.callbacks.OneCycleScheduler(max_learning_rate=0.05)
    model, history, x, y = _train(optimizer(), scheduler)
    steps = int(model.optimizer.iterations)
    assert steps == EPOCHS * len(x) // BATCH_SIZE == scheduler.schedule.total_steps
    rates = _values(scheduler.schedule, steps)
    momenta = _values(scheduler.momentum_schedule, steps)
    _assert_weights(
        model,
        simulate(kind, x, y, BATCH_SIZE, rates, momenta),
        f"{kind}: weights differ from a re-simulation with the per-step schedule",
    )
    # The test has teeth: a stale rate or a stale momentum gives other weights.
    stale_rate = simulate(kind, x, y, BATCH_SIZE, _book_style(rates), momenta)
    stale_momentum = simulate(kind, x, y, BATCH_SIZE, rates, _book_style(momenta))
    assert _differs(model, stale_rate) and _differs(model, stale_momentum)
    key = "momentum" if kind == "sgd" else "beta_1"
    np.testing.assert_allclose(
        history.history["learning_rate"], [rates[steps // 2 - 1], rates[-1]], rtol=1e-6
    )
    np.testing.assert_allclose(
        history.history[key], [momenta[steps // 2 - 1], momenta[-1]], rtol=1e-6
    )


@pytest.mark.parametrize(
    "scheduler",
    [
        kdt.callbacks.PowerScheduler(0.05, decay_steps=10, power=2.0),
        kdt.callbacks.ExponentialScheduler(0.05, decay_steps=40, decay_rate=0.2),
        kdt.callbacks.ExponentialScheduler(0.05, decay_steps=1, update="epoch"),
    ],
    ids=["power", "exponential", "exponential-per-epoch"],
)
def test_decay_schedulers_exact_at_every_step(scheduler):
    model, history, x, y = _train(keras.optimizers.SGD(0.01, momentum=0.9), scheduler)
    steps = int(model.optimizer.iterations)
    per_epoch = steps // EPOCHS
    if scheduler.update == "epoch":
        rates = [float(scheduler.schedule(step // per_epoch)) for step in range(steps)]
    else:
        rates = _values(scheduler.schedule, steps)
    _assert_weights(
        model,
        simulate("sgd", x, y, BATCH_SIZE, rates, [0.9] * steps),
        "weights differ from a re-simulation with the per-step schedule",
    )
    np.testing.assert_allclose(
        history.history["learning_rate"], [rates[per_epoch - 1], rates[-1]], rtol=1e-6
    )
    assert "momentum" not in history.history


@pytest.mark.backends("tensorflow", "jax", reason=STEPS_PER_EXECUTION_REASON)
def test_same_trajectory_with_and_without_steps_per_execution():
    weights = []
    for steps_per_execution in (1, 32):
        model, _, _, _ = _train(
            keras.optimizers.SGD(0.01, momentum=0.9),
            kdt.callbacks.OneCycleScheduler(0.05),
            steps_per_execution=steps_per_execution,
        )
        weights.append(model.get_weights())
    for first, second in zip(*weights, strict=True):
        np.testing.assert_allclose(first, second, rtol=1e-6, atol=1e-7)
