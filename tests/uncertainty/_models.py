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
    """Identity that counts, in a variable, how often it actually runs."""

    def build(self, input_shape):
        self.calls = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="calls"
        )

    def call(self, inputs):
        self.calls.assign_add(1.0)
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
