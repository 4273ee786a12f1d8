"""Gas of every ledger operation, through :class:`fedchain.chain.Ledger`, on anvil and on eth-tester.

Deployments, registrations and whole rounds (``openRound``, the submissions, ``closeRound``,
``finalizeRound``) of 3 and of 10 participants, abandoned rounds, and the floor for recording
one 32-byte digest: a transaction (21,000), one cold zero-to-nonzero storage write (22,100),
the call's calldata and the event's log. Medians of ``calls`` calls of each.

``python -m benchmarks.gas [--calls 20] [--chains embedded anvil] [--json]`` (also
``scripts/gas_report.py``); exit 1 if a median misses its target.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

from benchmarks._common import CHAINS, Verdict, anvil_missing, chain_label, median, open_chain, signer
from fedchain.chain import Chain, Ledger, Signer
from fedchain.types import Cid, Digest

#: The targets of the median gas of each operation.
TARGETS: dict[str, int] = {
    "openRound": 100_000,
    "submitUpdate": 55_000,
    "finalizeRound3": 100_000,
    "round3": 300_000,
}
LABELS = {
    "deploy": "deploy",
    "registerParticipant": "registerParticipant",
    "openRound": "openRound",
    "submitUpdate": "submitUpdate",
    "closeRound": "closeRound",
    "finalizeRound3": "finalizeRound (3 included)",
    "round3": "round of 3 (open + 3 submits + close + finalize)",
    "finalizeRound10": "finalizeRound (10 included)",
    "round10": "round of 10 (open + 10 submits + close + finalize)",
    "abandonRound": "abandonRound (a closed round)",
}
TX_BASE = 21_000
COLD_SSTORE_SET = 22_100  # 20,000 zero-to-nonzero + 2,100 cold slot access
LOG_BASE, LOG_TOPIC, LOG_BYTE = 375, 375, 8


def _digest(label: str) -> Digest:
    return Digest(hashlib.sha256(label.encode()).digest())


def _cid(label: str) -> Cid:
    # a CIDv0 string of the usual length (46 characters), as the store records
    return Cid("Qm" + hashlib.sha256(label.encode()).hexdigest()[:44])


def _calldata_gas(data: bytes) -> int:
    return sum(4 if b == 0 else 16 for b in data)


def measure(chain: Chain, calls: int, wide_calls: int) -> dict[str, Any]:
    """Gas of each operation on ``chain``: medians of ``calls`` calls (``wide_calls`` rounds of 10)."""
    coordinator = signer("gas coordinator")
    members = sorted((signer(f"gas participant {i}") for i in range(10)), key=lambda s: int(s.address, 16))
    for s in (coordinator, *members):
        chain.fund(s.address)
    gas: dict[str, list[int]] = {k: [] for k in LABELS}
    ledger: Ledger | None = None
    for _ in range(calls):
        deployed, tx = Ledger.deploy(
            chain, coordinator, _digest("genesis"), _cid("genesis"), _digest("manifest"), _cid("manifest")
        )
        gas["deploy"].append(tx.gas_used)
        ledger = ledger or deployed
    assert ledger is not None
    others = [signer(f"gas other {i}").address for i in range(max(0, calls - len(members)))]
    for address in [m.address for m in members] + others:
        gas["registerParticipant"].append(ledger.register_participant(coordinator, address, 1_000_000).gas_used)
    base = _digest("genesis")
    r = 0
    last_submit: list[Any] = []

    def one_round(group: list[Signer], suffix: str, *, abandon: bool = False) -> None:
        nonlocal base, r
        assert ledger is not None
        opened = ledger.open_round(coordinator, r, base, _cid(f"base {r}"), chain.now() + 3600, len(group))
        total = int(opened.gas_used)
        for p in group:
            label = f"update {r} {p.address}"
            tx = ledger.submit_update(p, r, _digest(label), _cid(label), 1000)
            last_submit[:] = [tx]
            if suffix == "3":
                gas["submitUpdate"].append(tx.gas_used)
            total += tx.gas_used
        closed = int(ledger.close_round(coordinator, r).gas_used)
        total += closed
        if abandon:
            gas["abandonRound"].append(ledger.abandon_round(coordinator, r).gas_used)
        else:
            aggregate = _digest(f"aggregate {r}")
            fin = ledger.finalize_round(coordinator, r, aggregate, _cid(f"aggregate {r}"), [p.address for p in group])
            gas["finalizeRound" + suffix].append(fin.gas_used)
            gas["round" + suffix].append(total + fin.gas_used)
            base = aggregate
            if suffix == "3":
                gas["openRound"].append(opened.gas_used)
                gas["closeRound"].append(closed)
        r += 1

    for _ in range(calls):
        one_round(members[:3], "3")
    for _ in range(wide_calls):
        one_round(members, "10")
    for _ in range(max(1, calls // 4)):
        one_round(members[:1], "3", abandon=True)

    # the floor for recording one 32-byte digest, from the last submitUpdate as sent
    w3 = chain.w3
    tx_hash = last_submit[0].tx_hash
    sent = w3.eth.get_transaction(tx_hash)
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    log = receipt["logs"][0]
    calldata = bytes(sent["input"])
    log_gas = LOG_BASE + LOG_TOPIC * len(log["topics"]) + LOG_BYTE * len(bytes(log["data"]))
    floor = TX_BASE + COLD_SSTORE_SET + _calldata_gas(calldata) + log_gas
    medians = {k: int(median(v)) for k, v in gas.items() if v}
    return {
        "client": str(w3.client_version),
        "calls": {k: len(v) for k, v in gas.items()},
        "median": medians,
        "max": {k: max(v) for k, v in gas.items() if v},
        "floor": {
            "total": floor,
            "transaction": TX_BASE,
            "storage": COLD_SSTORE_SET,
            "calldata": _calldata_gas(calldata),
            "calldata_bytes": len(calldata),
            "log": log_gas,
        },
        "submit_vs_floor": medians["submitUpdate"] / floor,
    }


def run(quick: bool, chains: tuple[str, ...] = CHAINS) -> dict[str, Any]:
    """The gas part: every chain of ``chains`` that can start (anvil skipped, with why, if absent)."""
    calls, wide = (2, 1) if quick else (20, 5)
    out: dict[str, Any] = {"chains": {}}
    for kind in ("embedded",) if quick else chains:
        if kind == "anvil" and (why := anvil_missing()):
            out["chains"][kind] = {"skipped": why}
            continue
        with open_chain(kind) as chain:
            out["chains"][kind] = measure(chain, calls, wide)
    return out


def verdicts(result: dict[str, Any]) -> list[Verdict]:
    out = []
    for kind, r in result["chains"].items():
        if "median" not in r:
            continue
        for key, bound in TARGETS.items():
            out.append(Verdict(f"gas {LABELS[key]} ({chain_label(kind)})", r["median"][key], "<=", bound))
    return out


def table(result: dict[str, Any]) -> str:
    kinds = list(result["chains"])
    lines = ["## gas (median)", "", "| operation | " + " | ".join(chain_label(k) for k in kinds) + " | target |"]
    lines.append("| --- | " + " | ".join("---:" for _ in kinds) + " | --- |")
    for key, label in LABELS.items():
        cells = []
        for k in kinds:
            r = result["chains"][k]
            cells.append(f"{r['median'][key]:,}" if "median" in r and key in r["median"] else "-")
        target = f"<= {TARGETS[key]:,}" if key in TARGETS else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    for k in kinds:
        r = result["chains"][k]
        if "floor" in r:
            f = r["floor"]
            lines.append(
                f"\n{chain_label(k)} ({r['client']}): floor for one digest {f['total']:,} = 21,000 + 22,100 + calldata "
                f"{f['calldata']:,} ({f['calldata_bytes']} bytes) + log {f['log']:,}; submitUpdate is "
                f"{r['submit_vs_floor']:.2f}x it"
            )
        elif "skipped" in r:
            lines.append(f"\n{chain_label(k)}: skipped ({r['skipped']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--chains", nargs="+", choices=CHAINS, default=list(CHAINS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"chains": {}}
    for kind in args.chains:
        if kind == "anvil" and (why := anvil_missing()):
            result["chains"][kind] = {"skipped": why}
            continue
        with open_chain(kind) as chain:
            result["chains"][kind] = measure(chain, args.calls, max(1, args.calls // 4))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0 if all(v.met for v in verdicts(result)) else 1


if __name__ == "__main__":
    sys.exit(main())
