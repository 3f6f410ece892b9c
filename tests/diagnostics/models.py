"""The chapter's vanishing-gradient experiment on digits, as small models."""

import functools

import keras
import numpy as np


@functools.lru_cache(maxsize=1)
def digits():
    """``(x in [0, 1], standardized x, y)`` of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    mean, std = data.data.mean(axis=0), data.data.std(axis=0) + 1e-8
    standardized = ((data.data - mean) / std).astype("float32")
    return x, standardized, data.target.astype("int32")


def mlp(
    activation,
    initializer,
    *,
    depth=10,
    units=32,
    bias=None,
    batch_norm=False,
    dropout=None,
    logits=True,
    optimizer=None,
    seed=0,
):
    """A deep MLP on the 64 digits features, compiled with a sparse CE loss."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    for _ in range(depth):
        layers.append(
            keras.layers.Dense(
                units,
                activation=activation,
                kernel_initializer=initializer,
                bias_initializer=bias or "zeros",
            )
        )
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        if dropout is not None:
            layers.append(dropout())
    layers.append(keras.layers.Dense(10, activation=None if logits else "softmax"))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
    )
    return model


def naive_sigmoid(**kwargs):
    return mlp("sigmoid", keras.initializers.RandomNormal(stddev=1.0), **kwargs)


def he_relu(**kwargs):
    return mlp("relu", "he_normal", **kwargs)


def dead_relu(**kwargs):
    return mlp("relu", "he_normal", bias=keras.initializers.Constant(-5.0), **kwargs)


def large_init_relu(**kwargs):
    return mlp("relu", keras.initializers.RandomNormal(stddev=1.0), **kwargs)


def lecun_selu(**kwargs):
    return mlp("selu", "lecun_normal", **kwargs)


def numpy_std(values):
    values = np.asarray(values, dtype="float64")
    return float(np.sqrt(np.mean((values - values.mean()) ** 2)))
