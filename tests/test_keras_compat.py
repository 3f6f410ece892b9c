"""Each private Keras contact of `keras_dnntools/_keras_compat.py` still works.

A failure here means Keras changed under us: fix `_keras_compat.py` first.
"""

import keras
import numpy as np

from keras_dnntools import _keras_compat

# ---------------------------------------------------------------------------
# training_in_layer_call (issue 13)
# ---------------------------------------------------------------------------


SEEN: list = []


class _Probe(keras.layers.Layer):
    """Records what `training_in_layer_call()` says inside its call."""

    def call(self, inputs):  # no `training` argument, like an activation
        SEEN.append(_keras_compat.training_in_layer_call())
        return inputs


def test_training_in_layer_call_follows_fit_and_predict():
    SEEN.clear()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), _Probe()])
    model.compile("sgd", "mse", run_eagerly=True)
    x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    SEEN.clear()
    model.fit(x, y, batch_size=4, verbose=0)
    # The train step's call says True (torch's trainer first builds the model
    # with one symbolic inference call, hence the last one).
    assert SEEN and SEEN[-1] is True, SEEN
    SEEN.clear()
    model.predict(x, verbose=0)
    assert SEEN == [False]
    SEEN.clear()
    model(x, training=True)
    assert SEEN == [True]
    assert _keras_compat.training_in_layer_call() is None  # outside any call
