"""Pieces the sub-commands share: the audit report's printing, opening a ledger for reading."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from fedchain.audit import AuditReport
from fedchain.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from fedchain.hashing import to_hex
from fedchain.protocol import UpdateStatus


def who(report: AuditReport, address: str) -> str:
    """``name (0x…)`` where the deployment names the address, the address otherwise."""
    name = report.name(address)
    return f"{name} ({address})" if name else address


def print_audit(out: Console, report: AuditReport) -> int:
    """Print the audit's verdict first, then one line per round; return the exit code."""
    failures = report.all_failures
    verdict = (
        "PASSED: every ended round verifies"
        if report.ok
        else f"FAILED: {len(failures)} discrepanc{'y' if len(failures) == 1 else 'ies'}"
    )
    out.print(f"audit {verdict}", markup=False, highlight=False)
    out.print(
        f"  ledger {report.ledger.address} on chain {report.chain_id}, coordinator {report.ledger.coordinator}",
        markup=False,
        highlight=False,
    )
    out.print(
        f"  verified up to block {report.head_block} ({'0x' + bytes(report.head_hash).hex()})",
        markup=False,
        highlight=False,
    )
    if report.manifest is not None:
        m = report.manifest
        out.print(
            f"  manifest {to_hex(m.digest)}: task {m.task_name} {m.task_version}, rule {m.rule} "
            f"(server_lr {m.server_lr!r}), norm bound {m.max_update_norm!r}, quorum {m.min_updates}",
            markup=False,
            highlight=False,
        )
    ended = report.rounds_ended
    status = f"  {ended} round{'s' if ended != 1 else ''} ended ({report.rounds_finalized} finalized)"
    if report.open_round is not None:
        status += f"; round {report.open_round} is {report.rounds[-1].status.name.lower()} (not yet verifiable)"
    if report.expected_rounds is not None:
        status += f"; expected at least {report.expected_rounds}"
    out.print(status, markup=False, highlight=False)
    for e in failures:
        out.print(f"  FAILED: {e}", markup=False, highlight=False)
    for v in report.rounds:
        recorded = len(v.outcomes)
        valid = sum(1 for o in v.outcomes if o.status is not UpdateStatus.EXCLUDED)
        state = v.status.name.lower()
        verdict_word = ("ok" if v.ok else "FAILED") if state in ("finalized", "abandoned") else state
        agg = to_hex(v.aggregate_hash) if v.aggregate_hash else "-"
        line = f"  round {v.round_id} {state}: {recorded} recorded, {valid} valid, {len(v.included)} included, aggregate {agg}: {verdict_word}"
        if v.rule and state == "finalized":
            line += f"; rule {v.rule}"
        excluded = ", ".join(f"{who(report, e.participant)} ({e.reason})" for e in v.excluded)
        if excluded:
            line += f"; excluded {excluded}"
        discarded = [who(report, o.record.participant) for o in v.outcomes if o.status is UpdateStatus.DISCARDED]
        if discarded:
            line += f"; valid but not selected by {v.rule}: {', '.join(discarded)}"
        clipped = [who(report, o.record.participant) for o in v.outcomes if o.clipped]
        if clipped:
            line += f"; clipped: {', '.join(clipped)}"
        if v.missing:
            line += f"; no update from {', '.join(who(report, a) for a in v.missing)}"
        out.print(line, markup=False, highlight=False)
        for e in v.failures:
            out.print(f"    {e}", markup=False, highlight=False)
    return EXIT_OK if report.ok else EXIT_FAILED


def add_ledger_arguments(p: argparse.ArgumentParser, *, what: str) -> None:
    """``--workdir`` or ``--rpc/--ledger/--store``: where a federation is."""
    where = p.add_argument_group(f"{what} (either --workdir, or --rpc with --ledger and --store)")
    where.add_argument(
        "--workdir", type=Path, help="a working directory written by `fedchain demo` (works with no node running)"
    )
    where.add_argument("--rpc", help="JSON-RPC URL of the chain node")
    where.add_argument("--ledger", help="the ledger contract's address (0x + 40 hex digits)")
    where.add_argument(
        "--store", help="the blob store: an existing directory or a kubo API address (http://127.0.0.1:5001)"
    )


def open_ledger(args: argparse.Namespace, command: str) -> tuple[Any, Any, Any, dict[str, str]]:
    """The chain, ledger, store and participant names the arguments of :func:`add_ledger_arguments` name.

    Raises
    ------
    ConfigError
        Naming the flag that is missing or wrong; nothing is created.
    """
    from fedchain.chain import Ledger, connect
    from fedchain.config import check_address
    from fedchain.errors import ConfigError
    from fedchain.orchestrator.federation import open_workdir
    from fedchain.storage import open_store

    if args.workdir is not None:
        if args.rpc or args.ledger or args.store:
            raise ConfigError("--workdir", "give either --workdir or --rpc/--ledger/--store, not both")
        chain, ledger, store, config = open_workdir(args.workdir)
        return chain, ledger, store, dict(config.participants)
    missing = [
        flag for flag, value in (("--rpc", args.rpc), ("--ledger", args.ledger), ("--store", args.store)) if not value
    ]
    if missing:
        raise ConfigError(
            missing[0], f"missing (give --rpc, --ledger and --store, or --workdir) for `fedchain {command}`"
        )
    address = check_address(args.ledger, "--ledger")
    store = open_store(args.store, create=False)
    chain = connect(args.rpc)
    try:
        ledger = Ledger(chain, address)
    except BaseException:
        chain.close()
        raise
    return chain, ledger, store, {}


__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "add_ledger_arguments", "open_ledger", "print_audit", "who"]
