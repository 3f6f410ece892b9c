"""mc_predict: right numbers, only dropout stochastic, any model, bad input."""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from keras_dnntools.uncertainty import _graph, _sampler
from keras_dnntools.uncertainty.monte_carlo import _COMPILED, _default_rows
from tests.uncertainty._models import CountCalls, classifier, data, reference

mc_predict = kdt.uncertainty.mc_predict


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


# -- the numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 7])
def test_fields_match_numpy_computed_from_the_samples(batch_size):
    model, x = classifier(), data(n=30)
    prediction = mc_predict(
        model, x, 25, seed=3, batch_size=batch_size, return_samples=True
    )
    assert prediction.samples.shape == (25, 30, 3)
    assert prediction.output_kind == "categorical"
    want = reference(prediction.samples)
    for name in ("mean", "std", "predictive_entropy", "expected_entropy"):
        got = getattr(prediction, name)
        assert got.shape == want[name].shape, name
        np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(
        prediction.mutual_information, want["mutual_information"], atol=1e-6
    )
    np.testing.assert_array_equal(prediction.predicted_class, want["predicted_class"])
    assert prediction.std.max() > 0.01, "dropout was not active"


def test_samples_only_on_request_and_same_statistics_either_way():
    model, x = classifier(), data()
    kept = mc_predict(model, x, 10, seed=5, return_samples=True)
    summary = mc_predict(model, x, 10, seed=5)
    with pytest.raises(AttributeError, match="return_samples=True"):
        summary.samples  # noqa: B018
    assert not hasattr(summary, "samples")
    np.testing.assert_array_equal(kept.mean, summary.mean)
    np.testing.assert_array_equal(kept.std, summary.std)


def test_each_sample_is_a_forward_pass_with_only_dropout_active():
    """A sample, with the dropout masks found back, equals the layers' maths."""
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dropout(0.5), keras.layers.Dense(2)]
    )
    x = data(n=8, inputs=6) + 3.0  # no zeros in the inputs
    prediction = mc_predict(model, x, 20, seed=0, return_samples=True)
    kernel, bias = (_numpy(w) for w in model.layers[1].weights)
    # Only the zero pattern is random; rebuild it from an identity model.
    probe = keras.Sequential([keras.Input((6,)), keras.layers.Dropout(0.5)])
    masks = mc_predict(probe, x, 20, seed=0, return_samples=True).samples
    np.testing.assert_allclose(prediction.samples, masks @ kernel + bias, rtol=1e-5)
    assert set(np.unique(masks / x)) == {0.0, 2.0}


# -- randomness ------------------------------------------------------------------------


def test_same_seed_same_result_and_other_seed_other_result():
    model, x = classifier(), data()
    first = mc_predict(model, x, 8, seed=11, return_samples=True)
    again = mc_predict(model, x, 8, seed=11, return_samples=True)
    other = mc_predict(model, x, 8, seed=12, return_samples=True)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, other.samples)


def test_seed_none_follows_keras_set_random_seed():
    model, x = classifier(), data()
    keras.utils.set_random_seed(4)
    first = mc_predict(model, x, 5).mean
    keras.utils.set_random_seed(4)
    np.testing.assert_array_equal(mc_predict(model, x, 5).mean, first)
    assert not np.array_equal(mc_predict(model, x, 5).mean, first)


def test_dropout_rate_and_scaling_are_keras_s():
    model = keras.Sequential([keras.Input((200,)), keras.layers.Dropout(0.3)])
    x = np.ones((50, 200), "float32")
    samples = mc_predict(model, x, 20, seed=0, return_samples=True).samples
    np.testing.assert_allclose(np.unique(samples), [0.0, 1 / 0.7], rtol=1e-6)
    dropped = float((samples == 0).mean())
    # 200,000 Bernoulli(0.3) draws: standard error 0.001.
    assert abs(dropped - 0.3) < 0.005


def test_masks_are_fresh_across_samples_and_instances():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5)])
    x = np.ones((6, 64), "float32")
    masks = mc_predict(model, x, 30, seed=1, return_samples=True).samples > 0
    for instance in range(6):  # T distinct masks per instance
        assert len({m.tobytes() for m in masks[:, instance]}) == 30
    for sample in range(30):  # distinct masks within a sample
        assert len({m.tobytes() for m in masks[sample]}) == 6
    # Independence across samples: agreement of two masks ~ 1/2.
    agreement = (masks[1:] == masks[:-1]).mean()
    assert abs(agreement - 0.5) < 0.03


def test_noise_shape_and_spatial_dropout_share_their_masks():
    x = np.ones((4, 5, 6), "float32")
    shared_time = keras.Sequential(
        [keras.Input((5, 6)), keras.layers.Dropout(0.5, noise_shape=(None, 1, 6))]
    )
    samples = mc_predict(shared_time, x, 10, seed=0, return_samples=True).samples
    assert (samples == samples[:, :, :1, :]).all()
    spatial = keras.Sequential(
        [keras.Input((5, 6)), keras.layers.SpatialDropout1D(0.5)]
    )
    samples = mc_predict(spatial, x, 10, seed=0, return_samples=True).samples
    assert (samples == samples[:, :, :1, :]).all()
    assert 0 < (samples == 0).mean() < 1
    whole_batch = keras.Sequential(
        [keras.Input((5, 6)), keras.layers.Dropout(0.5, noise_shape=(1, 5, 6))]
    )
    samples = mc_predict(whole_batch, x, 10, seed=0, return_samples=True).samples
    assert (samples == samples[:, :1]).all()  # one mask for every instance
    assert len({s.tobytes() for s in samples}) > 1  # ... but new each sample


def test_spatial_dropout_2d_channels_first():
    model = keras.Sequential(
        [
            keras.Input((3, 4, 4)),
            keras.layers.SpatialDropout2D(0.5, data_format="channels_first"),
        ]
    )
    samples = mc_predict(
        model, np.ones((5, 3, 4, 4), "float32"), 8, seed=0, return_samples=True
    ).samples
    flat = samples.reshape(8, 5, 3, 16)
    assert (flat == flat[..., :1]).all()


def test_alpha_dropout_keeps_mean_and_variance_like_keras():
    model = keras.Sequential([keras.Input((100,)), keras.layers.AlphaDropout(0.2)])
    x = np.random.default_rng(0).normal(size=(50, 100)).astype("float32")
    samples = mc_predict(model, x, 40, seed=0, return_samples=True).samples
    reference = np.stack([_numpy(model(x, training=True)) for _ in range(40)])
    assert abs(samples.mean() - reference.mean()) < 0.02
    assert abs(samples.std() - reference.std()) < 0.02
    assert abs(samples.std() - 1.0) < 0.03


# -- only dropout is stochastic ----------------------------------------------------


def _batchnorm_model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2),
        ]
    )
    batchnorm = model.layers[1]
    batchnorm.moving_mean.assign(np.full(8, 3.0, "float32"))
    batchnorm.moving_variance.assign(np.full(8, 4.0, "float32"))
    return model, batchnorm


def test_batchnorm_uses_and_keeps_its_moving_statistics():
    model, batchnorm = _batchnorm_model()
    x = data(n=64, inputs=4)
    before = [_numpy(w).copy() for w in model.weights]
    prediction = mc_predict(model, x, 400, seed=0)
    for was, now in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(_numpy(now), was, err_msg=now.path)
    # Dropout before a linear layer is unbiased: the MC mean is the inference
    # output (BatchNorm with moving statistics), up to sampling error.
    inference = _numpy(model(x, training=False))
    standard_error = prediction.std / np.sqrt(400)
    assert np.abs(prediction.mean - inference).max() < 5 * standard_error.max()
    # The seeds' loop, by contrast, normalizes with batch statistics.
    training = np.mean([_numpy(model(x, training=True)) for _ in range(50)], 0)
    assert np.abs(training - inference).max() > 0.5
    assert not np.allclose(_numpy(batchnorm.moving_mean), 3.0)


def test_model_is_left_as_it_was():
    model, x = classifier(), data()
    layers = model.layers
    nodes = [len(layer._inbound_nodes) for layer in layers]
    before = _numpy(model(x, training=False))
    mc_predict(model, x, 5, seed=0)
    assert [len(layer._inbound_nodes) for layer in layers] == nodes
    assert all("call" not in vars(layer) for layer in layers)
    np.testing.assert_array_equal(_numpy(model(x, training=False)), before)
    assert model.layers == layers


# -- model kinds -----------------------------------------------------------------------


def _expect_dropout_active(prediction):
    assert prediction.std.max() > 1e-3
    assert np.isfinite(prediction.mean).all()


def test_functional_model_with_branches_and_skip():
    inputs = keras.Input((5,))
    trunk = keras.layers.Dense(8, activation="relu")(inputs)
    left = keras.layers.Dropout(0.5)(trunk)
    right = keras.layers.Dense(8)(trunk)
    merged = keras.layers.Add()([keras.layers.Dense(8)(left), right, trunk])
    outputs = keras.layers.Dense(3, activation="softmax")(merged)
    model = keras.Model(inputs, outputs)
    prediction = mc_predict(model, data(), 20, seed=0, return_samples=True)
    _expect_dropout_active(prediction)
    np.testing.assert_allclose(prediction.samples.sum(-1), 1.0, rtol=1e-5)


def test_nested_models():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dropout(0.5), keras.layers.Dense(8)]
    )
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8)(inputs)
    outputs = keras.layers.Dense(2)(inner(hidden))
    functional = keras.Model(inputs, outputs)
    outer = keras.Sequential([keras.Input((5,)), functional, keras.layers.Dense(1)])
    for model in (functional, outer):
        _expect_dropout_active(mc_predict(model, data(), 10, seed=0))


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.dropout = keras.layers.Dropout(0.5)
        self.out = keras.layers.Dense(2)

    def call(self, inputs, training=None):
        return self.out(self.dropout(self.hidden(inputs), training=training))


def test_subclassed_model_is_sampled_and_restored():
    model = SubclassedNet()
    x = data()
    model(x)
    prediction = mc_predict(model, x, 20, seed=0, return_samples=True)
    _expect_dropout_active(prediction)
    again = mc_predict(model, x, 20, seed=0, return_samples=True)
    np.testing.assert_array_equal(prediction.samples, again.samples)
    assert "call" not in vars(model.dropout)
    # Inference is deterministic again afterwards.
    np.testing.assert_array_equal(_numpy(model(x)), _numpy(model(x)))


def test_patched_layers_are_restored_after_an_error():
    model = SubclassedNet()
    model(data())
    with pytest.raises(Exception):  # noqa: B017 - whatever Keras raises
        mc_predict(model, np.ones((4, 3), "float32"), 3)
    assert "call" not in vars(model.dropout)


def test_kdt_mc_layers_are_sampled_with_the_seed():
    model = keras.Sequential(
        [keras.Input((5,)), kdt.layers.MCDropout(0.5), keras.layers.Dense(3)]
    )
    first = mc_predict(model, data(), 10, seed=2).mean
    np.testing.assert_array_equal(mc_predict(model, data(), 10, seed=2).mean, first)


def test_multi_input_multi_output_model():
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    merged = keras.layers.Dropout(0.5)(keras.layers.Concatenate()([a, b]))
    model = keras.Model(
        [a, b],
        [
            keras.layers.Dense(2, activation="softmax")(merged),
            keras.layers.Dense(1)(merged),
        ],
    )
    x = [data(n=9, inputs=3), data(n=9, inputs=2, seed=1)]
    probabilities, values = mc_predict(model, x, 10, seed=0)
    assert probabilities.output_kind == "categorical"
    assert probabilities.mean.shape == (9, 2) and values.mean.shape == (9, 1)
    by_name = mc_predict(model, {"a": x[0], "b": x[1]}, 10, seed=0)
    np.testing.assert_array_equal(by_name[0].mean, probabilities.mean)


# -- the deterministic part runs once ----------------------------------------------


def _counting_trunk_model():
    counter, head = CountCalls(), CountCalls()
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(32, activation="relu"),
            counter,
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.5),
            head,
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return model, counter, head


def test_trunk_runs_once_per_chunk(monkeypatch):
    # One sample per loop step, so that the loop body runs the head.
    monkeypatch.setattr(_sampler, "_ROWS_PER_STEP", 1)
    model, counter, head = _counting_trunk_model()
    assert _graph.Interpreter(model).splits
    counter.calls = head.calls = 0  # building the model called them once
    mc_predict(model, data(n=40), 50, seed=0, batch_size=20)
    # Two chunks: at most two trunk runs (traces), and the head runs (or is
    # traced) at least twice as often: the first block and the loop body.
    assert 1 <= counter.calls <= 2
    assert head.calls >= 2 * counter.calls


def test_functional_trunk_with_skip_runs_once():
    counter, after = CountCalls(), CountCalls()
    inputs = keras.Input((5,))
    trunk = counter(keras.layers.Dense(16, activation="relu")(inputs))
    head = after(keras.layers.Dense(16)(keras.layers.Dropout(0.5)(trunk)))
    outputs = keras.layers.Dense(2)(keras.layers.Add()([head, trunk]))
    model = keras.Model(inputs, outputs)
    counter.calls = after.calls = 0  # building the model called them once
    _expect_dropout_active(mc_predict(model, data(), 30, seed=0))
    assert counter.calls == 1
    assert after.calls >= 1


def test_split_model_is_statistically_the_book_loop():
    """Trunk once + sampled head gives the same distribution as the seeds' loop."""
    model, _, _ = _counting_trunk_model()
    x = data(n=20)
    samples = 400
    ours = mc_predict(model, x, samples, seed=0)
    loop = np.stack([_numpy(model(x, training=True)) for _ in range(samples)])
    loop_mean, loop_std = loop.mean(0), loop.std(0)
    z = (ours.mean - loop_mean) / np.sqrt((ours.std**2 + loop_std**2) / samples)
    # 60 roughly standard normal z-scores: mean square ~ 1.
    assert 0.4 < float(np.mean(z**2)) < 2.0
    ratio = ours.std / loop_std
    assert 0.8 < float(np.median(ratio)) < 1.25


# -- output kinds ----------------------------------------------------------------------


def test_regression_outputs_have_mean_and_std_only():
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dropout(0.5), keras.layers.Dense(2)]
    )
    prediction = mc_predict(model, data() * 10, 20, seed=0, return_samples=True)
    assert prediction.output_kind == "regression"
    want = reference(prediction.samples)
    np.testing.assert_allclose(prediction.std, want["std"], rtol=1e-5, atol=1e-6)
    for name in (
        "predictive_entropy",
        "expected_entropy",
        "mutual_information",
        "predicted_class",
    ):
        with pytest.raises(AttributeError, match="regression"):
            getattr(prediction, name)


def test_binary_sigmoid_output():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    prediction = mc_predict(model, data(), 30, seed=0, return_samples=True)
    assert prediction.output_kind == "binary"
    p = prediction.samples.astype("float64")[..., 0]
    mean = p.mean(0)

    def bernoulli(q):
        return -(q * np.log(q) + (1 - q) * np.log(1 - q))

    np.testing.assert_allclose(
        prediction.predictive_entropy, bernoulli(mean), rtol=1e-5
    )
    np.testing.assert_allclose(
        prediction.expected_entropy, bernoulli(p).mean(0), rtol=1e-5
    )
    assert prediction.predictive_entropy.shape == (40,)
    np.testing.assert_array_equal(prediction.predicted_class, (mean > 0.5).astype(int))


def test_entropies_are_safe_at_probability_zero():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.layers[-1].kernel.assign(np.zeros((5, 3), "float32"))
    model.layers[-1].bias.assign(np.array([0.0, 200.0, -200.0], "float32"))
    prediction = mc_predict(model, data(), 10, seed=0)
    np.testing.assert_allclose(prediction.predictive_entropy, 0.0, atol=1e-6)
    np.testing.assert_allclose(prediction.mutual_information, 0.0, atol=1e-6)
    assert np.isfinite(prediction.expected_entropy).all()


# -- memory ----------------------------------------------------------------------------


def test_chunks_are_bounded_for_wide_models():
    wide = keras.Sequential(
        [keras.Input((512,)), keras.layers.Dense(4096), keras.layers.Dropout(0.5)]
    )
    rows = _default_rows(wide, 10**6)
    assert rows * 4 * (4096 * 2) <= 128 * 2**20
    assert _default_rows(classifier(), 10) == 10


def test_many_instances_in_small_chunks():
    model = classifier()
    x = data(n=2001)
    prediction = mc_predict(model, x, 3, seed=0, batch_size=500)
    assert prediction.mean.shape == (2001, 3)
    np.testing.assert_allclose(prediction.mean.sum(-1), 1.0, rtol=1e-5)


def test_verbose_shows_progress():
    mc_predict(classifier(), data(), 3, seed=0, batch_size=10, verbose=True)


# -- errors ----------------------------------------------------------------------------


def test_model_without_dropout_is_refused():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no dropout layer"):
        mc_predict(model, data(), 10)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"n_samples": -3}, ValueError, "n_samples"),
        ({"n_samples": 2.5}, TypeError, "n_samples"),
        ({"n_samples": True}, TypeError, "n_samples"),
        ({"n_samples": "10"}, TypeError, "n_samples"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"return_samples": 1}, TypeError, "return_samples"),
        ({"verbose": "yes"}, ValueError, "verbose"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, argument):
    with pytest.raises(error, match=f"`{argument}`"):
        mc_predict(classifier(), data(), **{"n_samples": 3, **kwargs})


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="`model`"):
        mc_predict(keras.layers.Dropout(0.5), data(), 3)
    with pytest.raises(ValueError, match="`x`"):
        mc_predict(classifier(), np.zeros((0, 5), "float32"), 3)
    a, b = keras.Input((3,)), keras.Input((2,))
    model = keras.Model(
        [a, b], keras.layers.Dropout(0.5)(keras.layers.Concatenate()([a, b]))
    )
    with pytest.raises(ValueError, match="`x`"):
        mc_predict(model, [np.ones((4, 3)), np.ones((5, 2))], 3)


# -- compiled once -----------------------------------------------------------------


def test_repeated_calls_reuse_the_compiled_function_until_the_model_changes():
    model = classifier()
    x = data()
    counter = CountCalls()
    model = keras.Sequential([*model.layers[:-1], counter, model.layers[-1]])
    mc_predict(model, x, 5, seed=0)
    (function,) = [f for _, f in _COMPILED[model].values()]
    calls = counter.calls
    mc_predict(model, x, 5, seed=1)
    assert [f for _, f in _COMPILED[model].values()] == [function]
    if keras.backend.backend() != "torch":  # torch runs eagerly: no trace
        assert counter.calls == calls  # no new trace
    before = mc_predict(model, x, 5, seed=0).std
    model.layers[1].rate = 0.0
    model.layers[3].rate = 0.0
    after = mc_predict(model, x, 5, seed=0)
    assert before.max() > 0 and after.std.max() < 1e-6  # the new rate is used


def test_compiled_functions_do_not_keep_the_model_alive():
    model = classifier()
    mc_predict(model, data(), 5, seed=0)
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None


@pytest.mark.parametrize("n_instances", [1, 2])
def test_a_single_instance_gets_independent_samples(n_instances):
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dropout(0.5)])
    x = np.ones((n_instances, 16), "float32")
    samples = mc_predict(model, x, 200, seed=0, return_samples=True).samples
    assert samples.shape == (200, n_instances, 16)
    assert len({s.tobytes() for s in samples[:, 0]}) > 190
    single = mc_predict(model, x, 1, seed=0, return_samples=True)
    assert single.samples.shape == (1, n_instances, 16)
    assert single.std.max() == 0.0
