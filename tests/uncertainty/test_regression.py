"""Regression with mc_predict: output_kind, log-likelihood, intervals, noise."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
from scipy import special, stats

import keras_dnntools as kdt
from tests.uncertainty._models import classifier, data

mc_predict = kdt.uncertainty.mc_predict


def _sigmoid_regressor():
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def _heteroscedastic(outputs=1, rate=0.2):
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    hidden = keras.layers.Dropout(rate)(hidden)
    return keras.Model(inputs, keras.layers.Dense(2 * outputs)(hidden))


def test_output_kind_says_regression_for_outputs_in_unit_range():
    model, x = _sigmoid_regressor(), data()
    assert mc_predict(model, x, 5, seed=0).output_kind == "binary"
    prediction = mc_predict(model, x, 5, seed=0, output_kind="regression")
    assert prediction.output_kind == "regression"
    assert not hasattr(prediction, "predictive_entropy")
    lower, upper = prediction.interval()
    assert (lower <= prediction.mean).all() and (prediction.mean <= upper).all()


def test_bad_output_kind_is_named():
    with pytest.raises(ValueError, match="`output_kind`"):
        mc_predict(classifier(), data(), 3, output_kind="poisson")
    odd = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dropout(0.2), keras.layers.Dense(3)]
    )
    with pytest.raises(ValueError, match=r"`output_kind`.*even"):
        mc_predict(odd, data(), 3, output_kind="heteroscedastic")


def test_categorical_and_binary_log_likelihood_match_numpy():
    model, x = classifier(), data(n=30)
    labels = np.random.default_rng(0).integers(0, 3, size=30)
    prediction = mc_predict(model, x, 40, seed=1, return_samples=True)
    p = prediction.samples.astype("float64")[:, np.arange(30), labels]
    want = np.log(p.mean(axis=0))
    np.testing.assert_allclose(prediction.log_likelihood(labels), want, rtol=1e-10)
    one_hot = np.eye(3)[labels]
    np.testing.assert_allclose(prediction.log_likelihood(one_hot), want, rtol=1e-10)
    binary = mc_predict(_sigmoid_regressor(), x, 40, seed=1, return_samples=True)
    y = labels % 2
    q = binary.samples[..., 0].astype("float64")
    want = np.log(np.where(y == 1, q, 1 - q).mean(axis=0))
    np.testing.assert_allclose(binary.log_likelihood(y), want, rtol=1e-10)
    with pytest.raises(ValueError, match="`y_true`"):
        prediction.log_likelihood(labels + 3)
    with pytest.raises(ValueError, match="`noise_std`"):
        prediction.log_likelihood(labels, noise_std=1.0)


def test_homoscedastic_log_likelihood_is_gal_and_ghahramanis_estimator():
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dropout(0.3), keras.layers.Dense(2)]
    )
    x = data(n=25)
    y = np.random.default_rng(2).normal(size=(25, 2))
    prediction = mc_predict(model, x, 50, seed=0, return_samples=True)
    tau = 4.0
    samples = prediction.samples.astype("float64")
    # Gal & Ghahramani's code: logsumexp(-0.5 tau (y - y_hat)^2) - log T
    # - 0.5 log 2 pi + 0.5 log tau, per output; independent outputs add up.
    per_output = (
        special.logsumexp(-0.5 * tau * (y[None] - samples) ** 2, axis=0)
        - np.log(50)
        - 0.5 * np.log(2 * np.pi)
        + 0.5 * np.log(tau)
    )
    got = prediction.log_likelihood(y, noise_std=tau**-0.5)
    joint = special.logsumexp(
        stats.norm.logpdf(y[None], samples, tau**-0.5).sum(axis=-1), axis=0
    ) - np.log(50)
    np.testing.assert_allclose(got, joint, rtol=1e-10)
    one_output = mc_predict(
        keras.Sequential(
            [keras.Input((5,)), keras.layers.Dropout(0.3), keras.layers.Dense(1)]
        ),
        x,
        50,
        seed=0,
        return_samples=True,
    )
    single = one_output.samples[..., 0].astype("float64")
    want = (
        special.logsumexp(-0.5 * tau * (y[None, :, 0] - single) ** 2, axis=0)
        - np.log(50)
        - 0.5 * np.log(2 * np.pi)
        + 0.5 * np.log(tau)
    )
    np.testing.assert_allclose(
        one_output.log_likelihood(y[:, 0], noise_std=tau**-0.5), want, rtol=1e-10
    )
    assert per_output.shape == (25, 2)
    with pytest.raises(ValueError, match="`noise_std`"):
        prediction.log_likelihood(y)
    with pytest.raises(ValueError, match="`noise_std`"):
        prediction.log_likelihood(y, noise_std=-1.0)
    with pytest.raises(ValueError, match="return_samples=True"):
        mc_predict(model, x, 5, seed=0).log_likelihood(y, noise_std=1.0)


def test_heteroscedastic_fields_and_log_likelihood():
    model, x = _heteroscedastic(outputs=2), data(n=30)
    prediction = mc_predict(
        model, x, 60, seed=0, return_samples=True, output_kind="heteroscedastic"
    )
    samples = prediction.samples.astype("float64")
    assert samples.shape == (60, 30, 4)
    means, log_var = samples[..., :2], samples[..., 2:]
    np.testing.assert_allclose(prediction.mean, means.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        prediction.epistemic_variance, means.var(0), rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(
        prediction.aleatoric_variance, np.exp(log_var).mean(0), rtol=1e-5
    )
    np.testing.assert_allclose(
        prediction.variance,
        prediction.aleatoric_variance + prediction.epistemic_variance,
        rtol=1e-6,
    )
    y = np.random.default_rng(1).normal(size=(30, 2))
    density = stats.norm.logpdf(y[None], means, np.sqrt(np.exp(log_var)))
    want = special.logsumexp(density.sum(-1), axis=0) - np.log(60)
    np.testing.assert_allclose(prediction.log_likelihood(y), want, rtol=1e-10)
    from_samples = kdt.uncertainty.MCPrediction.from_samples(
        samples, output_kind="heteroscedastic"
    )
    np.testing.assert_allclose(from_samples.variance, prediction.variance, rtol=1e-4)
    plain = mc_predict(model, x, 5, seed=0, output_kind="regression")
    assert not hasattr(plain, "aleatoric_variance")


def test_interval_coverage_of_the_samples():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1),
        ]
    )
    x = data(n=40)
    fitted = mc_predict(model, x, 400, seed=0)
    fresh = mc_predict(model, x, 400, seed=1, return_samples=True).samples
    for coverage in (0.5, 0.9):
        lower, upper = fitted.interval(coverage)
        inside = ((fresh >= lower) & (fresh <= upper)).mean()
        # 16,000 draws: a binomial sd of 0.004; the normal approximation of a
        # sum of 256 dropout terms is good to ~0.01.
        assert abs(inside - coverage) < 0.03, (coverage, inside)
    with pytest.raises(ValueError, match="`coverage`"):
        fitted.interval(1.0)
    with pytest.raises(ValueError, match="output_kind"):
        mc_predict(classifier(), data(), 3).interval()


def test_heteroscedastic_interval_holds_its_coverage_of_observations():
    model, x = _heteroscedastic(rate=0.05), data(n=200)
    prediction = mc_predict(
        model, x, 100, seed=0, return_samples=True, output_kind="heteroscedastic"
    )
    rng = np.random.default_rng(0)
    samples = prediction.samples.astype("float64")
    # Observations from the predictive distribution: a sample, then its noise.
    pick = rng.integers(0, 100, size=(50, 200))
    mu = samples[pick, np.arange(200), 0]
    sigma = np.sqrt(np.exp(samples[pick, np.arange(200), 1]))
    y = rng.normal(mu, sigma)
    lower, upper = prediction.interval(0.95)
    inside = ((y >= lower[:, 0]) & (y <= upper[:, 0])).mean()
    assert abs(inside - 0.95) < 0.015, inside


def _diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x, y = x[order].astype("float32"), y[order].astype("float32")
    x = (x - x[:340].mean(0)) / x[:340].std(0)
    mean, std = y[:340].mean(), y[:340].std()
    y = (y - mean) / std
    return (x[:340], y[:340]), (x[340:], y[340:])


def test_diabetes_mc_dropout_log_likelihood_beats_a_deterministic_pass():
    """Gal's protocol in small: 50 ReLU units, dropout before every Dense layer."""
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = _diabetes()
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dropout(0.05),
            keras.layers.Dense(50, activation="relu"),
            keras.layers.Dropout(0.05),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0)
    # The observation noise, from the training residuals (as a user would).
    train_pred = keras.ops.convert_to_numpy(model(x_train, training=False))[:, 0]
    noise_std = float(np.sqrt(np.mean((train_pred - y_train) ** 2)))
    prediction = mc_predict(model, x_test, 1000, seed=0, return_samples=True)
    mc_ll = prediction.log_likelihood(y_test, noise_std=noise_std).mean()
    point = keras.ops.convert_to_numpy(model(x_test, training=False))[:, 0]
    deterministic_ll = stats.norm.logpdf(y_test, point, noise_std).mean()
    assert mc_ll > deterministic_ll, (mc_ll, deterministic_ll)
    rmse = np.sqrt(np.mean((prediction.mean[:, 0] - y_test) ** 2))
    assert rmse < 0.85  # a trained model (the standardized target has sd 1)


def test_ten_thousand_samples_on_a_few_hundred_instances_takes_seconds():
    """Gal's UCI protocol: T = 10,000, one hidden layer of 50 units."""
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dropout(0.05),
            keras.layers.Dense(50, activation="relu"),
            keras.layers.Dropout(0.05),
            keras.layers.Dense(1),
        ]
    )
    x = data(n=300, inputs=8)
    mc_predict(model, x[:2], 10, seed=0, return_samples=True)  # builds, warms up
    start = time.perf_counter()
    prediction = mc_predict(model, x, 10_000, seed=0, return_samples=True)
    elapsed = time.perf_counter() - start
    assert prediction.samples.shape == (10_000, 300, 1)
    y = prediction.mean[:, 0]
    assert np.isfinite(prediction.log_likelihood(y, noise_std=1.0)).all()
    # Seconds on one CPU core; a generous bound for a loaded CI machine.
    assert elapsed < 60, elapsed
