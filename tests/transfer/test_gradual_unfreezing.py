"""GradualUnfreezing: effective within one fit(), optimizer slots, schedules."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests.transfer.models import data, mlp, nested


class Snapshots(keras.callbacks.Callback):
    """Weights at the end of every epoch, and optimizer facts at its start."""

    def __init__(self):
        super().__init__()
        self.weights = {}
        self.begin = {}

    def on_train_begin(self, logs=None):
        self.weights[-1] = {v.path: v.numpy().copy() for v in self.model.weights}

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        self.begin[epoch] = {
            "optimizer": optimizer,
            "iterations": int(optimizer.iterations.numpy()),
            "slots": {v.name: v.numpy().copy() for v in optimizer.variables},
        }

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = {v.path: v.numpy().copy() for v in self.model.weights}
        self.begin.setdefault("end", {})[epoch] = {
            v.name: v.numpy().copy() for v in self.model.optimizer.variables
        }


def kernel_path(model, name):
    return model.get_layer(name).kernel.path


def slot_name(variable_path, slot):
    return f"{variable_path.replace('/', '_')}_{slot}"


def run(model, schedule, optimizer, epochs=4, **kwargs):
    x, y = data(32)
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    snapshots = Snapshots()
    callbacks = [kdt.transfer.GradualUnfreezing(schedule, **kwargs), snapshots]
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=8,
        verbose=0,
        validation_data=(x, y),
        callbacks=callbacks,
    )
    return snapshots, history


def test_layer_unfrozen_at_epoch_2_trains_from_epoch_2_on():
    model = mlp()
    kdt.transfer.freeze(model, until=2)
    snapshots, _ = run(model, {0: 1, 2: 2}, keras.optimizers.Adam(1e-2))
    target = kernel_path(model, "mlp_dense_2")
    initial = snapshots.weights[-1][target]
    np.testing.assert_array_equal(snapshots.weights[0][target], initial)
    np.testing.assert_array_equal(snapshots.weights[1][target], initial)
    assert not np.array_equal(snapshots.weights[2][target], initial)
    assert not np.array_equal(
        snapshots.weights[3][target], snapshots.weights[2][target]
    )
    for frozen in ("mlp_dense_0", "mlp_dense_1"):
        path = kernel_path(model, frozen)
        np.testing.assert_array_equal(
            snapshots.weights[3][path], snapshots.weights[-1][path]
        )
    head = kernel_path(model, "mlp_dense_3")
    assert not np.array_equal(snapshots.weights[0][head], snapshots.weights[-1][head])


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(1e-2),
        lambda: keras.optimizers.SGD(1e-2, momentum=0.9),
        lambda: keras.optimizers.Nadam(1e-2),
        lambda: keras.optimizers.RMSprop(1e-2, momentum=0.5),
        lambda: keras.optimizers.Adafactor(1e-2),
        lambda: keras.optimizers.AdamW(1e-2, use_ema=True),
    ],
    ids=["adam", "sgd", "nadam", "rmsprop", "adafactor", "adamw-ema"],
)
def test_optimizer_slots_new_ones_fresh_old_ones_kept(optimizer):
    model = mlp()
    kdt.transfer.freeze(model, until=2)
    optimizer = optimizer()
    if keras.backend.backend() == "jax" and optimizer.use_ema:
        with pytest.raises(NotImplementedError, match="use_ema=True"):
            run(model, {0: 1, 2: 3}, optimizer)
        return
    snapshots, _ = run(model, {0: 1, 2: 3}, optimizer)
    # Same optimizer object throughout, step count never reset.
    assert all(
        info["optimizer"] is optimizer
        for key, info in snapshots.begin.items()
        if key != "end"
    )
    assert snapshots.begin[2]["iterations"] == 2 * 4
    assert int(optimizer.iterations.numpy()) == 4 * 4
    new_kernel = kernel_path(model, "mlp_dense_1")
    head_kernel = kernel_path(model, "mlp_dense_3")
    at_event = snapshots.begin[2]["slots"]
    before_event = snapshots.begin["end"][1]
    new_slots = [
        name for name in at_event if name.startswith(slot_name(new_kernel, ""))
    ]
    assert new_slots or isinstance(optimizer, keras.optimizers.Adafactor)
    if keras.backend.backend() == "jax":
        # Rebuilt at each change for exactly the trainable variables (JAX
        # applies the optimizer statelessly): the old slots are all kept.
        head_slots = {
            n for n in before_event if n.startswith(slot_name(head_kernel, ""))
        }
        assert head_slots and head_slots <= set(at_event)
    else:
        # The optimizer's variables are made once, at the start of fit(): the
        # layer that joins later has slots that stayed untouched until then.
        assert list(at_event) == list(before_event) == list(snapshots.begin[0]["slots"])
    for name in new_slots:
        if name.endswith("_average"):  # EMA starts from the variable itself
            np.testing.assert_array_equal(
                at_event[name], snapshots.weights[1][new_kernel]
            )
        else:
            assert not np.any(at_event[name]), name
    kept = [
        name for name in before_event if name.startswith(slot_name(head_kernel, ""))
    ]
    for name in kept:
        np.testing.assert_array_equal(at_event[name], before_event[name], err_msg=name)
    # Everything that was trainable at some point has trained.
    assert not np.array_equal(
        snapshots.weights[3][new_kernel], snapshots.weights[1][new_kernel]
    )


def test_counts_through_nested_base_and_keeps_batchnorm_frozen():
    model, base = nested()
    kdt.transfer.freeze(model, until="base")
    bn = base.get_layer("base_bn")
    statistics = [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]
    snapshots, _ = run(model, {0: 1, 1: 2, 2: 3}, keras.optimizers.Adam(1e-2))
    assert base.trainable and base.get_layer("base_dense_0").trainable
    assert not bn.trainable
    np.testing.assert_array_equal(bn.moving_mean.numpy(), statistics[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), statistics[1])
    first = kernel_path(base, "base_dense_0")
    np.testing.assert_array_equal(
        snapshots.weights[1][first], snapshots.weights[-1][first]
    )
    assert not np.array_equal(snapshots.weights[3][first], snapshots.weights[1][first])


def test_refreezing_and_epochs_before_the_schedule():
    model = mlp()
    snapshots, _ = run(model, {1: 3, 2: 1}, keras.optimizers.SGD(1e-2, momentum=0.9))
    bottom, middle = (
        kernel_path(model, "mlp_dense_0"),
        kernel_path(model, "mlp_dense_1"),
    )
    # Epoch 0 is before the schedule: the model trains as it was (all layers).
    assert not np.array_equal(
        snapshots.weights[0][bottom], snapshots.weights[-1][bottom]
    )
    # Epoch 1: top 3 only.
    np.testing.assert_array_equal(
        snapshots.weights[1][bottom], snapshots.weights[0][bottom]
    )
    assert not np.array_equal(
        snapshots.weights[1][middle], snapshots.weights[0][middle]
    )
    # Epochs 2 and 3: the top layer only.
    np.testing.assert_array_equal(
        snapshots.weights[3][middle], snapshots.weights[1][middle]
    )
    assert [layer.trainable for layer in model.layers] == [False, False, False, True]


def test_discriminative_optimizer_and_one_cycle_scheduler():
    def train(with_unfreezing):
        keras.utils.set_random_seed(1)
        model = mlp()
        kdt.transfer.freeze(model, until=2)
        optimizer = kdt.transfer.discriminative_optimizer(
            model, keras.optimizers.SGD(momentum=0.9), learning_rate_range=(1e-3, 1e-1)
        )
        x, y = data(32)
        model.compile(optimizer=optimizer, loss="mse")
        callbacks = [kdt.callbacks.OneCycleScheduler(0.1)]
        if with_unfreezing:
            callbacks.insert(0, kdt.transfer.GradualUnfreezing({0: 1, 1: 2, 2: 4}))
        history = model.fit(
            x, y, epochs=4, batch_size=8, verbose=0, callbacks=callbacks
        )
        return model, optimizer, history

    model, optimizer, history = train(True)
    _, _, reference = train(False)
    np.testing.assert_allclose(
        history.history["learning_rate"], reference.history["learning_rate"], rtol=1e-6
    )
    assert model.optimizer is optimizer
    assert int(optimizer.iterations.numpy()) == 16
    rates = [float(sub.learning_rate) for sub in optimizer.optimizers]
    np.testing.assert_allclose(
        np.array(rates) / max(rates), [0.01, 0.1, 1.0], rtol=1e-5
    )
    # The bottom group's optimizer got its variables when they were unfrozen.
    assert (
        any(v.name.startswith("mlp_dense_0") for v in optimizer.optimizers[0].variables)
        or len(optimizer.optimizers[0].variables) > 2
    )


def test_learning_rate_factor():
    model = mlp()
    kdt.transfer.freeze(model, until=2)
    optimizer = keras.optimizers.Adam(1e-2)
    run(model, {0: 1, 1: 2, 3: 4}, optimizer, learning_rate_factor=0.5)
    assert float(optimizer.learning_rate) == pytest.approx(1e-2 * 0.25)


def test_learning_rate_factor_needs_a_settable_rate():
    model = mlp()
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.5)
    with pytest.raises(
        ValueError, match=r"`learning_rate_factor`.*LearningRateSchedule"
    ):
        run(model, {0: 1}, keras.optimizers.Adam(schedule), learning_rate_factor=0.5)


def test_schedule_larger_than_the_model_is_rejected_at_fit():
    with pytest.raises(ValueError, match=r"`schedule`.*from 0 to 4"):
        run(mlp(), {0: 1, 2: 5}, "adam")


@pytest.mark.parametrize(
    ("schedule", "kwargs", "error", "match"),
    [
        ([1, 2], {}, TypeError, r"`schedule`.*dict"),
        ({}, {}, TypeError, r"`schedule`.*non-empty"),
        ({0.5: 1}, {}, TypeError, r"`schedule`.*integer"),
        ({0: "all"}, {}, TypeError, r"`schedule`.*integer"),
        ({0: True}, {}, TypeError, r"`schedule`"),
        ({-1: 1}, {}, ValueError, r"`schedule`.*non-negative"),
        ({0: -1}, {}, ValueError, r"`schedule`.*non-negative"),
        ({0: 1}, {"learning_rate_factor": 0.0}, ValueError, r"`learning_rate_factor`"),
        (
            {0: 1},
            {"learning_rate_factor": "half"},
            TypeError,
            r"`learning_rate_factor`",
        ),
        (
            {0: 1},
            {"keep_batchnorm_frozen": "no"},
            TypeError,
            r"`keep_batchnorm_frozen`",
        ),
    ],
)
def test_bad_arguments(schedule, kwargs, error, match):
    with pytest.raises(error, match=match):
        kdt.transfer.GradualUnfreezing(schedule, **kwargs)


def test_number_trainable():
    unfreezing = kdt.transfer.GradualUnfreezing({3: 2, 1: 1})
    assert [unfreezing.number_trainable(epoch) for epoch in range(5)] == [
        None,
        1,
        1,
        2,
        2,
    ]
