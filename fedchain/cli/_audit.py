"""``fedchain audit``: replay a ledger's history and verify every round; no keys needed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from fedchain.cli._common import EXIT_ERROR, EXIT_OK, print_audit
from fedchain.errors import FedchainError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "audit",
        help="verify a ledger's whole history from the chain and the store",
        description=(
            "Replays every round recorded on a ledger and verifies it: every update blob re-hashed and "
            "checked, the aggregate recomputed bit for bit, the lineage checked. Needs no keys and no "
            "private data. Exit status: 0 everything verifies, 1 a discrepancy, 2 the audit could not run."
        ),
    )
    where = p.add_argument_group("what to audit (either --workdir, or --rpc with --ledger and --store)")
    where.add_argument(
        "--workdir", type=Path, help="a working directory written by `fedchain demo` (works with no node running)"
    )
    where.add_argument("--rpc", help="JSON-RPC URL of the chain node")
    where.add_argument("--ledger", help="the ledger contract's address")
    where.add_argument("--store", help="the blob store: a directory or a kubo API address (http://127.0.0.1:5001)")
    p.add_argument(
        "--server-lr", type=float, default=1.0, help="FedAvg server learning rate the federation used (default: 1.0)"
    )
    p.add_argument(
        "--max-blob-size", type=int, default=64 * 1024 * 1024, help="largest blob fetched, in bytes (default: 64 MiB)"
    )
    p.add_argument(
        "--max-update-norm", type=float, default=None, help="the federation's update-norm bound, if it had one"
    )
    p.add_argument(
        "--check-cids",
        action="store_true",
        help="also check every block of every blob against the CID that names it (by default each blob is checked against its recorded sha256 only, "
        "which is what makes it the recorded blob; this adds the proof that the recorded CIDs name those bytes, for a second hash of every byte)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_run, error_exit_code=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    from fedchain.audit import audit_ledger
    from fedchain.chain import Ledger, connect
    from fedchain.fl import FedAvg
    from fedchain.orchestrator.federation import open_workdir
    from fedchain.storage import open_store

    if args.workdir is not None:
        if args.rpc or args.ledger or args.store:
            print("fedchain audit: error: give either --workdir or --rpc/--ledger/--store, not both", file=sys.stderr)
            return EXIT_ERROR
        chain, ledger, store, settings = open_workdir(args.workdir)
        strategy = FedAvg(server_lr=settings.server_lr)
        spec, max_blob, max_norm = settings.spec, settings.max_blob_size, settings.max_update_norm
    else:
        missing = [
            flag
            for flag, value in (("--rpc", args.rpc), ("--ledger", args.ledger), ("--store", args.store))
            if not value
        ]
        if missing:
            print(f"fedchain audit: error: missing {', '.join(missing)} (or give --workdir)", file=sys.stderr)
            return EXIT_ERROR
        chain = connect(args.rpc)
        ledger = Ledger(chain, args.ledger)
        store = open_store(args.store, max_blob_size=args.max_blob_size)
        strategy = FedAvg(server_lr=args.server_lr)
        spec, max_blob, max_norm = None, args.max_blob_size, args.max_update_norm
    try:
        report = audit_ledger(
            ledger,
            store,
            strategy,
            spec=spec,
            max_blob_size=max_blob,
            max_update_norm=max_norm,
            check_cids=args.check_cids,
        )
    except FedchainError as err:
        print(f"fedchain audit: error: could not run the audit: {err}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        chain.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return EXIT_OK if report.ok else 1
    return print_audit(Console(soft_wrap=True), report)
