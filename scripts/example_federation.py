#!/usr/bin/env python3
"""Drive the three-hospital federation through the library API: the script to copy.

Every backend is passed in: the chain (in-process here; `connect("http://...")` for a node),
the store (a directory here; `open_store("http://127.0.0.1:5001")` for kubo), the strategy.
Coordinator and hospitals are separate objects with separate keys that share nothing but the
chain and the store. Run: python scripts/example_federation.py [--rounds N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fedchain.audit import audit_ledger
from fedchain.chain import EmbeddedChain, Ledger, Signer
from fedchain.fl import FedAvg, demo_split, evaluate
from fedchain.orchestrator.actors import Coordinator, Participant
from fedchain.orchestrator.settings import default_settings
from fedchain.orchestrator.verify import load_model
from fedchain.storage import LocalBlockStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = default_settings(seed=0)
    split = demo_split(seed=0)
    chain = EmbeddedChain()
    store = LocalBlockStore(Path(tempfile.mkdtemp(prefix="fedchain-example-")) / "store")
    strategy = FedAvg(server_lr=settings.server_lr)

    # The coordinator: its own key, the genesis model, the ledger, the registry.
    coordinator_key = Signer.create("coordinator")
    chain.fund(coordinator_key.address)
    genesis_hash, genesis_cid = Coordinator.publish_genesis(store, settings, coordinator_key.address)
    ledger, _ = Ledger.deploy(chain, coordinator_key, genesis_hash, genesis_cid)
    coordinator = Coordinator(ledger, coordinator_key, store, strategy, settings)

    # Each hospital: its own key and its own data, which never leaves its object.
    hospitals = []
    for shard in split.shards:
        key = Signer.create(shard.name)
        chain.fund(key.address)
        coordinator.register(key.address, max_samples=len(shard))
        hospitals.append(Participant(ledger, key, store, strategy, settings, shard, shard.name))

    for _ in range(args.rounds):
        r = coordinator.open_round()
        for hospital in hospitals:
            hospital.participate(r)  # verifies the previous round before training
        report = coordinator.wait_and_finalize(r)
        _, params = load_model(
            store,
            report.aggregate_cid,
            report.aggregate_hash,
            spec=settings.spec,
            max_blob_size=settings.max_blob_size,
            round_id=r,
            what="aggregate",
        )
        print(
            f"round {r}: {len(report.verdict.included)} updates, test accuracy {evaluate(params, split.test, spec=settings.spec):.1%}"
        )

    audit = audit_ledger(ledger, store, strategy, spec=settings.spec, max_blob_size=settings.max_blob_size)
    print("audit:", "every round verifies" if audit.ok else "DISCREPANCIES")


if __name__ == "__main__":
    main()
