"""What differs between Keras backends, for the tests that need to know."""

import keras
import pytest

BACKEND = keras.backend.backend()
STEPS_PER_EXECUTION_REASON = (
    "Keras's torch trainer runs one step per execution (steps_per_execution=1)"
)


def steps_per_execution(n):
    """`n`, or 1 on torch, where Keras accepts no other value."""
    return 1 if BACKEND == "torch" else n


def skip_steps_per_execution_on_torch(n):
    """Skips a test about `steps_per_execution=n > 1` on torch, saying why."""
    if n > 1 and BACKEND == "torch":
        pytest.skip(STEPS_PER_EXECUTION_REASON)
