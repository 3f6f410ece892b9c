"""The reliability folder: the background jobs.

The fresh-process checks run in the background (see `_background.py`),
started as soon as collection knows which tests are selected.

"""

from pathlib import Path

from tests.reliability import _background


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
