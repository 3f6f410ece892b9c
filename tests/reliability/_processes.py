"""Starts a run of N local processes (127.0.0.1) and collects what each returns.

`run(module, scenario, processes, env=...)` starts ``python -m MODULE
SCENARIO INDEX COUNT PORTS OUT.pkl`` once per process, with free TCP ports of
127.0.0.1 chosen now (comma-separated, one per process), and returns one
result per process, in order: what the scenario pickled there. It waits at
most `timeout` seconds, gives up as soon as one process fails (the others
would wait on it), and stops every process it started on every exit path:
each runs in its own session and is killed as a group.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 180  # a bound for a loaded CI machine; a run takes 30-60 s
POLL_SECONDS = 0.1
# The process ids of the latest run (all stopped when `run` returns).
last_pids: list[int] = []


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports of 127.0.0.1 that nothing listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _wait(started: list, timeout: float) -> str | None:
    """None when every process exited with 0, else what went wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [process.poll() for process in started]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return f"process {failed[0]} exited with {codes[failed[0]]}"
        if all(code == 0 for code in codes):
            return None
        time.sleep(POLL_SECONDS)
    return f"ran over {timeout} s"


def run(
    module: str,
    scenario: str,
    processes: int = 2,
    *,
    env: dict | None = None,
    timeout: float = TIMEOUT_SECONDS,
):
    """Runs `scenario` of `module` in `processes` processes; their results.

    Raises:
        AssertionError: if a process fails or the run exceeds `timeout`
            seconds; the message holds the end of every process's log.
    """
    ports = ",".join(map(str, free_ports(processes)))
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="kdt-processes-") as folder:
        folder = Path(folder)
        started = []
        try:
            for index in range(processes):
                with open(folder / f"{index}.log", "w") as log:
                    started.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                module,
                                scenario,
                                str(index),
                                str(processes),
                                ports,
                                str(folder / f"{index}.pkl"),
                            ],
                            cwd=ROOT,
                            env=environment,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            last_pids[:] = [process.pid for process in started]
            failure = _wait(started, timeout)
        finally:
            for process in started:
                _stop(process)
        if failure is not None:
            logs = "\n".join(
                f"--- process {index} (exit {process.returncode}):\n"
                + (folder / f"{index}.log").read_text()[-3000:]
                for index, process in enumerate(started)
            )
            raise AssertionError(
                f"{module} {scenario!r} in {processes} processes: {failure}:\n{logs}"
            )
        results = []
        for index in range(processes):
            with open(folder / f"{index}.pkl", "rb") as file:
                results.append(pickle.load(file))
        return results
