"""`mixed_float16` and `mixed_bfloat16`: layers compute in low precision with
float32 variables, schedules and callbacks reach the optimizer through Keras's
`LossScaleOptimizer`, and results equal a float32 run where they must."""

import pytest

from tests.reliability._drivers import run
from tests.reliability.matrix import keys_for


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("key", keys_for("mixed_precision"))
def test_mixed_precision(key, policy):
    run(key, policy)
