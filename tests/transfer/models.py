"""Small models shared by the transfer tests."""

import keras
import numpy as np


def mlp(sizes=(8, 8, 8, 1), input_dim=4, name=None, batchnorm=False):
    """A Sequential MLP; `batchnorm` adds a BatchNormalization after hidden layers."""
    layers = [keras.Input((input_dim,))]
    for i, size in enumerate(sizes):
        layers.append(keras.layers.Dense(size, name=f"{name or 'mlp'}_dense_{i}"))
        if batchnorm and i < len(sizes) - 1:
            layers.append(
                keras.layers.BatchNormalization(name=f"{name or 'mlp'}_bn_{i}")
            )
    return keras.Sequential(layers, name=name)


def nested(batchnorm=True):
    """A pretrained-style base (with BatchNormalization) used as one layer."""
    base = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, name="base_dense_0"),
            keras.layers.BatchNormalization(name="base_bn"),
            keras.layers.Dense(8, name="base_dense_1"),
        ],
        name="base",
    )
    model = keras.Sequential(
        [
            keras.Input((4,)),
            base,
            keras.layers.Dropout(0.1, name="head_dropout"),
            keras.layers.Dense(1, name="head"),
        ],
        name="outer",
    )
    return model, base


def data(n=32, input_dim=4, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, input_dim)).astype("float32")
    y = rng.normal(size=(n, outputs)).astype("float32")
    return x, y


def weights_by_path(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def trainable_names(model):
    return sorted(v.path for v in model.trainable_weights)
