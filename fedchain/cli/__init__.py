"""The ``fedchain`` command line: thin, on the outside of everything.

Each sub-command lives in its own ``_<name>.py`` module exposing ``register(subparsers)``,
which adds a parser whose ``handler`` default takes the parsed namespace and returns an exit
code. :func:`main` is the one place that turns errors into a message on stderr and an exit
code (:data:`EXIT_CODES`); tests call ``main([...])``. No traceback reaches a user: an error
nobody anticipated is reported in one line, with ``-vv`` for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fedchain import __version__
from fedchain.errors import (
    ChainConnectionError,
    ConfigError,
    ContractRevertError,
    DataError,
    FedchainError,
    StoreUnavailableError,
    UnknownContractError,
    VerificationError,
)

#: Sub-command modules, in the order ``--help`` lists them.
_COMMANDS = (
    "_demo",
    "_new",
    "_deploy",
    "_coordinator",
    "_participant",
    "_status",
    "_audit",
    "_model",
    "_store",
    "_keys",
    "_data",
    "_compile",
)

EXIT_OK = 0
#: A verification failed, or the ledger refused what this node did.
EXIT_FAILED = 1
#: The command could not run: bad arguments, configuration, key or data; a node or store unreachable.
EXIT_ERROR = 2
#: A long-running service gave up after its node or store stayed unreachable.
EXIT_UNREACHABLE = 3

#: Error types to exit codes, most specific first: the only such table.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (VerificationError, EXIT_FAILED),
    (UnknownContractError, EXIT_FAILED),
    (ContractRevertError, EXIT_FAILED),
    (ConfigError, EXIT_ERROR),
    (DataError, EXIT_ERROR),
    (FedchainError, EXIT_ERROR),
    (OSError, EXIT_ERROR),
    (ValueError, EXIT_ERROR),
)


def exit_code(err: BaseException, *, service: bool = False) -> int:
    """The exit code of an error (a service that gave up on its node exits :data:`EXIT_UNREACHABLE`)."""
    if service and isinstance(err, (ChainConnectionError, StoreUnavailableError)):
        return EXIT_UNREACHABLE
    for kind, code in EXIT_CODES:
        if isinstance(err, kind):
            return code
    return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="fedchain",
        description=(
            "Blockchain-audited federated training: deploy a ledger, run a federation, "
            "and audit its history from the chain. Start with `fedchain demo`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fedchain {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug, with tracebacks)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        module = importlib.import_module(f"fedchain.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    _setup_logging(args.verbose)
    prefix = f"fedchain {args.command}"
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        code = exit_code(err, service=bool(getattr(args, "service", False)))
        if args.verbose >= 2:
            logging.getLogger(__name__).exception("%s failed", prefix)
        print(f"{prefix}: error: {describe(err)}", file=sys.stderr)
        return code
    return code


def describe(err: BaseException) -> str:
    """One line naming the problem: the error's own message, or for a foreign error its type and message."""
    if isinstance(err, FedchainError):
        text = str(err)
    elif isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    elif isinstance(err, (OSError, ValueError)):
        text = str(err) or type(err).__name__
    else:
        text = f"unexpected {type(err).__name__}: {err} (run with -vv for the traceback, and please report it)"
    return " ".join(text.split())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fedchain").setLevel(level)


__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "build_parser",
    "describe",
    "exit_code",
    "main",
    "run",
]
