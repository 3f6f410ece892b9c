"""Command line: ``python -m keras_dnntools demo`` (also ``keras-dnntools demo``)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-dnntools",
        description="keras_dnntools: drop-in Keras 3 components for training deep "
        "neural networks well.",
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
        help="a fast smoke run: few epochs and samples (results are rougher)",
    )
    return parser


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
        from keras_dnntools.demo import run_demo

        run_demo(
            epochs=args.epochs, output=args.output, seed=args.seed, quick=args.quick
        )
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
