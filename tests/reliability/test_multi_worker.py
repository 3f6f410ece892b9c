"""`tf.distribute.MultiWorkerMirroredStrategy`: 2 local workers, plain Keras.

Keras 3's `fit` fails under it (keras-team/keras#20585, open): "Attempt to
convert a value (PerReplica...) with an unsupported type". This test runs
plain Keras (none of our components) and is a strict expected failure: the
day Keras fixes it, the test passes, the suite fails, and we support the
strategy (see docs/guides/scaling-out.md).
"""

import numpy as np
import pytest

from tests.reliability import _processes

pytestmark = pytest.mark.backends(
    "tensorflow", reason="tf.distribute strategies run the TensorFlow trainer"
)


class KerasIssue20585(Exception):
    """The known failure of Keras 3 under MultiWorkerMirroredStrategy."""


@pytest.mark.xfail(
    strict=True,
    raises=KerasIssue20585,
    reason="keras-team/keras#20585: Keras 3 fit under MultiWorkerMirroredStrategy",
)
def test_plain_keras_fit_under_multi_worker_mirrored_strategy():
    try:
        results = _processes.run(
            "tests.reliability._tf_worker",
            "plain_fit",
            processes=2,
            env={"KERAS_BACKEND": "tensorflow"},
            timeout=120,
        )
    except AssertionError as error:
        if "PerReplica" in str(error):
            raise KerasIssue20585(str(error)[-600:]) from error
        raise  # any other failure is ours: not the expected one
    for result in results:
        assert result["replicas"] == 2
        assert np.all(np.isfinite(result["loss"]))
    np.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-6)
