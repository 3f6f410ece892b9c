"""Test-wide setup: quiet, single-threaded, deterministic Keras on every backend.

This file sits at the repository root so that it also applies to the doctests
collected from the package (``pytest --doctest-modules``). The backend comes
from ``KERAS_BACKEND`` (TensorFlow when unset); CI runs the suite once per
backend. A test that cannot apply to a backend says so with
``pytest.mark.backends("tensorflow", reason=...)``: it is skipped, with that
reason, on the others.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# One CPU thread for XLA (JAX) as for TensorFlow and torch.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
)
# JAX: many tests compile the same small models; XLA's compilations are kept
# on disk and shared by the pytest workers and the processes tests start. The
# key covers the program, the JAX version and the flags: a hit is the same
# executable. Set before the workers start, so that they inherit it.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(__file__), ".pytest_cache", "jax-compilations"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Tests must never reach the network (datasets, weights): fail fast if they try.
os.environ.setdefault("NO_PROXY", "*")

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
elif BACKEND == "torch":
    import torch

    torch.set_num_threads(1)
keras.utils.disable_interactive_logging()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backends(*names, reason): run only on these Keras backends; skipped with "
        "`reason` on the others",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker is None or BACKEND in marker.args:
            continue
        reason = marker.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: backends marker needs a reason")
        item.add_marker(pytest.mark.skip(reason=f"{BACKEND}: {reason}"))


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
