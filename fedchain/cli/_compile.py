"""``fedchain compile``: regenerate the committed contract artifact, or ``--check`` it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fedchain.chain.compile import (
    ARTIFACT_PATH,
    CompilerNotFoundError,
    check_artifact,
    compile_contracts,
    find_compiler,
    write_artifact,
)
from fedchain.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from fedchain.errors import ArtifactMismatchError

#: Environment variable naming the solc-js executable, when ``--solcjs`` is not given.
SOLCJS_ENV = "FEDCHAIN_SOLCJS"


def register(subparsers: Any) -> None:
    """Add the ``compile`` sub-command."""
    parser = subparsers.add_parser(
        "compile",
        help="compile the ledger contract into its committed artifact (or --check it)",
        description=(
            "Compile contracts/ with solc 0.8.30 (native solc if installed, else solc-js from "
            "`npm ci`) and write the artifact that deploying uses. With --check, write nothing "
            "and exit non-zero unless the committed artifact equals a fresh compile byte for byte."
        ),
    )
    parser.add_argument(
        "--contracts",
        type=Path,
        default=None,
        metavar="DIR",
        help="the Solidity sources (default: the repository's contracts/)",
    )
    parser.add_argument(
        "--solcjs",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"use this solc-js executable (default: ${SOLCJS_ENV}, else native solc 0.8.30, else node_modules/.bin/solcjs)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"the artifact to write or check (default: {ARTIFACT_PATH})",
    )
    parser.add_argument("--check", action="store_true", help="only check that the artifact is up to date")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    solcjs = args.solcjs if args.solcjs is not None else os.environ.get(SOLCJS_ENV) or None
    try:
        compiler = find_compiler(solcjs=solcjs)
    except CompilerNotFoundError as err:
        hint = "" if solcjs else " (or pass --solcjs PATH)"
        print(f"fedchain compile: {err}{hint}", file=sys.stderr)
        return EXIT_ERROR
    path = args.output if args.output is not None else ARTIFACT_PATH

    if args.check:
        try:
            check_artifact(args.contracts, solc=compiler, artifact_path=path)
        except ArtifactMismatchError as err:
            print(f"fedchain compile: {err}", file=sys.stderr)
            print("fedchain compile: run `fedchain compile` to regenerate the artifact, and commit it", file=sys.stderr)
            return EXIT_FAILED
        version = json.loads(path.read_bytes())["compiler"]["version"]
        print(f"{path}: up to date (a fresh compile with {compiler}, solc {version}, gives the same bytes)")
        return EXIT_OK

    fresh = compile_contracts(args.contracts, solc=compiler)
    written = write_artifact(fresh, path)
    size = (len(fresh["bytecode"]) - 2) // 2
    deployed = (len(fresh["deployedBytecode"]) - 2) // 2
    print(f"wrote {written}")
    print(f"  compiler: solc {fresh['compiler']['version']} ({compiler})")
    print(f"  bytecode: {size} bytes (deployed: {deployed} bytes, limit 24576)")
    return EXIT_OK
