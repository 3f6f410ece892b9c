"""Real data: on scikit-learn's digits, MC dropout beats one deterministic pass."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_dnntools as kdt


def _negative_log_likelihood(probabilities, labels):
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


@pytest.mark.slow
def test_mc_dropout_has_lower_nll_than_a_deterministic_pass():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    # A small training set trained long: the deterministic pass grows
    # over-confident on the test split, which is where MC averaging helps.
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, train_size=300, random_state=0, stratify=y
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    # 160 passes over the 300 instances, in few (cheap) Keras epochs.
    model.fit(np.tile(x_train, (20, 1)), np.tile(y_train, 20), epochs=8, verbose=0)

    deterministic = model.predict(x_test, verbose=0)
    prediction = kdt.uncertainty.mc_predict(model, x_test, n_samples=50, seed=0)

    deterministic_nll = _negative_log_likelihood(deterministic, y_test)
    mc_nll = _negative_log_likelihood(prediction.mean, y_test)
    # Measured over 6 training seeds: MC/deterministic NLL ratio 0.82-0.86.
    assert mc_nll < 0.95 * deterministic_nll, (mc_nll, deterministic_nll)
    accuracy = np.mean(prediction.predicted_class == y_test)
    assert accuracy > np.mean(deterministic.argmax(1) == y_test) - 0.01
    # Wrong predictions are the uncertain ones.
    wrong = prediction.predicted_class != y_test
    mutual_information = prediction.mutual_information
    assert mutual_information[wrong].mean() > 2 * mutual_information[~wrong].mean()
