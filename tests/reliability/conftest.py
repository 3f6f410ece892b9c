"""The reliability folder: cheaper isolation, and the background jobs.

The fresh-process checks run in the background (see `_background.py`),
started as soon as collection knows which tests are selected.

The root `_isolated_keras_state` ends each test with
`keras.backend.clear_session()`, whose full garbage collection costs ~0.5 s
a test once TensorFlow is imported: most of this folder's time budget over
its ~200 small tests. Overridden here with `free_memory=False`, which still
resets Keras's global state (names, seeds, dtype policy).
"""

from pathlib import Path

import keras
import pytest

from tests.reliability import _background


@pytest.fixture(autouse=True)
def _isolated_keras_state():
    keras.utils.set_random_seed(0)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
    keras.backend.clear_session(free_memory=False)


def pytest_collection_modifyitems(session, config, items):
    """Starts the background jobs the selected tests need; runs those tests last.

    The jobs (fresh processes) then overlap with every other test of the run,
    and their tests rarely wait.
    """
    here = Path(__file__).parent
    waiting = {test_file for _, test_file in _background.JOBS.values()}
    late = [
        item for item in items if item.path.parent == here and item.path.name in waiting
    ]
    if not config.option.collectonly:
        _background.start_for({item.path.name for item in late})
    if late:
        moved = {id(item) for item in late}
        items[:] = [item for item in items if id(item) not in moved] + late


def pytest_sessionfinish(session, exitstatus):
    _background.stop_all()
