"""Command line: ``python -m keras_dnntools demo`` (also ``keras-dnntools demo``).

`--help` and `--version` import neither Keras nor TensorFlow: they answer at
once. Only the `demo` command loads them, with TensorFlow's start-up logging
silenced (set `TF_CPP_MIN_LOG_LEVEL` yourself to see it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

from keras_dnntools._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-dnntools",
        description="keras_dnntools: drop-in Keras 3 components for training deep "
        "neural networks well.",
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-dnntools {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="train a baseline and the chapter's recipe on the digits data (offline)",
        description="Offline demo on scikit-learn's bundled digits data: a plain "
        "Keras baseline against the chapter's recipe (He init, RReLU, max-norm, "
        "1cycle, MC dropout), the learning-rate finder and the 'B on A' transfer "
        "experiment. Prints a results table and writes plots.",
    )
    demo.add_argument(
        "--epochs", type=int, default=40, help="training epochs (default: 40)"
    )
    demo.add_argument(
        "--output",
        default="demo_output",
        help="folder for the plots and results (default: ./demo_output)",
    )
    demo.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run that checks the demo works end to end (few epochs and "
        "samples): its table is labelled as such and makes no comparison",
    )
    return parser


# TensorFlow's C++ logging (absl): "I0000 00:00:... file.cc:31] message".
_FRAMEWORK_NOISE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]|WARNING: All log messages "
    r"before absl::InitializeLog|To enable the following instructions)"
)


@contextlib.contextmanager
def quiet_framework_start() -> Iterator[None]:
    """Drops TensorFlow's start-up logging from stderr while the demo runs.

    On a machine without a GPU, TensorFlow's C++ start-up prints lines such as
    `E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)` that are not
    errors. `TF_CPP_MIN_LOG_LEVEL=3` (unless the user set a level) silences
    those logged after start-up, but the lines written while the libraries
    load come before TensorFlow reads it, and on the JAX and PyTorch backends
    TensorFlow may load at any point (Keras's data utilities import it). So
    stderr (file descriptor 2) goes to a temporary file meanwhile and is
    replayed at the end without those log lines (everything else, warnings
    and tracebacks included, is kept).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [
                line
                for line in sink.read().decode(errors="replace").splitlines(True)
                if not _FRAMEWORK_NOISE.match(line)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.epochs < 1:
        parser.error(f"--epochs must be a positive integer. Received: {args.epochs}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer. Received: {args.seed}")
    try:
        with quiet_framework_start():
            from keras_dnntools.demo import run_demo

            run_demo(
                epochs=args.epochs,
                output=args.output,
                seed=args.seed,
                quick=args.quick,
            )
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
