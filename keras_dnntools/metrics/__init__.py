"""kdt.metrics: calibration measures for probabilistic classifiers.

* `expected_calibration_error(y_true, y_prob, n_bins=15)`: a function.
* `ExpectedCalibrationError(n_bins=15)`: the same as a streaming
  `keras.metrics.Metric`, for ``model.compile(metrics=[...])``.
"""

from keras_dnntools.metrics.calibration import (
    ExpectedCalibrationError,
    expected_calibration_error,
)

__all__ = ["ExpectedCalibrationError", "expected_calibration_error"]
