"""fine_tune: frozen phase, then unfrozen with discriminative 1cycle rates."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests.transfer.models import data, mlp, nested, weights_by_path


class EpochEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(weights_by_path(self.model))


def model_b_on_nested_a():
    model_a, _ = nested()
    model_b = kdt.transfer.reuse_layers(model_a, drop_top=1, head=keras.layers.Dense(1))
    model_b.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    return model_b


def test_fine_tune_recipe():
    model = model_b_on_nested_a()
    base = model.layers[0]
    initial = weights_by_path(model)
    x, y = data(64)
    recorder = EpochEnds()
    frozen, unfrozen = kdt.transfer.fine_tune(
        model,
        x,
        y,
        epochs=3,
        freeze_epochs=2,
        base_learning_rate=1e-2,
        learning_rate_mult=10,
        batch_size=16,
        verbose=0,
        callbacks=[recorder],
        validation_data=(x, y),
    )
    assert len(frozen.history["loss"]) == 2 and len(unfrozen.history["loss"]) == 3
    assert "val_mae" in unfrozen.history
    assert len(recorder.weights) == 5
    base_paths = [v.path for v in base.weights]
    head_path = model.layers[-1].kernel.path
    after_frozen = recorder.weights[1]
    for path in base_paths:
        np.testing.assert_array_equal(after_frozen[path], initial[path], err_msg=path)
    assert not np.array_equal(after_frozen[head_path], initial[head_path])
    final = recorder.weights[-1]
    kernel = base.get_layer("base_dense_0").kernel.path
    assert not np.array_equal(final[kernel], after_frozen[kernel])
    for statistic in ("moving_mean", "moving_variance"):
        path = getattr(base.get_layer("base_bn"), statistic).path
        np.testing.assert_array_equal(final[path], initial[path])
    # 1cycle peaks at the base rate in both phases.
    assert max(frozen.history["learning_rate"]) <= 1e-2 * (1 + 1e-6)
    assert max(unfrozen.history["learning_rate"]) == pytest.approx(1e-2, rel=0.2)
    # The model stays compiled with discriminative rates from 1e-3 to 1e-2.
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    rates = [float(sub.learning_rate) for sub in optimizer.optimizers]
    np.testing.assert_allclose(
        np.array(rates) / max(rates), [0.1, 10**-0.5, 1.0], rtol=1e-4
    )
    assert all(isinstance(sub, keras.optimizers.Adam) for sub in optimizer.optimizers)
    assert base.trainable and not base.get_layer("base_bn").trainable


def test_fully_trainable_model_trains_its_top_layer_first():
    model = mlp((8, 8, 1))
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss="mse")
    initial = weights_by_path(model)
    x, y = data(32)
    recorder = EpochEnds()
    kdt.transfer.fine_tune(
        model, x, y, epochs=1, batch_size=8, verbose=0, callbacks=[recorder]
    )
    after_frozen = recorder.weights[0]
    for layer in model.layers[:2]:
        np.testing.assert_array_equal(
            after_frozen[layer.kernel.path], initial[layer.kernel.path]
        )
    top = model.layers[2].kernel.path
    assert not np.array_equal(after_frozen[top], initial[top])
    assert all(layer.trainable for layer in model.layers)


def test_freeze_epochs_zero_skips_the_frozen_phase():
    model = model_b_on_nested_a()
    x, y = data(32)
    frozen, unfrozen = kdt.transfer.fine_tune(
        model, x, y, epochs=1, freeze_epochs=0, batch_size=8, verbose=0
    )
    assert frozen.history == {}
    assert len(unfrozen.history["loss"]) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, r"`epochs`"),
        ({"epochs": 1.5}, TypeError, r"`epochs`"),
        ({"epochs": 1, "freeze_epochs": -1}, ValueError, r"`freeze_epochs`"),
        ({"epochs": 1, "base_learning_rate": 0}, ValueError, r"`base_learning_rate`"),
        ({"epochs": 1, "learning_rate_mult": 0.5}, ValueError, r"`learning_rate_mult`"),
        ({"epochs": 1, "initial_epoch": 2}, ValueError, r"`initial_epoch`"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    model = model_b_on_nested_a()
    x, y = data(8)
    with pytest.raises(error, match=match):
        kdt.transfer.fine_tune(model, x, y, verbose=0, **kwargs)


def test_uncompiled_model_is_rejected():
    x, y = data(8)
    with pytest.raises(ValueError, match=r"`model`.*compiled"):
        kdt.transfer.fine_tune(mlp(), x, y, epochs=1)


def _values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _state(model):
    return (
        model.optimizer,
        _values(model.optimizer.variables),
        [layer.trainable for layer in model._flatten_layers()],
        _values(model.variables),
    )


def _assert_state(model, state):
    optimizer, optimizer_values, trainable, values = state
    assert model.optimizer is optimizer
    for got, value in zip(
        _values(model.optimizer.variables), optimizer_values, strict=True
    ):
        np.testing.assert_array_equal(got, value)
    assert [layer.trainable for layer in model._flatten_layers()] == trainable
    for got, value in zip(_values(model.variables), values, strict=True):
        np.testing.assert_array_equal(got, value)


def test_too_few_steps_is_refused_in_the_users_terms_before_anything_changes():
    model = model_b_on_nested_a()
    x, y = data(16)
    state = _state(model)
    with pytest.raises(ValueError, match=r"`freeze_epochs`.*1 x 1 = 1 optimizer steps"):
        kdt.transfer.fine_tune(model, x, y, epochs=1, batch_size=32, verbose=0)
    _assert_state(model, state)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, error, at_fit):
        super().__init__()
        self.error, self.at_fit, self.fits = error, at_fit, 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_train_batch_end(self, batch, logs=None):
        if self.fits == self.at_fit and batch == 1:
            raise self.error


@pytest.mark.parametrize("at_fit", [1, 2], ids=["frozen_phase", "unfrozen_phase"])
@pytest.mark.parametrize("error", [RuntimeError("bad"), KeyboardInterrupt()])
def test_fine_tune_that_raises_gives_the_model_back_as_it_was(error, at_fit):
    model = model_b_on_nested_a()
    x, y = data(64)
    model.fit(x, y, batch_size=16, verbose=0)  # a trained optimizer, built
    state = _state(model)
    with pytest.raises(type(error)):
        kdt.transfer.fine_tune(
            model,
            x,
            y,
            epochs=2,
            batch_size=16,
            verbose=0,
            callbacks=[_Interrupt(error, at_fit)],
        )
    _assert_state(model, state)
    model.fit(x, y, batch_size=16, verbose=0)  # still trains as compiled
