"""The chapter's "model B on model A" experiment, in miniature, on offline data.

Model A learns 8 of the 10 digits of `sklearn.datasets.load_digits` (it never
sees 4 and 9). Task B is odd vs even over all ten digits, with 40 labelled
examples (4 per digit). Model B reuses A's hidden layers: trained with them
frozen, then unfrozen at a lower rate. It must beat the same architecture
trained from scratch on the same 40 examples, on a held-out test split, for
every seed. (The two held-out digits alone would be too easy a task B: from
scratch already reaches 92-100% there.)
"""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt

datasets = pytest.importorskip("sklearn.datasets")

HELD_OUT_DIGITS = (4, 9)
HIDDEN = (128, 64)
NUM_LABELLED_PER_DIGIT = 4
NUM_TEST = 700
# The 40 examples are repeated so that an epoch has 20 steps of 20: fewer,
# longer epochs keep Keras's per-epoch overhead out of the run time.
REPEATS = 10
BATCH_SIZE = 20
FROZEN_EPOCHS, UNFROZEN_EPOCHS = 3, 5
SEEDS = (0, 1, 2, 3, 4)


def load():
    x, y = datasets.load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y


def network(num_outputs, activation):
    return keras.Sequential(
        [
            keras.Input((64,)),
            *[keras.layers.Dense(units, activation="relu") for units in HIDDEN],
            keras.layers.Dense(num_outputs, activation=activation),
        ]
    )


def accuracy(model, x, y):
    probabilities = model.predict(x, batch_size=len(x), verbose=0)[:, 0]
    return float(np.mean((probabilities > 0.5) == y))


def compile_model(model, learning_rate, loss):
    # Keras's default: compiled by JAX, plain graphs on TensorFlow's CPU.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)


def experiment(seed):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = load()
    order = rng.permutation(len(x))
    test, train = order[:NUM_TEST], order[NUM_TEST:]
    x_train, y_train = x[train], y[train]

    # Model A: 8 of the 10 digits.
    seen = ~np.isin(y_train, HELD_OUT_DIGITS)
    classes = np.array([d for d in range(10) if d not in HELD_OUT_DIGITS])
    model_a = network(len(classes), "softmax")
    compile_model(model_a, 1e-2, "sparse_categorical_crossentropy")
    model_a.fit(
        x_train[seen],
        np.searchsorted(classes, y_train[seen]),
        epochs=10,
        batch_size=64,
        verbose=0,
    )
    weights_a = [w.copy() for w in model_a.get_weights()]

    # Task B: odd vs even, 4 labelled examples per digit.
    labelled = np.concatenate(
        [
            rng.choice(np.flatnonzero(y_train == digit), NUM_LABELLED_PER_DIGIT, False)
            for digit in range(10)
        ]
    )
    x_b = np.repeat(x_train[labelled], REPEATS, axis=0)
    y_b = np.repeat((y_train[labelled] % 2).astype("float32"), REPEATS, axis=0)
    x_test, y_test = x[test], (y[test] % 2).astype("float32")

    model_b = kdt.transfer.reuse_layers(
        model_a, head=keras.layers.Dense(1, activation="sigmoid")
    )
    compile_model(model_b, 1e-2, "binary_crossentropy")
    model_b.fit(x_b, y_b, epochs=FROZEN_EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    kdt.transfer.unfreeze(model_b)
    kdt.transfer.recompile(model_b, learning_rate=1e-3)
    model_b.fit(x_b, y_b, epochs=UNFROZEN_EPOCHS, batch_size=BATCH_SIZE, verbose=0)

    scratch = network(1, "sigmoid")
    compile_model(scratch, 1e-2, "binary_crossentropy")
    scratch.fit(
        x_b,
        y_b,
        epochs=FROZEN_EPOCHS + UNFROZEN_EPOCHS,
        batch_size=BATCH_SIZE,
        verbose=0,
    )
    for before, after in zip(weights_a, model_a.get_weights(), strict=True):
        np.testing.assert_array_equal(after, before)  # A is untouched
    return accuracy(model_b, x_test, y_test), accuracy(scratch, x_test, y_test)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_b_on_a_beats_training_from_scratch(seed):
    transferred, from_scratch = experiment(seed)
    assert transferred > from_scratch, (
        f"seed {seed}: B on A reached {transferred:.3f} test accuracy, "
        f"from scratch {from_scratch:.3f}"
    )
