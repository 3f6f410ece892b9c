"""mc_predict's samples are T independent passes: joint statistics, not marginals.

The 0.1 mask pool gave every per-instance statistic its right distribution but
shared masks across instances and samples; these tests fail on it (measured:
variance of the per-sample total 0.86 against 2.42, lag-1 autocorrelation
0.96). The reference is the independent-pass value, computed from the model's
own arithmetic in NumPy.
"""

from __future__ import annotations

import keras
import numpy as np

import keras_dnntools as kdt

mc_predict = kdt.uncertainty.mc_predict


def _linear_model(features=20, rate=0.3):
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dropout(rate),
            keras.layers.Dense(1, use_bias=False),
        ]
    )
    return model


def _exact_total_variance(model, x, rate):
    """Var of sum_i y_i when every instance has its own independent mask."""
    kernel = keras.ops.convert_to_numpy(model.layers[-1].kernel)[:, 0]
    scale = 1.0 / (1.0 - rate)
    per_instance = rate * (1 - rate) * scale**2 * ((x * kernel) ** 2).sum(axis=1)
    return float(per_instance.sum())


def test_copies_of_one_input_give_independent_totals_and_no_lag_correlation():
    rate, copies, samples = 0.3, 200, 600
    model = _linear_model(rate=rate)
    row = np.random.default_rng(0).normal(size=(1, 20)).astype("float32")
    x = np.repeat(row, copies, axis=0)
    drawn = mc_predict(model, x, samples, seed=0, return_samples=True).samples[..., 0]
    totals = drawn.sum(axis=1)
    want = _exact_total_variance(model, x, rate)
    # The sample variance of 600 normal totals has relative sd sqrt(2/599)=0.058.
    assert 0.8 < totals.var() / want < 1.2, (totals.var(), want)
    lag = np.corrcoef(totals[:-1], totals[1:])[0, 1]
    assert abs(lag) < 0.15  # sd 1/sqrt(600) = 0.041
    # Lag-1 across instances within a sample, too (the pool's diagonal).
    shifted = np.corrcoef(drawn[1:, :-1].ravel(), drawn[:-1, 1:].ravel())[0, 1]
    assert abs(shifted) < 0.03
    # Most values distinct (the pool gave 299 of 20,000).
    assert len(np.unique(drawn)) > 0.5 * drawn.size


def test_distinct_inputs_total_variance_matches_independent_passes():
    rate = 0.3
    model = _linear_model(rate=rate)
    x = np.random.default_rng(1).normal(size=(200, 20)).astype("float32")
    totals = mc_predict(model, x, 600, seed=2, return_samples=True).samples.sum(
        axis=(1, 2)
    )
    want = _exact_total_variance(model, x, rate)
    assert 0.8 < totals.var() / want < 1.2, (totals.var(), want)


def test_chunks_do_not_share_masks():
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dropout(0.5)])
    x = np.ones((12, 32), "float32")
    masks = mc_predict(model, x, 50, seed=0, batch_size=4, return_samples=True)
    flat = masks.samples.reshape(-1, 32)
    assert len({row.tobytes() for row in flat}) == flat.shape[0]


def test_agreement_of_masks_is_that_of_independent_bernoullis():
    rate = 0.25
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(rate)])
    x = np.ones((50, 64), "float32")
    keep = mc_predict(model, x, 40, seed=3, return_samples=True).samples > 0
    want = (1 - rate) ** 2 + rate**2
    pairs = {
        "same instance, next sample": (keep[1:], keep[:-1]),
        "next instance, same sample": (keep[:, 1:], keep[:, :-1]),
        "next instance, previous sample": (keep[1:, 1:], keep[:-1, :-1]),
        "next instance, next sample": (keep[1:, :-1], keep[:-1, 1:]),
    }
    for name, (a, b) in pairs.items():
        # ~125,000 pairs: standard error ~0.0013.
        assert abs((a == b).mean() - want) < 0.01, name


def test_batch_shared_noise_shape_gives_one_mask_per_sample():
    """noise_shape (1, ...): the instances of a sample share a mask (as Keras)."""
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dropout(0.5, noise_shape=(1, 16))]
    )
    x = np.ones((5, 16), "float32")
    keep = mc_predict(model, x, 60, seed=0, return_samples=True).samples > 0
    assert (keep == keep[:, :1]).all()  # shared within each sample
    assert len({sample[0].tobytes() for sample in keep}) > 55  # fresh per sample
