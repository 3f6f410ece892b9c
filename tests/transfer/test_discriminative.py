"""discriminative_optimizer: groups, geometric rates, MultiOptimizer mapping."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dnntools as kdt
from tests.transfer.models import data, mlp, nested


def step_rates(model, optimizer):
    """The rate each Dense layer's kernel got in one plain-SGD step."""
    x, y = data(16, input_dim=model.inputs[0].shape[-1])
    model.compile(optimizer=optimizer, loss="mse")
    kernels = [
        layer.kernel for layer in kdt.transfer._weighted_layers.weighted_layers(model)
    ]
    before = [k.numpy().copy() for k in kernels]
    with tf.GradientTape() as tape:
        loss = keras.ops.mean((model(x) - y) ** 2)
    grads = tape.gradient(loss, kernels)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    rates = []
    for kernel, old, grad in zip(kernels, before, grads, strict=True):
        grad = grad.numpy()
        index = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
        rates.append((old[index] - kernel.numpy()[index]) / grad[index])
    return rates


@pytest.mark.backends(
    "tensorflow", reason="reference gradients come from tf.GradientTape"
)
def test_geometric_rates_bottom_to_top():
    model = mlp((8, 8, 8, 8, 1))
    optimizer = kdt.transfer.discriminative_optimizer(
        model, keras.optimizers.SGD(), learning_rate_range=(1e-4, 1e-2), num_groups=3
    )
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    rates = [float(sub.learning_rate) for sub in optimizer.optimizers]
    np.testing.assert_allclose(rates, [1e-4, 1e-3, 1e-2], rtol=1e-6)
    # Five layers in three groups: 2, 2, 1 (lower groups take the extra).
    np.testing.assert_allclose(
        step_rates(model, optimizer), [1e-4, 1e-4, 1e-3, 1e-3, 1e-2], rtol=1e-3
    )


@pytest.mark.backends(
    "tensorflow", reason="reference gradients come from tf.GradientTape"
)
def test_one_group_per_layer_and_single_group():
    model = mlp((8, 8, 1))
    optimizer = kdt.transfer.discriminative_optimizer(
        model, "sgd", learning_rate_range=(1e-3, 1e-1), num_groups=3
    )
    np.testing.assert_allclose(
        step_rates(model, optimizer), [1e-3, 1e-2, 1e-1], rtol=1e-3
    )
    single = kdt.transfer.discriminative_optimizer(
        model, "sgd", learning_rate_range=(1e-3, 1e-1), num_groups=1
    )
    assert [float(sub.learning_rate) for sub in single.optimizers] == pytest.approx(
        [0.1]
    )


def test_nested_model_and_batchnorm_follow_their_group():
    model, base = nested()
    optimizer = kdt.transfer.discriminative_optimizer(
        model, keras.optimizers.Adam(beta_1=0.8), learning_rate_range=(1e-4, 1e-2)
    )
    bottom, middle, top = optimizer.optimizers
    assert isinstance(bottom, keras.optimizers.Adam) and bottom.beta_1 == 0.8
    x, y = data(16)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, epochs=1, verbose=0)

    def owner(variable):
        for sub in optimizer.optimizers:
            if sub.built and any(v is variable for v in sub._trainable_variables):
                return sub
        return None

    assert owner(base.get_layer("base_dense_0").kernel) is bottom
    assert owner(base.get_layer("base_bn").gamma) is bottom
    assert owner(base.get_layer("base_dense_1").kernel) is middle
    assert owner(model.get_layer("head").kernel) is top


@pytest.mark.backends(
    "tensorflow",
    "torch",
    reason="reads every sub-optimizer's rate in on_train_batch_begin; Keras's JAX "
    "trainer holds the optimizer state outside its variables during fit()",
)
def test_one_cycle_scheduler_keeps_the_ratios():
    model = mlp()
    optimizer = kdt.transfer.discriminative_optimizer(
        model, keras.optimizers.SGD(momentum=0.9), learning_rate_range=(1e-3, 1e-1)
    )
    x, y = data(32)
    model.compile(optimizer=optimizer, loss="mse")
    rates = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            # The rate each sub-optimizer uses at the coming step.
            rates.append([float(sub.learning_rate) for sub in optimizer.optimizers])

    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[kdt.callbacks.OneCycleScheduler(0.1), Record()],
    )
    rates = np.array(rates)
    np.testing.assert_allclose(rates[:, 0] / rates[:, 2], 0.01, rtol=1e-5)
    np.testing.assert_allclose(rates[:, 1] / rates[:, 2], 0.1, rtol=1e-5)
    np.testing.assert_allclose(
        history.history["learning_rate"], rates[3::4, 2], rtol=1e-6
    )
    assert rates[:, 2].max() == pytest.approx(0.1, rel=1e-2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"learning_rate_range": (1e-2, 1e-4)},
            ValueError,
            r"`learning_rate_range`.*low <= high",
        ),
        (
            {"learning_rate_range": (0.0, 1e-2)},
            ValueError,
            r"`learning_rate_range`.*0 < low",
        ),
        ({"learning_rate_range": (-1e-3, 1e-2)}, ValueError, r"`learning_rate_range`"),
        ({"learning_rate_range": (1e-3,)}, ValueError, r"`learning_rate_range`.*pair"),
        (
            {"learning_rate_range": (1e-4, 1e-3, 1e-2)},
            ValueError,
            r"`learning_rate_range`",
        ),
        ({"learning_rate_range": 1e-3}, TypeError, r"`learning_rate_range`"),
        (
            {"learning_rate_range": (1e-3, "x")},
            TypeError,
            r"`learning_rate_range(\[1\])?`",
        ),
        (
            {"learning_rate_range": (1e-3, float("nan"))},
            ValueError,
            r"`learning_rate_range(\[1\])?`",
        ),
        (
            {"learning_rate_range": (1e-4, 1e-3), "num_groups": 5},
            ValueError,
            r"`num_groups`.*number of weighted layers \(4\).*num_groups=5",
        ),
        (
            {"learning_rate_range": (1e-4, 1e-3), "num_groups": 0},
            ValueError,
            r"`num_groups`",
        ),
        (
            {"learning_rate_range": (1e-4, 1e-3), "num_groups": 2.0},
            TypeError,
            r"`num_groups`",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kdt.transfer.discriminative_optimizer(mlp(), "adam", **kwargs)


def test_bad_optimizer_and_model():
    model = mlp()
    multi = kdt.transfer.discriminative_optimizer(
        model, "adam", learning_rate_range=(1, 2)
    )
    for optimizer in (
        multi,
        0.1,
        keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()),
    ):
        with pytest.raises(TypeError, match=r"`optimizer`"):
            kdt.transfer.discriminative_optimizer(
                model, optimizer, learning_rate_range=(1, 2)
            )
    no_weights = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5)])
    with pytest.raises(ValueError, match=r"`model`.*weighted layer"):
        kdt.transfer.discriminative_optimizer(
            no_weights, "adam", learning_rate_range=(1, 2)
        )


def test_save_and_load_keeps_the_groups(tmp_path):
    model, _ = nested()
    optimizer = kdt.transfer.discriminative_optimizer(
        model, keras.optimizers.SGD(momentum=0.9), learning_rate_range=(1e-3, 1e-1)
    )
    model.compile(optimizer=optimizer, loss="mse")
    x, y = data(16)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [len(sub.variables) for sub in loaded.optimizer.optimizers] == [
        len(sub.variables) for sub in optimizer.optimizers
    ]
    for saved, restored in zip(
        optimizer.variables, loaded.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    loaded.fit(x, y, epochs=1, verbose=0)


def test_same_layer_name_in_different_groups_is_rejected():
    base = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, name="twin"), keras.layers.Dense(8)],
        name="base",
    )
    model = keras.Sequential(
        [keras.Input((4,)), base, keras.layers.Dense(1, name="twin")]
    )
    with pytest.raises(ValueError, match=r"`model`.*rename"):
        kdt.transfer.discriminative_optimizer(
            model, "sgd", learning_rate_range=(1e-3, 1e-1), num_groups=3
        )
