"""Expected calibration error: against a NumPy reference, streaming, in fit."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import keras_dnntools as kdt

ece = kdt.metrics.expected_calibration_error


def reference_ece(labels, probs, n_bins):
    """The textbook definition, bin by bin (Guo et al., 2017)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype="float64")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    total = 0.0
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        members = (confidence > low) & (confidence <= high)
        if b == 0:
            members |= confidence == 0
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            total += members.mean() * gap
    return total


def random_case(n=500, classes=4, seed=0, sharpness=1.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 3 * sharpness
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return labels, probs.astype("float32")


@pytest.mark.parametrize("n_bins", [1, 5, 15, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_function_matches_the_reference(n_bins, seed):
    labels, probs = random_case(seed=seed, sharpness=0.5 + seed)
    np.testing.assert_allclose(
        ece(labels, probs, n_bins), reference_ece(labels, probs, n_bins), atol=1e-12
    )


def test_hand_computed_value_and_label_formats():
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    # bins of width 0.2: {.95, .85} acc 1/2 conf .9; {.65} acc 1; {.55} acc 1
    want = (2 * 0.4 + 0.35 + 0.45) / 4
    assert ece(labels, probs, n_bins=5) == pytest.approx(want)
    assert ece(np.eye(2)[labels], probs, n_bins=5) == pytest.approx(want)
    assert ece(labels[:, None], probs, n_bins=5) == pytest.approx(want)
    assert ece(labels.tolist(), probs.tolist(), n_bins=5) == pytest.approx(want)
    # One column: P(class 1) of a binary classifier.
    assert ece(labels, probs[:, 1], n_bins=5) == pytest.approx(want)


def test_perfectly_calibrated_and_fully_wrong():
    probs = np.tile([[0.75, 0.25]], (400, 1))
    labels = np.array([0] * 300 + [1] * 100)
    assert ece(labels, probs) == pytest.approx(0.0, abs=1e-12)
    assert ece(np.ones(400, int), np.tile([[1.0, 0.0]], (400, 1))) == 1.0


def test_metric_streaming_equals_one_shot():
    labels, probs = random_case(n=999, seed=3)
    metric = kdt.metrics.ExpectedCalibrationError(n_bins=10)
    for start in range(0, 999, 64):
        metric.update_state(labels[start : start + 64], probs[start : start + 64])
    streamed = float(metric.result())
    metric.reset_state()
    metric.update_state(labels, probs)
    assert float(metric.result()) == pytest.approx(streamed, abs=1e-7)
    assert streamed == pytest.approx(ece(labels, probs, 10), abs=1e-6)


def test_metric_accepts_one_hot_and_sample_weights():
    labels, probs = random_case(n=60, seed=4)
    metric = kdt.metrics.ExpectedCalibrationError(n_bins=6)
    metric.update_state(np.eye(4)[labels], probs)
    assert float(metric.result()) == pytest.approx(ece(labels, probs, 6), abs=1e-6)
    # Integer weights count instances that many times.
    weights = np.arange(60) % 3
    weighted = kdt.metrics.ExpectedCalibrationError(n_bins=6)
    weighted.update_state(labels, probs, sample_weight=weights)
    repeated = np.repeat(np.arange(60), weights)
    assert float(weighted.result()) == pytest.approx(
        ece(labels[repeated], probs[repeated], 6), abs=1e-6
    )
    empty = kdt.metrics.ExpectedCalibrationError()
    assert float(empty.result()) == 0.0


def test_metric_in_compile_fit_and_evaluate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(
        "adam",
        "sparse_categorical_crossentropy",
        metrics=[kdt.metrics.ExpectedCalibrationError(n_bins=5)],
    )
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert len(history.history["expected_calibration_error"]) == 2
    result = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    want = ece(y, model.predict(x, verbose=0), n_bins=5)
    assert result["expected_calibration_error"] == pytest.approx(want, abs=1e-5)


def test_config_round_trip_and_saved_model(tmp_path):
    metric = kdt.metrics.ExpectedCalibrationError(n_bins=7, name="ece")
    config = metric.get_config()
    assert json.loads(json.dumps(config)) == config
    assert config == {"name": "ece", "dtype": "float32", "n_bins": 7}
    restored = kdt.metrics.ExpectedCalibrationError.from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(metric)
    assert keras.saving.deserialize_keras_object(serialized).n_bins == 7

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=[metric])
    model.fit(np.ones((4, 3)), np.array([0, 1, 0, 1]), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    values = loaded.evaluate(np.ones((4, 3)), np.array([0, 1, 0, 1]), verbose=0)
    assert np.isfinite(values).all()


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda: ece([0, 1], [[0.5, 0.5], [0.5, 0.5]], n_bins=0), ValueError, "n_bins"),
        (
            lambda: ece([0, 1], [[0.5, 0.5], [0.5, 0.5]], n_bins=2.0),
            TypeError,
            "n_bins",
        ),
        (lambda: ece([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]]), ValueError, "y_true"),
        (lambda: ece(np.eye(3)[:2], [[0.5, 0.5], [0.5, 0.5]]), ValueError, "y_true"),
        (lambda: ece([0, 2], [[0.5, 0.5], [0.5, 0.5]]), ValueError, "y_true"),
        (lambda: ece([0, 0.5], [[0.5, 0.5], [0.5, 0.5]]), ValueError, "y_true"),
        (lambda: ece([0, 1], [[1.5, -0.5], [0.5, 0.5]]), ValueError, "y_prob"),
        (lambda: ece([0, 1], [[0.5, np.nan], [0.5, 0.5]]), ValueError, "y_prob"),
        (lambda: ece([0, 1], [[[0.5, 0.5]], [[0.5, 0.5]]]), ValueError, "y_prob"),
        (lambda: ece([], np.zeros((0, 2))), ValueError, "y_prob"),
        (lambda: kdt.metrics.ExpectedCalibrationError(0), ValueError, "n_bins"),
        (lambda: kdt.metrics.ExpectedCalibrationError("5"), TypeError, "n_bins"),
    ],
)
def test_bad_input_names_the_argument(call, error, argument):
    with pytest.raises(error, match=f"`{argument}`"):
        call()


def test_metric_state_is_float32_and_exact_after_many_batches():
    metric = kdt.metrics.ExpectedCalibrationError(n_bins=4)
    assert {v.dtype for v in metric.variables} == {"float32"}
    probs = np.array([[0.9, 0.1]], "float32")
    # A plain float32 count stops at 2**24: 2**24 + 1 rounds back to 2**24.
    metric.update_state([0], probs, sample_weight=[2.0**24])
    for _ in range(64):
        metric.update_state([1], probs)
    counts = keras.ops.convert_to_numpy(metric.bin_counts.value())
    assert float(counts.sum()) == 2.0**24 + 64
    correct = keras.ops.convert_to_numpy(metric.bin_correct.value())
    assert float(correct.sum()) == 2.0**24
    # ECE: bin of 0.9 holds 2**24 right and 64 wrong: |acc - conf| exact.
    want = abs(2.0**24 / (2.0**24 + 64) - 0.9)
    assert float(metric.result()) == pytest.approx(want, rel=1e-5)


def test_metric_streaming_many_small_batches_matches_float64():
    labels, probs = random_case(n=3000, seed=5)
    metric = kdt.metrics.ExpectedCalibrationError(n_bins=15)
    for start in range(0, 3000, 7):
        metric.update_state(labels[start : start + 7], probs[start : start + 7])
    assert float(metric.result()) == pytest.approx(ece(labels, probs, 15), abs=2e-6)


def test_metric_refuses_logits_unnormalized_rows_and_bad_labels():
    metric = kdt.metrics.ExpectedCalibrationError()
    with pytest.raises(ValueError, match=r"`y_pred`.*softmax"):
        metric.update_state([0, 1], [[2.0, -1.0], [0.3, 1.2]])  # logits
    with pytest.raises(ValueError, match=r"`y_pred`.*sum to 1"):
        metric.update_state([0, 1], [[0.5, 0.2], [0.3, 0.3]])
    with pytest.raises(ValueError, match="`y_true`"):
        metric.update_state([0, 2], [[0.5, 0.5], [0.3, 0.7]])
    with pytest.raises(ValueError, match="`y_true`"):
        metric.update_state([0, -1], [[0.5, 0.5], [0.3, 0.7]])
    assert float(metric.result()) == 0.0  # nothing was counted
    with pytest.raises(ValueError, match=r"`y_prob`.*sum to 1"):
        ece([0, 1], [[0.5, 0.2], [0.3, 0.3]])


def test_metric_in_compiled_fit_turns_nan_on_logits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])  # logits
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[kdt.metrics.ExpectedCalibrationError()],
    )
    if keras.backend.backend() == "torch":
        # Keras runs torch eagerly: the values are there, so it raises.
        with pytest.raises(ValueError, match="`y_pred`"):
            model.evaluate(x, y, batch_size=8, verbose=0)
        return
    result = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert np.isnan(result["expected_calibration_error"])


def test_sequence_predictions_with_per_instance_weights():
    labels, probs = random_case(n=60, seed=6)
    sequences = probs.reshape(20, 3, 4)
    sequence_labels = labels.reshape(20, 3)
    weights = np.arange(20) % 3
    metric = kdt.metrics.ExpectedCalibrationError(n_bins=6)
    metric.update_state(sequence_labels, sequences, sample_weight=weights)
    repeated = np.repeat(np.arange(60), np.repeat(weights, 3))
    want = ece(labels[repeated], probs[repeated], 6)
    assert float(metric.result()) == pytest.approx(want, abs=1e-6)
    per_position = kdt.metrics.ExpectedCalibrationError(n_bins=6)
    per_position.update_state(
        sequence_labels, sequences, sample_weight=np.repeat(weights, 3).reshape(20, 3)
    )
    assert float(per_position.result()) == pytest.approx(want, abs=1e-6)
