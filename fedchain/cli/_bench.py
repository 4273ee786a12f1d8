"""``fedchain bench``: the benchmark harness of :mod:`fedchain.bench` (same options as ``scripts/bench.py``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``bench`` sub-command."""
    from fedchain.bench import build_parser

    parser = sub.add_parser(
        "bench",
        help="measure gas, ledger overhead, aggregation, audit and memory against the targets",
        description="fedchain's benchmarks: every comparison measured side by side and reported as a ratio.",
    )
    build_parser(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fedchain.bench import run_from_args

    return run_from_args(args)
