"""``fedchain status``: the live state of a federation, read from the chain."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fedchain.cli._common import EXIT_OK, add_ledger_arguments, open_ledger


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status",
        help="show a federation's live state: current round, deadline, who submitted, the last aggregate",
        description="Reads the ledger (no keys needed) and prints the current round, the time to its deadline, "
        "who has submitted, the quorum, and the last finalized aggregate. It verifies nothing: `fedchain audit` does.",
    )
    add_ledger_arguments(p, what="which federation")
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fedchain.hashing import to_hex
    from fedchain.records import RoundStatus

    chain, ledger, _store, names = open_ledger(args, "status")
    try:
        info = ledger.info()
        head, head_hash = ledger.head()
        r = ledger.next_round()
        registered = [p for p in ledger.participants() if p.registered]
        state = ledger.round_state(r - 1) if r > 0 else None
        history = ledger.round_history(r - 1, state) if state is not None else None
        now = chain.now()
        out: dict[str, Any] = {
            "ledger": ledger.address,
            "coordinator": info.coordinator,
            "head": {"block": head, "hash": "0x" + bytes(head_hash).hex()},
            "rounds_opened": r,
            "last_aggregate": to_hex(ledger.last_aggregate()),
            "participants": [
                {"address": p.address, "name": names.get(p.address), "max_samples": p.max_samples} for p in registered
            ],
            "current": None,
        }
        if state is not None and history is not None:
            submitted = [u.participant for u in history.updates]
            out["current"] = {
                "round": r - 1,
                "status": state.status.name.lower(),
                "deadline": state.deadline,
                "seconds_to_deadline": state.deadline - now,
                "quorum": state.min_updates,
                "submitted": submitted,
                "waiting_for": [p.address for p in registered if p.address not in submitted]
                if state.status is RoundStatus.OPEN
                else [],
            }
    finally:
        chain.close()
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(f"ledger {out['ledger']} (coordinator {out['coordinator']}), head block {head}")
    print(f"  {r} round{'s' if r != 1 else ''} opened; last finalized aggregate {out['last_aggregate']}")
    cur = out["current"]
    if cur is None:
        print("  no round opened yet")
    else:

        def label(a: str) -> str:
            return f"{names[a]} ({a})" if a in names else a

        left = cur["seconds_to_deadline"]
        when = f"deadline in {left}s" if left >= 0 else f"deadline passed {-left}s ago"
        print(
            f"  round {cur['round']} is {cur['status']}: {len(cur['submitted'])}/{len(registered)} submitted, quorum {cur['quorum']}, {when}"
        )
        for a in cur["submitted"]:
            print(f"    submitted: {label(a)}")
        for a in cur["waiting_for"]:
            print(f"    waiting for: {label(a)}")
    return EXIT_OK
