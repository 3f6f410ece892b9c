"""Every component under `tf.distribute.MirroredStrategy` on 2 logical CPUs.

Each scenario of `_distribute.py` runs once on one device and once mirrored,
in one fresh process (in the background, `_background.py`). Mirrored, every
component must do what it does on one device: the same schedule and weights
(up to float32 reduction order), the same restores, statistics of the global
batch (not of one replica's share), and random layers that draw independent
masks on each replica.
"""

import numpy as np
import pytest

from tests.reliability import _background
from tests.reliability._distribute import MAX_NORM, SCENARIOS
from tests.reliability.matrix import keys_for

pytestmark = pytest.mark.backends(
    "tensorflow", reason="tf.distribute.MirroredStrategy runs the TensorFlow trainer"
)

# Each matrix row with the "distribute" check -> the scenario that covers it.
COVERED_BY = {
    "layers.MCDropout": "training",
    "layers.MCAlphaDropout": "layers",
    "layers.MCSpatialDropout1D": "layers",
    "layers.MCSpatialDropout2D": "layers",
    "layers.MCSpatialDropout3D": "layers",
    "layers.RReLU": "training",
    "constraints.MaxNorm": "training",  # what apply_max_norm installs
    "constraints.apply_max_norm": "training",
    "schedules.PowerSchedule": "schedules",
    "schedules.ExponentialSchedule": "schedules",
    "schedules.PiecewiseConstantSchedule": "schedules",
    "schedules.OneCycleSchedule": "schedules",
    "schedules.OneCycleMomentum": "schedules",
    "callbacks.OneCycleScheduler": "training",
    "callbacks.PowerScheduler": "schedulers",
    "callbacks.ExponentialScheduler": "schedulers",
    "callbacks.release": "schedulers",
    "callbacks.LearningRateFinder": "finder",
    "callbacks.find_learning_rate": "finder",
    "callbacks.TrainingMonitor": "diagnostics",
    "transfer.freeze": "transfer",
    "transfer.unfreeze": "transfer",
    "transfer.clone_with_weights": "transfer",
    "transfer.reuse_layers": "transfer",
    "transfer.recompile": "transfer",
    "transfer.GradualUnfreezing": "transfer",
    "transfer.discriminative_optimizer": "transfer",
    "transfer.fine_tune": "transfer",
    "uncertainty.mc_predict": "uncertainty",
    "uncertainty.to_mc_dropout": "uncertainty",
    "metrics.ExpectedCalibrationError": "metric",
    "diagnostics.check": "diagnostics",
    "initializers.lsuv": "diagnostics",
}
# float32 sums in another order (each replica's half, then an all-reduce).
CLOSE = dict(rtol=2e-5, atol=2e-6)


@pytest.fixture(scope="module")
def runs():
    results = _background.result("distribute")
    assert set(results) == set(SCENARIOS)
    return results


def _pair(runs, scenario):
    pair = runs[scenario]
    for name, result in pair.items():
        assert "error" not in result, f"{scenario}, {name}:\n{result['error']}"
    return pair["single"], pair["mirrored"]


def _assert_all_close(actual, expected, what):
    assert len(actual) == len(expected), what
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_allclose(a, e, **CLOSE, err_msg=f"{what}[{index}]")


def _assert_identical(actual, expected, what):
    assert len(actual) == len(expected), what
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_array_equal(a, e, err_msg=f"{what}[{index}]")


def test_the_scenarios_cover_the_matrix_rows():
    rows = {param.values[0] for param in keys_for("distribute")}
    assert rows == set(COVERED_BY)
    assert set(COVERED_BY.values()) <= set(SCENARIOS)


def test_mirrored_one_cycle_equals_the_single_device_one(runs):
    single, mirrored = _pair(runs, "training")
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert mirrored["iterations"] == single["iterations"] == 12
    assert set(mirrored["logs"]) == set(single["logs"]) == {"learning_rate", "momentum"}
    for name, values in single["logs"].items():
        assert mirrored["logs"][name] == pytest.approx(values, rel=1e-6), name
    assert mirrored["learning_rate"] == pytest.approx(single["learning_rate"])
    assert mirrored["momentum"] == pytest.approx(single["momentum"])
    assert np.all(np.isfinite(mirrored["loss"]))


def test_max_norm_holds_on_every_replica(runs):
    for name, run in zip(("single", "mirrored"), _pair(runs, "training"), strict=True):
        for layer, replicas in enumerate(run["kernel_norms"]):
            assert len(replicas) == run["replicas"]
            for norms in replicas:
                assert norms.max() <= MAX_NORM * (1 + 1e-5), (name, layer)
                # The inputs were scaled so that training pushes past the bound.
                assert norms.max() >= MAX_NORM * 0.99, (name, layer)
            for norms in replicas[1:]:
                np.testing.assert_array_equal(norms, replicas[0])


def test_random_layers_train_and_draw_independently_on_each_replica(runs):
    single, mirrored = _pair(runs, "layers")
    assert set(single) == set(mirrored)
    for name, result in mirrored.items():
        assert np.all(np.isfinite(result["loss"])) and result["finite"], name
        first, second = result["draws"]
        assert first.shape == second.shape
        # The same inputs on both replicas: the same masks on both would make
        # the two halves of every global batch see identical noise.
        assert not np.array_equal(first, second), name
        # Independent draws: at rate 0.5 about half the elements agree (a
        # random slope never does); the same masks would agree everywhere.
        assert np.mean(first == second) < 0.75, name
        changed = (first != -1.0).mean()  # dropped, rescaled or a random slope
        assert changed > 0.2, name
        assert len(single[name]["draws"]) == 1


def test_schedules_as_optimizer_rates_give_the_single_device_weights(runs):
    single, mirrored = _pair(runs, "schedules")
    assert (
        set(single)
        == set(mirrored)
        == {
            "PowerSchedule",
            "ExponentialSchedule",
            "PiecewiseConstantSchedule",
            "OneCycleSchedule",
            "OneCycleMomentum",
        }
    )
    for name, expected in single.items():
        actual = mirrored[name]
        assert actual["iterations"] == expected["iterations"] == 8, name
        assert actual["rate"] == pytest.approx(expected["rate"], rel=1e-6), name
        _assert_all_close(actual["weights"], expected["weights"], name)


def test_schedulers_give_the_single_device_rates_and_weights(runs):
    single, mirrored = _pair(runs, "schedulers")
    for name in ("power", "exponential"):
        expected, actual = single[name], mirrored[name]
        assert actual["iterations"] == expected["iterations"] == 8, name
        np.testing.assert_allclose(
            actual["learning_rate"], expected["learning_rate"], rtol=1e-6
        )
        assert expected["learning_rate"][1] < expected["learning_rate"][0]
        _assert_all_close(actual["weights"], expected["weights"], name)


def test_release_after_a_failed_mirrored_fit(runs):
    single, mirrored = _pair(runs, "schedulers")
    expected, actual = single["release"], mirrored["release"]
    assert actual["released"] == expected["released"]
    # The rate of the last step taken, then a plain fit at that constant rate.
    assert actual["rate"] == pytest.approx(expected["rate"], rel=1e-6)
    assert actual["rate_after_fit"] == actual["rate"]
    assert actual["steps"] == expected["steps"] == 4
    np.testing.assert_allclose(actual["loss"], expected["loss"], rtol=1e-5)


def test_the_finder_restores_every_replica_exactly(runs):
    single, mirrored = _pair(runs, "finder")
    for run in (single, mirrored):
        weights, slots = run["before"]
        for when in ("after_function", "after_callback"):
            after_weights, after_slots = run[when]
            _assert_identical(after_weights, weights, when)
            assert set(after_slots) == set(slots), when
            for path, value in slots.items():
                np.testing.assert_array_equal(after_slots[path], value, path)
        # A freshly compiled model: restored, and its next fit is the twin's.
        before, after = run["fresh"]
        _assert_identical(after, before, "fresh")
        _assert_all_close(run["fresh_then_fit"], run["twin_fit"], "fresh fit")
    # The same curve: the losses are the global batch's.
    for key in ("function_losses", "callback_losses"):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-5)
    np.testing.assert_allclose(
        mirrored["function_rates"], single["function_rates"], rtol=1e-6
    )


def test_transfer_helpers_do_what_they_do_on_one_device(runs):
    single, mirrored = _pair(runs, "transfer")
    for run in (single, mirrored):
        assert run["clone_equal"]
        # GradualUnfreezing {0: 1, 1: 2, 2: 3}: one more weighted layer per epoch.
        assert run["trainable_at"] == [
            [False, False, True],
            [False, True, True],
            [True, True, True],
        ]
        assert run["bottom_kept"]  # freeze(until=0) + recompile
        assert run["all_trainable"]  # unfreeze
    for key in ("frozen_before", "unfrozen", "recompiled", "fine_tuned"):
        _assert_all_close(mirrored[key], single[key], key)
    np.testing.assert_allclose(
        mirrored["fine_tune_loss"], single["fine_tune_loss"], rtol=1e-5
    )


def test_the_calibration_metric_is_the_global_value(runs):
    single, mirrored = _pair(runs, "metric")
    assert mirrored["replicas"] == 2
    np.testing.assert_allclose(
        mirrored["probabilities"], single["probabilities"], rtol=1e-6
    )
    for run in (single, mirrored):
        assert run["evaluated"] == pytest.approx(run["function"], abs=1e-6)
    assert mirrored["evaluated"] == pytest.approx(single["evaluated"], abs=1e-6)


def test_mc_predict_shards_its_chunks_over_the_replicas(runs):
    single, mirrored = _pair(runs, "uncertainty")
    # batch_size=64 over 300 rows: chunks 0-3 two at a time (one per
    # replica), then the last one alone; nothing on one device.
    assert mirrored["fixed_shares"] == [[64, 64], [64, 64], [44]]
    assert single["fixed_shares"] == []
    # Each chunk keeps its own key: exactly the single-device samples.
    np.testing.assert_allclose(mirrored["samples"], single["samples"], **CLOSE)
    np.testing.assert_allclose(mirrored["mean"], single["mean"], **CLOSE)
    assert mirrored["reproducible"] and single["reproducible"]
    # The default batch size splits the rows evenly over the replicas.
    assert mirrored["default_shares"] == [[150, 150]]
    assert mirrored["default_mean"].shape == single["default_mean"].shape
    # The replicas' sampling runs on both devices.
    assert {"device:CPU:0", "device:CPU:1"} <= set(mirrored["devices"])
    for run in (single, mirrored):
        assert run["converted_stochastic"] and run["converted_finite"]


def test_monitor_check_and_lsuv_measure_the_global_batch(runs):
    single, mirrored = _pair(runs, "diagnostics")
    _assert_all_close(mirrored["lsuv"], single["lsuv"], "lsuv")
    np.testing.assert_array_equal(mirrored["monitor_steps"], [0, 1, 2, 3])
    np.testing.assert_array_equal(mirrored["monitor_steps"], single["monitor_steps"])
    assert len(mirrored["monitor"]) == len(single["monitor"]) == 3
    for layer, (actual, expected) in enumerate(
        zip(mirrored["monitor"], single["monitor"], strict=True)
    ):
        assert set(actual) == set(expected)
        for stat, values in expected.items():
            # Not one replica's half: the statistics of the global batch.
            np.testing.assert_allclose(
                actual[stat], values, rtol=1e-4, atol=1e-6, err_msg=f"{layer} {stat}"
            )
    np.testing.assert_allclose(mirrored["check"], single["check"], rtol=1e-4)
    assert mirrored["findings"] == single["findings"]
    _assert_all_close(mirrored["weights"], single["weights"], "weights")
