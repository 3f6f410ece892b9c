"""Tiny models and data shared by the checks: a few units, a few steps."""

from __future__ import annotations

import keras
import numpy as np

BATCH_SIZE = 4


def numpy(value):
    """A tensor or Keras variable as a NumPy array (no `__array__` copy warning)."""
    return keras.ops.convert_to_numpy(value)


def scalar(value):
    return float(numpy(value))


def data(input_shape=(6,), n=8, outputs=2, seed=0):
    """Inputs with both signs (RReLU's negative side is exercised) and targets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = rng.normal(size=(n, outputs)).astype("float32")
    return x, y


def class_data(n=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, classes, size=(n,)).astype("int32")
    return x, y


def around(layer, input_shape=(6,)):
    """`Dense -> layer -> Flatten -> Dense`: the layer in a trainable model."""
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(4)(inputs)
    hidden = layer(hidden)
    hidden = keras.layers.Flatten()(hidden)
    # float32 outputs under mixed precision, as Keras's guide recommends.
    outputs = keras.layers.Dense(2, dtype="float32")(hidden)
    return keras.Model(inputs, outputs)


def dense_stack(*, batch_norm=False, dropout=False, softmax=False):
    """Three weighted layers (plus BatchNorm / Dropout when asked)."""
    layers = [keras.Input((6,)), keras.layers.Dense(5, activation="relu")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(4, activation="relu"))
    if dropout:
        layers.append(keras.layers.Dropout(0.5, seed=1))
    if softmax:
        layers.append(keras.layers.Dense(3, activation="softmax", dtype="float32"))
    else:
        layers.append(keras.layers.Dense(2, dtype="float32"))
    return keras.Sequential(layers)


def sgd(learning_rate=0.01):
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)


def compile_and_fit(model, x, y, *, optimizer=None, epochs=1, **kwargs):
    """Compiles (SGD with momentum, MSE) and fits a few steps."""
    compile_kwargs = {
        key: kwargs.pop(key)
        for key in ("jit_compile", "run_eagerly", "metrics", "loss")
        if key in kwargs
    }
    compile_kwargs.setdefault("loss", "mse")
    model.compile(optimizer=optimizer or sgd(), **compile_kwargs)
    return model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0, shuffle=False, **kwargs
    )
