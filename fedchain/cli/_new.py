"""``fedchain new NAME``: write a starter task package, as ``flwr new`` does."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedchain.cli._common import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "new",
        help="write a starter task package (model, train, evaluate, a test, a config) to bring your own model",
        description=(
            "Writes the package NAME/ in --directory: a task (a small PyTorch model with its training and "
            "evaluation on data that ships offline), a test, an example node config and a README. Run it with "
            "`fedchain demo --task NAME.task:Task` from the directory that holds NAME/ (or after installing it)."
        ),
    )
    p.add_argument("name", help="the package name (a Python identifier)")
    p.add_argument(
        "--directory", type=Path, default=Path("."), help="where to create it (default: the current directory)"
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fedchain.tasks._starter import starter

    written = starter(args.directory, args.name)
    for path in written:
        print(f"  wrote {path}")
    print(f"next: cd {args.directory} && fedchain demo --task {args.name}.task:Task")
    return EXIT_OK
