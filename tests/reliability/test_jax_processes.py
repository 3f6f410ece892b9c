"""Two JAX processes on 127.0.0.1 under `keras.distribution`, against one.

Each scenario of `_jax_worker` runs once in a single process and once in 2
processes joined by `jax.distributed` (gloo CPU collectives, a free port),
`DataParallel` over both processes' devices, each process feeding its half of
every global batch (`ModelParallel` for the sharded-kernel case). Every
process must end with the single-process result: same global batches, same
weights (up to float32 reduction order), same schedule, same restores.
`_processes.run` bounds each run in time and stops every process it started.
"""

import functools
import os
import time

import numpy as np
import pytest

from tests.reliability import _processes
from tests.reliability._jax_worker import MAX_NORM, SCENARIOS

pytestmark = pytest.mark.backends(
    "jax",
    reason="multi-process training in Keras 3 is keras.distribution over "
    "jax.distributed; the workers run JAX whatever the suite's backend",
)

WORKER = "tests.reliability._jax_worker"
# One XLA thread per process (2 cores for 2 processes).
JAX = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
# float32 sums in another order (2 shards, then an all-reduce).
TOLERANCE = dict(rtol=1e-5, atol=2e-5)


# Scenarios run in groups, one launch of processes per group (each well
# under a minute): the imports and the joining are paid once per group.
GROUPS = (
    ("schedules", "finder", "unfreezing"),
    ("metric", "layers", "model_parallel", "mc_predict"),
)


@functools.cache
def _group_runs(group):
    (single,) = _processes.run(WORKER, ",".join(group), processes=1, env=JAX)
    pair = _processes.run(WORKER, ",".join(group), processes=2, env=JAX)
    assert single["devices"] == 1
    assert [run["process_index"] for run in pair] == [0, 1]
    assert [run["devices"] for run in pair] == [2, 2]
    return single["result"], [run["result"] for run in pair]


def _runs(scenario):
    """(the single-process result, [the result of each of 2 processes])."""
    (group,) = [group for group in GROUPS if scenario in group]
    single, pair = _group_runs(group)
    return single[scenario], [result[scenario] for result in pair]


def _assert_weights_close(actual, expected, what):
    assert len(actual) == len(expected), what
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_allclose(a, e, **TOLERANCE, err_msg=f"{what}[{index}]")


def _assert_identical_across_processes(first, second, what):
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"{what}[{index}]")


@pytest.mark.parametrize("name", ["one_cycle", "power", "exponential"])
def test_schedulers_give_the_single_process_weights(name):
    single, pair = _runs("schedules")
    expected = single[name]
    assert expected["iterations"] == 12  # 3 epochs of 4 global batches
    for process, run in enumerate(pair):
        result, what = run[name], f"{name}, process {process}"
        assert result["iterations"] == expected["iterations"], what
        # The schedule counts global steps: the same rate at every step.
        np.testing.assert_allclose(
            result["history"]["learning_rate"],
            expected["history"]["learning_rate"],
            rtol=1e-7,
            err_msg=what,
        )
        if "momentum" in expected["history"]:
            np.testing.assert_allclose(
                result["history"]["momentum"], expected["history"]["momentum"]
            )
        assert result["learning_rate"] == pytest.approx(expected["learning_rate"])
        assert result["momentum"] == pytest.approx(expected["momentum"])
        _assert_weights_close(result["weights"], expected["weights"], what)
    _assert_identical_across_processes(
        pair[0][name]["weights"], pair[1][name]["weights"], name
    )


@pytest.mark.parametrize("state", ["fresh", "trained", "callback"])
def test_the_finder_restores_both_processes(state):
    single, pair = _runs("finder")
    for process, result in enumerate([single[state], *(r[state] for r in pair)]):
        what = f"{state}, process {process}"
        (weights_before, optimizer_before) = result["before"]
        (weights_after, optimizer_after) = result["after"]
        _assert_identical_across_processes(weights_after, weights_before, what)
        for path, value in optimizer_before.items():
            np.testing.assert_array_equal(optimizer_after[path], value, err_msg=path)
        # A fresh optimizer is built by the sweep: its new slots hold their
        # initial values (zeros for SGD's momentums).
        for path in set(optimizer_after) - set(optimizer_before):
            assert state == "fresh", (what, path)
            assert not np.any(optimizer_after[path]), (what, path)
    # Both processes saw the same global losses, so they stopped together.
    first, second = (r[state] for r in pair)
    np.testing.assert_array_equal(first["learning_rates"], second["learning_rates"])
    np.testing.assert_array_equal(first["losses"], second["losses"])
    if state == "callback":  # the same global batches as the single process
        np.testing.assert_allclose(first["losses"], single[state]["losses"], rtol=1e-5)


def test_gradual_unfreezing_unfreezes_both_processes_at_the_same_epoch():
    single, pair = _runs("unfreezing")
    expected = [[False, False, True], [False, True, True], [True, True, True]]
    assert single["flags"] == expected
    for process, result in enumerate(pair):
        assert result["flags"] == expected, process
        _assert_weights_close(result["weights"], single["weights"], process)


def test_the_calibration_metric_is_global():
    single, pair = _runs("metric")
    # The single process's metric is the function on the whole data.
    assert single["evaluate"] == pytest.approx(single["reference"], rel=1e-5)
    for process, result in enumerate(pair):
        assert result["evaluate"] == pytest.approx(single["evaluate"], rel=1e-6), (
            process
        )
        assert result["fit"] == pytest.approx(single["fit"], rel=1e-5), process


def test_layers_and_max_norm_train_as_on_one_process():
    single, pair = _runs("layers")
    for process, result in enumerate(pair):
        _assert_weights_close(result["weights"], single["weights"], process)
        for norms in result["kernel_norms"]:
            assert norms.max() <= MAX_NORM * (1 + 1e-5), process
    # Training pushes at least one kernel onto the bound.
    assert max(n.max() for n in single["kernel_norms"]) >= MAX_NORM * 0.99


def test_max_norm_over_a_sharded_kernel_is_the_global_norm():
    single, pair = _runs("model_parallel")
    assert not single["sharded"]
    for process, result in enumerate(pair):
        assert result["sharded"], "dense_a's kernel should be split over 2 devices"
        _assert_weights_close(result["weights"], single["weights"], process)
        # Each shard holds half of every column: a per-shard norm would let
        # the whole column reach sqrt(2) times the bound.
        norms = result["kernel_norms"]
        assert norms.max() <= MAX_NORM * (1 + 1e-5), process
        assert norms.min() >= MAX_NORM * 0.99, process


def _totals_correlation(totals):
    """Lag-1 autocorrelation of a series."""
    centred = totals - totals.mean()
    return float(centred[1:] @ centred[:-1] / (centred @ centred))


def test_mc_predict_samples_each_process_shard_and_gathers_everything():
    single, pair = _runs("mc_predict")
    rows, samples = single["samples"].shape[1], single["samples"].shape[0]
    assert single["rows_sampled"] == rows
    # Each process samples its own half of the instances, no more.
    assert [result["rows_sampled"] for result in pair] == [rows // 2, rows // 2]
    first, second = pair
    for name in ("mean", "std", "samples", "mutual_information"):
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert first["samples"].shape == single["samples"].shape
    assert first["output_kind"] == single["output_kind"] == "categorical"
    assert first["reproducible"] and single["reproducible"]
    # Different masks from one process's...
    assert not np.array_equal(first["samples"], single["samples"])
    # ...but the same distribution: every mean within sampling error.
    error = np.sqrt((first["std"] ** 2 + single["std"] ** 2) / samples)
    assert np.all(np.abs(first["mean"] - single["mean"]) <= 5.5 * error + 1e-7)


def test_mc_predict_samples_are_independent_across_the_process_boundary():
    single, (first, _) = _runs("mc_predict")
    for result in (single, first):
        probabilities = result["samples"][..., 0]  # (T, instances)
        half = probabilities.shape[1] // 2
        totals = probabilities.sum(axis=1)
        # Independent instances: the variance of a sample's total is the sum
        # of the per-instance variances (F bounds for T = 300, ~99.9%).
        independent = (probabilities.var(axis=0, ddof=1)).sum()
        assert 0.72 <= totals.var(ddof=1) / independent <= 1.38
        # Independent samples: no correlation from one sample to the next.
        assert abs(_totals_correlation(totals)) <= 4 / np.sqrt(len(totals))
        # Process 0's instances and process 1's: uncorrelated sample by sample.
        left = probabilities[:, :half].sum(axis=1)
        right = probabilities[:, half:].sum(axis=1)
        assert abs(np.corrcoef(left, right)[0, 1]) <= 4 / np.sqrt(len(totals))


# Run on its own, in one process with 2 local devices.
ALONE = ("mc_local_devices",)


def test_every_scenario_runs_in_a_group():
    grouped = [name for group in GROUPS for name in group]
    assert sorted(SCENARIOS) == sorted(grouped + list(ALONE))


def test_a_failing_process_stops_the_run_and_leaves_nothing_running():
    start = time.monotonic()
    with pytest.raises(AssertionError, match="process 1 exited with 3"):
        _processes.run(WORKER, "one_fails", processes=2, env=JAX, timeout=60)
    assert time.monotonic() - start < 30  # not the 600 s process 0 would sleep
    assert len(_processes.last_pids) == 2
    for pid in _processes.last_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_mc_predict_samples_on_every_local_device():
    """One process with 2 CPU devices under `DataParallel`: each device samples
    its own chunks, each chunk with its own key, so the result is exactly the
    single-device one for the same `batch_size`."""
    devices = "--xla_force_host_platform_device_count=2"
    env = {**JAX, "XLA_FLAGS": f"{JAX['XLA_FLAGS']} {devices}"}
    (run,) = _processes.run(WORKER, "mc_local_devices", processes=1, env=env)
    result = run["result"]["mc_local_devices"]
    assert result["local_devices"] == 2
    # 200 rows in chunks of 64: two at a time, one per device, then 8 rows.
    sharded, default = result["placed"][:2], result["placed"][2:]
    assert [[rows for rows, _ in call] for call in sharded] == [[64, 64], [64, 8]]
    for call in sharded:
        assert [device for _, device in call] == ["cpu:0", "cpu:1"]
    np.testing.assert_allclose(
        result["samples"], result["one_device_samples"], rtol=1e-6, atol=1e-7
    )
    # The default batch size splits the rows evenly over the devices.
    assert [[rows for rows, _ in call] for call in default] == [[100, 100]]
    assert result["default_mean"].shape == result["one_device_mean"].shape
