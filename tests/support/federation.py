"""Small federations on real chains and the real store, for the orchestrator and audit tests.

A small slice of the real ICD-10-CM data (every 60th record) and a small model keep each round
well under a second; the protocol exercised is exactly the demo's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedchain.audit import AuditReport, audit_ledger
from fedchain.chain import Chain
from fedchain.orchestrator.federation import Federation, make_manifest
from fedchain.protocol import Manifest
from fedchain.storage import BlobStore
from fedchain.tasks.api import DemoData, DemoParticipant
from fedchain.tasks.icd import IcdTask
from fedchain.tasks.icd.data import HOSPITALS, Dataset, load_icd10, split_non_iid

#: The small model of these tests: 512 buckets x 8 dimensions.
TASK_SETTINGS: dict[str, Any] = {"num_buckets": 512, "dim": 8, "batch_size": 64}


def small_task() -> IcdTask:
    return IcdTask(**TASK_SETTINGS)


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
