"""Each private Keras contact of keras_dnntools, tested where Keras could change.

These fail when a Keras release moves what `keras_dnntools/_keras_compat.py`
relies on.
"""

import keras
import numpy as np

from keras_dnntools import _keras_compat

# ---------------------------------------------------------------------------
# Train-step instrumentation (TrainingMonitor)
# ---------------------------------------------------------------------------


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


class _Handshake(keras.callbacks.Callback):
    """Announces each train-function call, like TrainingMonitor does."""

    def __init__(self):
        super().__init__()
        self.live, self.token, self.steps_seen = True, False, 0

    def on_train_begin(self, logs=None):
        def make_step(original):
            def step(*args):
                self.steps_seen += 1  # trace time on TF/JAX, every step on torch
                return original(*args)

            return step

        _keras_compat.install_train_step(
            self.model, make_step, lambda: self.live, self.handshake
        )

    def handshake(self):
        token, self.token = self.token, False
        return token

    def on_train_batch_begin(self, batch, logs=None):
        self.token = True

    def on_train_end(self, logs=None):
        self.live = False
        _keras_compat.uninstall_train_step(self.model)


def test_trainers_build_the_train_function_from_the_instance_train_step():
    # Keras builds `train_function` from `model.train_step` (an instance
    # attribute shadows the method) and calls `model.train_function` after
    # `on_train_batch_begin`.
    model = _model()
    callback = _Handshake()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[callback], verbose=0)
    assert callback.steps_seen >= 1
    assert not _keras_compat.is_instrumented(model)
    assert model.train_function is None


def test_the_guard_uninstalls_on_a_call_nobody_announced():
    model = _model()
    callback = _Handshake()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # builds a plain function
    callback.set_model(model)
    callback.on_train_begin()
    assert _keras_compat.is_instrumented(model)
    before = model.get_weights()
    model.train_on_batch(x[:4], y[:4])  # no on_train_batch_begin: not ours
    assert not _keras_compat.is_instrumented(model)
    assert not np.allclose(before[0], model.get_weights()[0])


def test_make_train_function_accepts_force_and_sets_train_function():
    model = _model()
    model.make_train_function(force=True)
    assert callable(model.train_function)
    assert "train_step" not in vars(model)  # a method, not an instance attribute
