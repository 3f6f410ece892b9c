"""`check` tells the chapter's problems apart, and raises no false alarm."""

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from keras_dnntools.diagnostics import _inspection
from tests.diagnostics import models as m

X, XS, Y = m.digits()


def _check(model, x=X, y=Y, **kwargs):
    return kdt.diagnostics.check(model, x, y, **kwargs)


def test_naive_sigmoid_is_vanishing_and_saturated():
    report = _check(m.naive_sigmoid())
    assert set(report.kinds()) == {"vanishing_gradients", "saturated_units"}
    vanishing = report.findings[0]
    # The bottom layers are the ones that starve.
    names = [row.name for row in report.layers]
    assert names.index(vanishing.layer) < len(names) // 2
    assert "He" in vanishing.remedy and "BatchNormalization" in vanishing.remedy


def test_he_relu_is_healthy():
    report = _check(m.he_relu())
    assert report.findings == [], str(report)
    assert "No problem found." in str(report)


def test_dead_relu_units_are_found_and_nothing_else():
    report = _check(m.dead_relu())
    assert report.kinds() == ["dead_units"]
    assert all(row.dead_fraction == 1.0 for row in report.layers[:-1])
    assert "leaky" in report.findings[0].remedy.lower()


def test_large_init_explodes():
    report = _check(m.large_init_relu())
    assert "exploding_gradients" in report.kinds()
    assert "vanishing_gradients" not in report.kinds()
    assert "clip" in report.findings[report.kinds().index("exploding_gradients")].remedy


def test_clipped_large_init_is_not_called_exploding():
    clipped = m.large_init_relu(optimizer=keras.optimizers.SGD(0.01, clipnorm=1.0))
    assert "exploding_gradients" not in _check(clipped).kinds()


def test_non_finite_loss_is_exploding():
    report = _check(m.he_relu(), np.where(X > 0.5, np.float32(1e38), X), Y)
    assert "exploding_gradients" in report.kinds()


def test_healthy_selu_net_is_self_normalizing():
    report = _check(m.lecun_selu(), XS)
    assert report.findings == [], str(report)
    stds = [row.activation_std for row in report.layers[:-1]]
    assert all(0.7 < std < 1.3 for std in stds), stds


@pytest.mark.parametrize(
    "variant, expected_layer_kind",
    [
        ({"batch_norm": True}, "BatchNormalization"),
        ({"dropout": lambda: keras.layers.Dropout(0.2)}, "Dropout"),
    ],
)
def test_selu_with_batchnorm_or_plain_dropout_is_not_self_normalizing(
    variant, expected_layer_kind
):
    report = _check(m.lecun_selu(**variant), XS)
    assert report.kinds() == ["not_self_normalizing"], str(report)
    assert expected_layer_kind in report.findings[0].message
    assert "AlphaDropout" in report.findings[0].remedy


def test_selu_with_alpha_dropout_is_fine():
    model = m.lecun_selu(dropout=lambda: keras.layers.AlphaDropout(0.1))
    assert _check(model, XS).findings == []


def test_selu_with_he_init_is_not_self_normalizing():
    report = _check(m.mlp("selu", "he_normal"), XS)
    assert "not_self_normalizing" in report.kinds()
    assert all("HeNormal" in f.message for f in report.findings)


def test_selu_on_raw_inputs_is_not_self_normalizing():
    report = _check(m.lecun_selu(), X * 16)
    assert report.kinds() == ["not_self_normalizing"]
    assert report.findings[0].layer is None
    assert "standardize" in report.findings[0].message


def test_saturation_threshold_both_sides():
    # A shallow tanh net on standardized inputs with Glorot init is not saturated.
    healthy = _check(m.mlp("tanh", "glorot_uniform", depth=3), XS)
    assert "saturated_units" not in healthy.kinds()
    large = m.mlp("tanh", keras.initializers.RandomNormal(stddev=1.0), depth=3)
    assert "saturated_units" in _check(large, XS).kinds()


def test_rows_match_numpy_statistics():
    model = m.mlp("sigmoid", "glorot_uniform", depth=2, units=8)
    report = _check(model, X, Y, batch_size=100)
    x, y = X[:100], Y[:100]
    # Independent reference: activations by NumPy from the weights.
    h, reference = x.astype("float64"), []
    for layer in model.layers[:-1]:
        kernel, bias = (np.asarray(w, "float64") for w in layer.get_weights())
        h = 1 / (1 + np.exp(-(h @ kernel + bias)))
        reference.append(h)
    for row, h in zip(report.layers[:-1], reference, strict=True):
        np.testing.assert_allclose(row.activation_mean, h.mean(), rtol=1e-5)
        np.testing.assert_allclose(row.activation_std, m.numpy_std(h), rtol=1e-4)
        expected = np.mean((h <= 0.025) | (h >= 0.975))
        np.testing.assert_allclose(row.saturated_fraction, expected)
    # Gradient norms against a hand-written backward pass of the same network.
    kernels = [np.asarray(layer.get_weights()[0], "float64") for layer in model.layers]
    biases = [np.asarray(layer.get_weights()[1], "float64") for layer in model.layers]
    logits = reference[-1] @ kernels[-1] + biases[-1]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    delta = (p - np.eye(10)[y]) / len(y)
    inputs = [x.astype("float64"), *reference]
    norms = []
    for i in reversed(range(len(kernels))):
        grad_w, grad_b = inputs[i].T @ delta, delta.sum(axis=0)
        norms.append(np.sqrt(np.sum(grad_w**2) + np.sum(grad_b**2)))
        if i:
            s = inputs[i]
            delta = (delta @ kernels[i].T) * s * (1 - s)
    norms.reverse()
    np.testing.assert_allclose(
        [row.gradient_norm for row in report.layers], norms, rtol=1e-4
    )


def test_dead_fraction_counts_units_dead_on_every_example():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(4, activation="relu")]
    )
    model.layers[0].set_weights(
        [np.array([[1, -1, 1, -1], [0, 0, 0, 0]], "float32"), np.zeros(4, "float32")]
    )
    # Units 0 and 2 fire for x > 0, units 1 and 3 for x < 0: none is dead on
    # mixed signs, units 1 and 3 are dead on positive inputs only.
    mixed = np.array([[1.0, 0], [-1.0, 0]], "float32")
    positive = np.array([[1.0, 0], [2.0, 0]], "float32")
    assert kdt.diagnostics.check(model, mixed).layers[0].dead_fraction == 0.0
    assert kdt.diagnostics.check(model, positive).layers[0].dead_fraction == 0.5


def test_check_leaves_the_model_unchanged():
    model = m.mlp(
        "relu",
        "he_normal",
        depth=2,
        batch_norm=True,
        dropout=lambda: keras.layers.Dropout(0.5, seed=1),
    )
    before = [keras.ops.convert_to_numpy(v) for v in model.variables]
    _check(model)
    after = [keras.ops.convert_to_numpy(v) for v in model.variables]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_activation_layers_after_a_linear_dense_are_followed():
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("sigmoid"),
            keras.layers.Dense(10),
        ]
    )
    watched = _inspection.watched_layers(model)
    assert [w.activation for w in watched] == ["sigmoid", "linear"]
    assert watched[0].output is model.layers[2].output


def test_report_table_and_repr():
    report = _check(m.naive_sigmoid())
    text = str(report)
    for row in report.layers:
        assert row.name in text
    assert "Remedy:" in text and "vanishing_gradients" in repr(report)


def test_bad_arguments():
    with pytest.raises(TypeError, match="`model`"):
        kdt.diagnostics.check("model", X)
    with pytest.raises(ValueError, match="`batch_size`"):
        kdt.diagnostics.check(m.he_relu(), X, batch_size=0)
    with pytest.raises(ValueError, match="`kind`"):
        kdt.diagnostics.Finding("slow", None, "", "")
