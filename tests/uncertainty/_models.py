"""Small models and a NumPy reference shared by the uncertainty tests."""

from __future__ import annotations

import keras
import numpy as np


def classifier(rate=0.3, classes=3, inputs=5, hidden=16):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dropout(rate),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dropout(rate),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


def data(n=40, inputs=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, inputs)).astype("float32")


class CountCalls(keras.layers.Layer):
    """Identity that counts how often its Python `call` runs.

    Eagerly (PyTorch) that is every execution; in a `tf.function` or a
    `jax.jit` it is every trace, where a layer inside the sampling loop is
    called twice (the first block, then the loop body) and a layer computed
    once per chunk once.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs


def reference(samples):
    """Every MCPrediction field from the samples, computed plainly in NumPy."""
    p = np.asarray(samples, dtype="float64")
    mean = p.mean(axis=0)
    std = np.sqrt(((p - mean) ** 2).mean(axis=0))

    def entropy(q):
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(q > 0, q * np.log(q), 0.0)
        return -terms.sum(axis=-1)

    predictive = entropy(mean)
    expected = np.mean([entropy(sample) for sample in p], axis=0)
    return {
        "mean": mean,
        "std": std,
        "predictive_entropy": predictive,
        "expected_entropy": expected,
        "mutual_information": predictive - expected,
        "predicted_class": mean.argmax(axis=-1),
    }
