"""`.keras` save, then `load_model(safe_mode=True)` in a fresh process.

Every row with the `save_load` check gets a tiny model around its component,
trained a few steps and saved; ONE fresh Python process then loads all of them
with no `custom_objects` (importing `keras_dnntools` only, as a user does).
Both sides are measured with `_probe.probe` (see `_saved_models.py`, run in the
background while the in-process checks run). Compared: our classes come back
(nothing dropped to a default), configs, weights, optimizer state and the rate
at the current step, inference outputs (or that MC layers stay stochastic), and
one more training step, so an optimizer driven by our schedule continues with
the same next rate.
"""

import keras
import numpy as np
import pytest

from keras_dnntools._registry import serializable_objects
from tests.reliability import _background
from tests.reliability.matrix import MATRIX, keys_for

SERIALIZABLE = serializable_objects()


@pytest.fixture(scope="module")
def loaded():
    return _background.result("save_load")


def _assert_same_state(key, where, want, got):
    assert got["trainable"] == want["trainable"], f"{key}: trainable flags {where}"
    if "weights" in want:
        assert len(got["weights"]) == len(want["weights"]), f"{key}: weights {where}"
        for a, b in zip(want["weights"], got["weights"], strict=True):
            np.testing.assert_allclose(
                b, a, rtol=1e-6, atol=1e-7, err_msg=f"{key}: weights {where}"
            )
    if "iterations" not in want:
        return
    assert got["iterations"] == want["iterations"], f"{key}: iterations {where}"
    assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-6), (
        f"{key}: learning rate {where}"
    )
    if "optimizer_variables" in want:
        assert len(got["optimizer_variables"]) == len(want["optimizer_variables"])
        for a, b in zip(
            want["optimizer_variables"], got["optimizer_variables"], strict=True
        ):
            np.testing.assert_allclose(
                b, a, rtol=1e-6, atol=1e-7, err_msg=f"{key}: optimizer state {where}"
            )


@pytest.mark.parametrize("key", keys_for("save_load"))
def test_save_and_load_in_a_fresh_process(loaded, key):
    want, got = loaded[key]
    assert "error" not in want, f"building/saving {key} failed:\n{want['error']}"
    assert got is not None, f"{key}: not reported by the fresh process"
    assert "error" not in got, f"loading {key} failed:\n{got['error']}"
    if key in SERIALIZABLE:
        name = keras.saving.get_registered_name(SERIALIZABLE[key])
        assert name in want["classes"], f"{key}: {name} not in the saved configs"
    assert got["classes"] == want["classes"]
    assert got["model_config"] == want["model_config"], f"{key}: model config"
    assert got["optimizer_config"] == want["optimizer_config"], f"{key}: optimizer"
    _assert_same_state(key, "after loading", want["before"], got["before"])
    assert got["stochastic"] == want["stochastic"] == MATRIX[key].stochastic, (
        f"{key}: MC layers must stay stochastic, others deterministic, after loading"
    )
    if "predict" in want:
        np.testing.assert_allclose(got["predict"], want["predict"], rtol=1e-6)
    if "evaluate" in want:
        assert got["evaluate"] == pytest.approx(want["evaluate"], rel=1e-5)
    if "after_one_step" in want:
        _assert_same_state(
            key, "after one more step", want["after_one_step"], got["after_one_step"]
        )
