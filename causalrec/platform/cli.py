"""The ``causalrec`` command-line interface.

Each subcommand lives beside the part of the system it drives (``causalrec.simulators.cli`` for
``simulate``, ...) as a module with ``register(subparsers)``; this module only assembles them, so
the platform never imports the parts above it at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import causalrec
from causalrec.platform.errors import CausalRecError

__all__ = ["build_parser", "main"]

#: Modules that contribute subcommands, in the order ``causalrec --help`` lists them.
COMMAND_MODULES = (
    "causalrec.simulators.cli",
    "causalrec.platform.data_cli",
    "causalrec.ope.cli",
    "causalrec.methods.cli",
    "causalrec.tuning.cli",
    "causalrec.serve.cli",
    "causalrec.abtest.cli",
    "causalrec.pipeline.cli",
    "causalrec.loop.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="causalrec",
        description=(
            "causalrec: causal (debiased) recommendation. Simulate confounded logged feedback "
            "with exact ground truth, debias recommenders, evaluate policies off-line."
        ),
        epilog="Run 'causalrec COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"causalrec {causalrec.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``causalrec`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CausalRecError as exc:
        print(f"causalrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"causalrec {args.command}: interrupted; nothing partial was written", file=sys.stderr
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
