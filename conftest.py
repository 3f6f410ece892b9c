"""Test-wide setup: quiet, single-threaded, deterministic TensorFlow.

This file sits at the repository root so that it also applies to the doctests
collected from the package (``pytest --doctest-modules``).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Tests must never reach the network (datasets, weights): fail fast if they try.
os.environ.setdefault("NO_PROXY", "*")

import keras
import numpy as np
import pytest
import tensorflow as tf

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)
keras.utils.disable_interactive_logging()


@pytest.fixture(autouse=True)
def _isolated_keras_state():
    """Every test starts from seed 0 with float32 and leaves no global state."""
    keras.utils.set_random_seed(0)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
    # free_memory=False: Keras's full garbage collection costs ~0.5 s a test once
    # TensorFlow is loaded (minutes over the suite); Python's own gc still runs.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    import keras_dnntools as kdt

    doctest_namespace.update(keras=keras, np=np, kdt=kdt)
