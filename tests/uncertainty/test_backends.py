"""Under JAX and PyTorch, kdt (mc_predict included) never imports TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import pytest

_CODE = """
import sys
import numpy as np
import keras
import keras_dnntools as kdt
assert "tensorflow" not in sys.modules, "import keras_dnntools imported tensorflow"
model = keras.Sequential(
    [keras.Input((3,)), keras.layers.Dropout(0.5), keras.layers.Dense(2)]
)
prediction = kdt.uncertainty.mc_predict(model, np.ones((4, 3), "float32"), 3, seed=0)
assert prediction.mean.shape == (4, 2)
metric = kdt.metrics.ExpectedCalibrationError()
metric.update_state([0, 1], [[0.6, 0.4], [0.2, 0.8]])
kdt.uncertainty.to_mc_dropout(model)
print(sorted(m for m in ("tensorflow",) if m in sys.modules))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_no_tensorflow_import_under_other_backends(backend):
    if keras.backend.backend() != backend:
        # The child process picks its own backend: once per CI run is enough.
        pytest.skip(f"runs in the KERAS_BACKEND={backend} suite")
    env = {**os.environ, "KERAS_BACKEND": backend}
    out = subprocess.run(
        [sys.executable, "-c", _CODE],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
