"""`jit_compile=True` (XLA) for `fit` and `predict` with every layer, schedule,
scheduler callback and training helper; where the result must not depend on
XLA, it equals a non-XLA run."""

import pytest

from tests.reliability._drivers import run
from tests.reliability.matrix import keys_for


@pytest.mark.backends(
    "tensorflow",
    "jax",
    reason="jit_compile=True on torch is torch.compile (dynamo), which this matrix "
    "does not cover yet: minutes per model on a CPU, and failing cases to triage",
)
@pytest.mark.parametrize("key", keys_for("jit"))
def test_jit_compile(key):
    run(key, "jit")
