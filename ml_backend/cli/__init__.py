"""The `unsamv2` command line.

Each subcommand lives in its own module with `add_parser(subparsers)` and a `run(args)`
function returning the exit status. Bad arguments and errors of the project (`UnSAMv2Error`,
and the `ValueError` of an argument check) are reported as one line on stderr with exit status
2, never as a traceback (``-v`` adds the traceback for debugging).

Logging is configured here and nowhere else (see `configure_logging`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from core_model.errors import UnSAMv2Error
from ml_backend.settings import tune_memory_allocator

logger = logging.getLogger(__name__)

# One module per subcommand group; each has add_parser(subparsers).
COMMAND_MODULES = (
    "ml_backend.cli.segment",
    "ml_backend.cli.segment_video",
    "ml_backend.cli.bench",
    "ml_backend.cli.services",
    "ml_backend.cli.playground",
    "ml_backend.cli.jobs",
    "ml_backend.cli.weights",
    "ml_backend.cli.label_studio",
    "ml_backend.cli.train",
    "ml_backend.cli.models",
    "ml_backend.cli.pseudo_label",
    "ml_backend.cli.evaluate",
    "ml_backend.cli.export",
    "ml_backend.cli.specialist",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = _Parser(
        prog="unsamv2",
        description="UnSAMv2 segmentation at any granularity, for Label Studio and CVAT.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, including schema migrations and broker messages, and tracebacks",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def configure_logging(verbose: bool) -> None:
    """Set up the process's logging for the command line.

    Args:
        verbose: Debug messages of every library. Without it, informational messages of this
            project are shown, and libraries that narrate normal operation (Alembic's schema
            checks on every database command, kombu's "No hostname was supplied" for the
            embedded broker) are silenced below errors.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


#: Loggers of libraries that report normal operation; shown with ``-v`` only.
CHATTY_LOGGERS = ("alembic", "kombu")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or error.__class__.__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        tune_memory_allocator()
        return int(args.run(args))
    except (UnSAMv2Error, argparse.ArgumentTypeError, ValueError, OSError) as exc:
        logger.debug("unsamv2 %s failed", args.command, exc_info=True)
        print(f"unsamv2 {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unsamv2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
