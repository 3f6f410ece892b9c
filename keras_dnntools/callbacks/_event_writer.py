"""TensorBoard event files without TensorFlow: the `tensorboard` package's writer."""

from __future__ import annotations

import time

import numpy as np


def require_tensorboard():
    """Returns ``(EventFileWriter, event_pb2, summary_pb2)`` or raises ImportError.

    Raises:
        ImportError: if the ``tensorboard`` package is not installed.
    """
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as error:
        raise ImportError(
            "Writing TensorBoard event files (`log_dir`) needs the `tensorboard` "
            "package, an optional dependency of keras_dnntools. Install it with: "
            "pip install tensorboard."
        ) from error
    return EventFileWriter, event_pb2, summary_pb2


class EventWriter:
    """Scalars and histograms into one TensorBoard event file of ``log_dir``."""

    def __init__(self, log_dir: str):
        file_writer, self._event_pb2, self._summary_pb2 = require_tensorboard()
        self._writer = file_writer(log_dir)

    def _add(self, value, step: int) -> None:
        summary = self._summary_pb2.Summary(value=[value])
        event = self._event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary
        )
        self._writer.add_event(event)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._add(self._summary_pb2.Summary.Value(tag=tag, simple_value=value), step)

    def histogram(self, tag: str, edges, counts, step: int) -> None:
        """A histogram from bin ``edges`` (n + 1) and ``counts`` (n)."""
        edges = np.asarray(edges, "float64")
        counts = np.asarray(counts, "float64")
        centers = (edges[:-1] + edges[1:]) / 2
        histogram = self._summary_pb2.HistogramProto(
            min=float(edges[0]),
            max=float(edges[-1]),
            num=float(counts.sum()),
            sum=float(np.sum(centers * counts)),
            sum_squares=float(np.sum(centers**2 * counts)),
            bucket_limit=[float(e) for e in edges[1:]],
            bucket=[float(c) for c in counts],
        )
        self._add(self._summary_pb2.Summary.Value(tag=tag, histo=histogram), step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
