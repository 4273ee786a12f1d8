#!/usr/bin/env python3
"""Drive a three-hospital federation through the library API: the script to copy.

Every backend is passed in: the chain (in-process here; ``connect("http://127.0.0.1:8545")`` for a
node), the store (a directory here; ``open_store("http://127.0.0.1:5001")`` for kubo) and the
task (the ICD-10-CM classifier; any :class:`fedchain.tasks.api.Task` of your own). The manifest
fixes every rule the parties agree on; the coordinator and each hospital are separate objects
with separate keys that share nothing but the chain and the store, and the audit at the end
needs nothing but those two.

Run: python scripts/example_federation.py [--rounds N] [--demo-every K]
"""

from __future__ import annotations

import argparse
import tempfile

from fedchain.audit import audit_ledger
from fedchain.chain import connect
from fedchain.orchestrator.federation import Federation, make_manifest
from fedchain.storage import open_store
from fedchain.tasks import load_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--demo-every", type=int, default=1, help="keep every K-th record (quick trials: 60)")
    parser.add_argument("--dim", type=int, default=16, help="embedding width of the model")
    args = parser.parse_args(argv)

    # The task: the model, its training, and the demo's three hospitals with their private data.
    task = load_task("icd", {"demo_every": args.demo_every, "dim": args.dim})
    demo = task.demo(3, 0)

    # The rules: every party reads them from the manifest the ledger fixes, never from its own flags.
    manifest = make_manifest(task, seed=0, min_updates=3, round_seconds=600, max_update_norm=1000.0)

    chain = connect(None)  # the in-process chain
    store = open_store(tempfile.mkdtemp(prefix="fedchain-example-"))
    try:
        # Keys, the genesis model, the manifest, the ledger, the registrations: one call.
        fed = Federation.create(chain, store, task, demo.participants, manifest)
        print(f"ledger {fed.ledger.address}, coordinator {fed.coordinator.signer.address}")

        # Each round: hospitals verify the base model, train locally and submit; the coordinator
        # closes the round, aggregates deterministically and finalizes.
        for summary in fed.run(args.rounds, test_data=demo.test):
            print(
                f"round {summary.round_id} {summary.status}: {summary.included} updates, "
                f"test accuracy {summary.accuracy or 0.0:.1%}"
            )

        # Anyone can replay the ledger and recompute every aggregate, with no key and no data.
        report = audit_ledger(fed.ledger, store, names={str(a): n for a, n in fed.names.items()})
        print("audit:", "every round verifies" if report.ok else f"FAILED: {report.all_failures}")
        return 0 if report.ok else 1
    finally:
        chain.close()


if __name__ == "__main__":
    raise SystemExit(main())
