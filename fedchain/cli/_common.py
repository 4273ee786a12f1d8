"""Pieces the sub-commands share: exit codes and the audit report's printing."""

from __future__ import annotations

from rich.console import Console

from fedchain.audit import AuditReport
from fedchain.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK  # defined once there; re-exported here
from fedchain.hashing import short


def print_audit(out: Console, report: AuditReport) -> int:
    """Print the audit's one line per round and its verdict; return the exit code."""
    out.print(
        f"audit of ledger {report.ledger.address} (coordinator {report.ledger.coordinator}, genesis {short(report.ledger.genesis_hash)})"
    )
    for e in report.failures:
        out.print(f"  FAILED: {e}")
    for v in report.rounds:
        excluded = ", ".join(f"{e.participant} ({e.reason})" for e in v.excluded)
        missing = ", ".join(v.missing)
        verdict = "ok" if v.ok else "FAILED"
        agg = short(v.aggregate_hash) if v.aggregate_hash else "-"
        line = (
            f"  round {v.round_id}: {len(v.included)} included, {len(v.excluded)} excluded, aggregate {agg}: {verdict}"
        )
        if excluded:
            line += f"; excluded {excluded}"
        if missing:
            line += f"; no update from {missing}"
        out.print(line, markup=False, highlight=False)
        for e in v.failures:
            out.print(f"    {e}", markup=False, highlight=False)
    out.print("audit: every round verifies" if report.ok else "audit: DISCREPANCIES FOUND")
    return EXIT_OK if report.ok else EXIT_FAILED


__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "print_audit"]
