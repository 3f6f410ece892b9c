"""`tf.distribute.MirroredStrategy` over 2 logical CPU devices: `fit` with
OneCycleScheduler, RReLU, MCDropout and `apply_max_norm` follows the same
schedule as on one device, and max-norm holds on every replica's weights.
Runs in one fresh process (`_distribute.py`)."""

import numpy as np
import pytest

from tests.reliability import _background
from tests.reliability._distribute import MAX_NORM
from tests.reliability.matrix import keys_for

pytestmark = pytest.mark.backends(
    "tensorflow", reason="tf.distribute.MirroredStrategy runs the TensorFlow trainer"
)

COMPONENTS = {
    "callbacks.OneCycleScheduler",
    "layers.RReLU",
    "layers.MCDropout",
    "constraints.apply_max_norm",
    "constraints.MaxNorm",  # what apply_max_norm installs
}


@pytest.fixture(scope="module")
def runs():
    results = _background.result("distribute")
    for name, result in results.items():
        assert "error" not in result, f"{name} run failed:\n{result['error']}"
    return results


def test_the_scenario_covers_the_matrix_rows():
    assert COMPONENTS == {param.values[0] for param in keys_for("distribute")}


def test_mirrored_schedule_equals_the_single_device_one(runs):
    single, mirrored = runs["single"], runs["mirrored"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert mirrored["iterations"] == single["iterations"] == 12
    assert set(mirrored["logs"]) == set(single["logs"]) == {"learning_rate", "momentum"}
    for name, values in single["logs"].items():
        assert mirrored["logs"][name] == pytest.approx(values, rel=1e-6), name
    assert mirrored["learning_rate"] == pytest.approx(single["learning_rate"])
    assert mirrored["momentum"] == pytest.approx(single["momentum"])
    assert np.all(np.isfinite(mirrored["loss"]))


def test_max_norm_holds_on_every_replica(runs):
    for name, run in runs.items():
        for layer, replicas in enumerate(run["kernel_norms"]):
            assert len(replicas) == run["replicas"]
            for norms in replicas:
                assert norms.max() <= MAX_NORM * (1 + 1e-5), (name, layer)
                # The inputs were scaled so that training pushes past the bound.
                assert norms.max() >= MAX_NORM * 0.99, (name, layer)
            for norms in replicas[1:]:
                np.testing.assert_array_equal(norms, replicas[0])
