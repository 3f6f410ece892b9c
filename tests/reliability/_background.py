"""The fresh-process checks, run in the background on the other core.

Each job is a module of this folder run as ``python -m MODULE OUT.pkl`` in a
fresh process: building and loading the saved models (`_saved_models`), the
interrupted-and-resumed fits (`_resume`) and the MirroredStrategy run
(`_distribute`). `conftest.py` starts the jobs that the selected tests need as
soon as collection ends, so they overlap with the in-process checks (TensorFlow
runs single-threaded in the tests: one core stays free); a test then waits for
its job's result. Started on demand if no hook started it.
"""

from __future__ import annotations

import atexit
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 600  # each job alone: under 2 minutes

# job -> (module run in the fresh process, the test file that needs it)
JOBS = {
    "save_load": ("tests.reliability._saved_models", "test_save_load.py"),
    "resume": ("tests.reliability._resume", "test_resume.py"),
    "distribute": ("tests.reliability._distribute", "test_distribute.py"),
}

_running: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
_folder: list[Path] = []


def _workdir() -> Path:
    if not _folder:
        _folder.append(Path(tempfile.mkdtemp(prefix="kdt-reliability-")))
        atexit.register(stop_all)
    return _folder[0]


def start(name: str) -> None:
    """Starts job `name` unless it is already running or done."""
    if name in _running:
        return
    module, _ = JOBS[name]
    folder = _workdir()
    out, log = folder / f"{name}.pkl", folder / f"{name}.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(out)],
            cwd=ROOT,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    _running[name] = (process, out, log)


def start_for(test_files: set[str]) -> None:
    """Starts the jobs needed by tests of these files (names, not paths)."""
    for name, (_, test_file) in JOBS.items():
        if test_file in test_files:
            start(name)


def result(name: str):
    """Waits for job `name` (starting it if needed) and returns what it pickled."""
    start(name)
    process, out, log = _running[name]
    try:
        process.wait(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if process.returncode != 0:
        raise AssertionError(
            f"{JOBS[name][0]} failed (exit {process.returncode}):\n"
            + log.read_text()[-4000:]
        )
    with open(out, "rb") as file:
        return pickle.load(file)


def stop_all() -> None:
    """Stops the jobs still running (tests deselected or failed) and cleans up."""
    for process, _, _ in _running.values():
        if process.poll() is None:
            process.kill()
            process.wait()
    _running.clear()
    if _folder:
        shutil.rmtree(_folder.pop(), ignore_errors=True)
