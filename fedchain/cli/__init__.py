"""The ``fedchain`` command line: thin, on the outside of everything.

Each sub-command lives in its own ``_<name>.py`` module exposing ``register(subparsers)``,
which adds a parser whose ``handler`` default takes the parsed namespace and returns an exit
code. :func:`main` is the one place that turns library errors into a message on stderr and
an exit code; tests call ``main([...])``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fedchain import __version__
from fedchain.errors import FedchainError

#: Sub-command modules, in the order ``--help`` lists them.
_COMMANDS = (
    "_demo",
    "_deploy",
    "_coordinator",
    "_participant",
    "_audit",
    "_store",
    "_keys",
    "_data",
    "_compile",
    "_bench",
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command that is installed."""
    parser = argparse.ArgumentParser(
        prog="fedchain",
        description=(
            "Blockchain-audited federated training: deploy a ledger, run a federation, "
            "and audit its history from the chain."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fedchain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeat for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"fedchain.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"fedchain.cli.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    _setup_logging(args.verbose)
    try:
        code: int = args.handler(args)
    except FedchainError as err:
        print(f"fedchain {args.command}: error: {err}", file=sys.stderr)
        return getattr(args, "error_exit_code", EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"fedchain {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fedchain").setLevel(level)


__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "build_parser", "main", "run"]
