"""Small federations on real chains and the real store, for the orchestrator and audit tests.

A small slice of the real ICD-10-CM data (every 60th record) and a small model keep each round
well under a second; the protocol exercised is exactly the demo's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedchain.audit import AuditReport, audit_ledger
from fedchain.chain import Chain, Signer
from fedchain.hashing import sha256
from fedchain.orchestrator.coordinator import RoundReport
from fedchain.orchestrator.federation import Federation, FederationResult, make_manifest, run_demo
from fedchain.protocol import Manifest, Rules
from fedchain.protocol.blobs import update_blob
from fedchain.storage import BlobStore
from fedchain.tasks.api import DemoData, DemoParticipant
from fedchain.tasks.icd import IcdTask
from fedchain.tasks.icd.data import HOSPITALS, Dataset, load_icd10, split_non_iid

#: The small model of these tests: 512 buckets x 8 dimensions.
TASK_SETTINGS: dict[str, Any] = {"num_buckets": 512, "dim": 8, "batch_size": 64}


def small_task() -> IcdTask:
    return IcdTask(**TASK_SETTINGS)


@functools.cache
def small_demo() -> DemoData:
    """Every 60th ICD-10-CM record, split across the three demo hospitals."""
    full = load_icd10()
    keep = range(0, len(full), 60)
    small = Dataset(
        name="small",
        texts=tuple(full.texts[i] for i in keep),
        labels=tuple(full.labels[i] for i in keep),
        label_names=full.label_names,
    )
    split = split_non_iid(small, list(HOSPITALS.values()), names=list(HOSPITALS), seed=0)
    return DemoData(participants=[DemoParticipant(s.name, s) for s in split.shards], test=split.test)


def small_manifest(task: IcdTask | None = None, **rules: Any) -> Manifest:
    """The manifest of these tests (seed 3, quorum of all three hospitals unless given)."""
    rules.setdefault("seed", 3)
    rules.setdefault("min_updates", 3)
    return make_manifest(task or small_task(), **rules)


def make(chain: Chain, store: BlobStore, demo: DemoData, manifest: Manifest | None = None, **kwargs: Any) -> Federation:
    task = small_task()
    return Federation.create(chain, store, task, demo.participants, manifest or small_manifest(task), **kwargs)


def audit(fed: Federation, **kwargs: Any) -> AuditReport:
    names: Mapping[str, str] = dict(fed.names)
    return audit_ledger(fed.ledger, fed.store, names=names, **kwargs)


def run_small_demo(workdir: Path, rounds: int = 2, manifest: Manifest | None = None, **kwargs: Any) -> FederationResult:
    """:func:`run_demo` of the small federation into ``workdir`` (audited at the end), as ``fedchain demo`` runs it."""
    task = small_task()
    demo = small_demo()

    def audit_it(ledger: Any, store: Any, names: Mapping[str, str]) -> AuditReport:
        return audit_ledger(ledger, store, names=names)

    return run_demo(
        workdir,
        task,
        manifest or small_manifest(task),
        members=demo.participants,
        rounds=rounds,
        task_settings=TASK_SETTINGS,
        audit=audit_it,
        **kwargs,
    )


# ---------------------------------------------------------------------- driving rounds by hand


def zeros(rules: Rules) -> dict[str, np.ndarray]:
    """An all-zero delta of the manifest's schema."""
    return {name: np.zeros(shape, dtype=np.float32) for name, shape in rules.schema.shapes.items()}


def full(rules: Rules, value: float) -> dict[str, np.ndarray]:
    """A delta of the manifest's schema with every element ``value``."""
    return {name: np.full(shape, value, dtype=np.float32) for name, shape in rules.schema.shapes.items()}


def crafted(
    fed: Federation, signer: Signer, r: int, delta: Mapping[str, np.ndarray] | None = None, **meta: Any
) -> bytes:
    """An update blob for round ``r`` on its recorded base from ``signer`` (fields overridable)."""
    fields: dict[str, Any] = {
        "round_id": r,
        "base_hash": fed.ledger.round_history(r).opened.base_hash,
        "sender": signer.address,
        "num_samples": 10,
    }
    fields.update(meta)
    return update_blob(zeros(fed.rules) if delta is None else delta, **fields)


def submit(fed: Federation, signer: Signer, r: int, blob: bytes, n: int = 10) -> None:
    """Store ``blob`` and record it from ``signer``'s account for round ``r``."""
    fed.ledger.submit_update(signer, r, sha256(blob), fed.store.put(blob), n)


def honest_round(fed: Federation) -> int:
    """Open the next round and let every participant submit to it (the round stays open)."""
    r = fed.coordinator.open_round()
    for p in fed.participants:
        p.participate(r)
    return r


def finish(fed: Federation, r: int) -> RoundReport:
    """Close round ``r`` and end it as the coordinator does (finalize, or abandon)."""
    fed.coordinator.close(r)
    return fed.coordinator.finish(r)
