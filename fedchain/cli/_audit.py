"""``fedchain audit``: replay a ledger's history and verify every round; no keys, no torch needed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedchain.cli._common import EXIT_FAILED, EXIT_OK, add_ledger_arguments, open_ledger, print_audit
from fedchain.protocol import RoundVerdict


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "audit",
        help="verify a ledger's whole history from the chain and the store",
        description=(
            "Replays every round recorded on a ledger and verifies it: the code at the address is a fedchain "
            "ledger, the federation manifest matches the digest the ledger fixes (every rule is read from it), "
            "every update blob is re-hashed and checked, the aggregate recomputed bit for bit, the lineage "
            "checked. Needs no keys, no private data and no training framework. Exit status: 0 everything "
            "verifies, 1 a discrepancy (or fewer rounds than --expect-rounds), 2 the audit could not run."
        ),
    )
    add_ledger_arguments(p, what="what to audit")
    p.add_argument(
        "--expect-rounds", type=int, default=None, metavar="N", help="fail (exit 1) unless at least N rounds have ended"
    )
    p.add_argument(
        "--check-cids",
        action="store_true",
        help="also check every block of every blob against the CID that names it (a second hash of every byte; "
        "by default each blob is checked against its recorded sha256, which is what makes it the recorded blob)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON (for machines)")
    p.add_argument(
        "--html", type=Path, default=None, metavar="FILE", help="also write a self-contained HTML report (for people)"
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fedchain.audit import audit_ledger
    from fedchain.errors import ConfigError, UnknownContractError

    if args.expect_rounds is not None and args.expect_rounds < 0:
        raise ConfigError("--expect-rounds", f"must be >= 0, got {args.expect_rounds}")
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        chain, ledger, store, names = open_ledger(args, "audit")
    except UnknownContractError as e:
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "ledger": e.address,
                        "failures": [
                            {
                                "round": None,
                                "check": "unknown contract code",
                                "participant": None,
                                "expected": "a fedchain ledger",
                                "actual": str(e),
                                "message": str(e),
                            }
                        ],
                    },
                    indent=2,
                )
            )
        else:
            print(f"audit FAILED: {e}", file=sys.stdout)
        return EXIT_FAILED
    try:
        total = ledger.next_round()
        with _progress(err, total, quiet=args.json) as on_round:
            report = audit_ledger(
                ledger,
                store,
                names=names,
                on_round=on_round,
                check_cids=args.check_cids,
                expect_rounds=args.expect_rounds,
                details=args.html is not None,
            )
    finally:
        chain.close()
    if args.html is not None:
        from fedchain.audit.report import write_html

        write_html(report, args.html)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return EXIT_OK if report.ok else EXIT_FAILED
    code = print_audit(out, report)
    if args.html is not None:
        out.print(f"report written to {args.html}")
    return code


class _progress:
    """A progress bar on a terminal (a plain line every 10 rounds otherwise), driven by ``on_round``."""

    def __init__(self, console: Console, total: int, *, quiet: bool) -> None:
        self.console, self.total, self.quiet = console, total, quiet
        self._bar: Progress | None = None

    def __enter__(self) -> Callable[[RoundVerdict], None] | None:
        if self.quiet or self.total <= 1:
            return None
        if self.console.is_terminal:
            bar = Progress(
                TextColumn("auditing"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} rounds"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            bar.__enter__()
            self._bar = bar
            job = bar.add_task("audit", total=self.total)
            return lambda v: bar.update(job, completed=v.round_id + 1)
        if self.total < 20:
            return None

        def line(v: RoundVerdict) -> None:
            if (v.round_id + 1) % 10 == 0:
                self.console.print(f"audited {v.round_id + 1}/{self.total} rounds")

        return line

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
