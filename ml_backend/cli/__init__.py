"""The `unsamv2` command line.

Each subcommand lives in its own module with `add_parser(subparsers)` and a `run(args)`
function returning the exit status. Errors of the project (`UnSAMv2Error`) are reported as one
line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from core_model.errors import UnSAMv2Error

# One module per subcommand group; each has add_parser(subparsers).
COMMAND_MODULES = (
    "ml_backend.cli.segment",
    "ml_backend.cli.bench",
    "ml_backend.cli.services",
    "ml_backend.cli.jobs",
    "ml_backend.cli.weights",
    "ml_backend.cli.label_studio",
    "ml_backend.cli.train",
    "ml_backend.cli.pseudo_label",
    "ml_backend.cli.evaluate",
    "ml_backend.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="unsamv2",
        description="UnSAMv2 segmentation at any granularity, for Label Studio and CVAT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except UnSAMv2Error as exc:
        print(f"unsamv2 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unsamv2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
