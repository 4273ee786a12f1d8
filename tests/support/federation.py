"""Small federations on real chains and the real store, for the orchestrator tests."""

from __future__ import annotations

from fedchain.audit import AuditReport, audit_ledger
from fedchain.chain import Chain, Ledger, Signer
from fedchain.fl import HOSPITALS, Dataset, FedAvg, FederatedSplit, ModelSpec, TrainConfig, load_icd10, split_non_iid
from fedchain.orchestrator.actors import Coordinator, FederationSettings, Participant
from fedchain.storage import LocalBlockStore

SPEC = ModelSpec(num_buckets=512, dim=8)
SETTINGS = FederationSettings(
    spec=SPEC, train=TrainConfig(epochs=1, batch_size=64), seed=3, round_seconds=600, min_updates=3
)


def small_split() -> FederatedSplit:
    """Every 60th ICD-10-CM record, split across the three demo hospitals."""
    full = load_icd10()
    keep = range(0, len(full), 60)
    small = Dataset(
        name="small",
        texts=tuple(full.texts[i] for i in keep),
        labels=tuple(full.labels[i] for i in keep),
        label_names=full.label_names,
    )
    return split_non_iid(small, list(HOSPITALS.values()), names=list(HOSPITALS), seed=0)


class Federation:
    """A coordinator and three hospitals on one chain and one store."""

    def __init__(
        self, chain: Chain, store: LocalBlockStore, split: FederatedSplit, settings: FederationSettings = SETTINGS
    ) -> None:
        self.chain, self.store, self.settings = chain, store, settings
        self.strategy = FedAvg()
        key = Signer.create("coordinator")
        chain.fund(key.address)
        genesis, cid = Coordinator.publish_genesis(store, settings, key.address)
        self.ledger, _ = Ledger.deploy(chain, key, genesis, cid)
        self.coordinator = Coordinator(self.ledger, key, store, self.strategy, settings)
        self.participants: list[Participant] = []
        for shard in split.shards:
            signer = Signer.create(shard.name)
            chain.fund(signer.address)
            self.coordinator.register(signer.address, len(shard))
            self.participants.append(
                Participant(self.ledger, signer, store, self.strategy, settings, shard, shard.name)
            )

    def attacker(self, name: str = "mallory") -> Signer:
        signer = Signer.create(name)
        self.chain.fund(signer.address)
        self.coordinator.register(signer.address, 10_000)
        return signer

    def audit(self) -> AuditReport:
        return audit_ledger(
            self.ledger,
            self.store,
            self.strategy,
            spec=SPEC,
            max_blob_size=self.settings.max_blob_size,
            max_update_norm=self.settings.max_update_norm,
        )
