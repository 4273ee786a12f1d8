"""How often a masked round's blobs are read: once by the coordinator, once by each participant.

The coordinator sums the words as it reads the headers and keeps the round it finalized as
verified; a participant verifies a round with what it read to reveal. Before, each masked update
was fetched (and hashed in full) up to five times per party.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from support.federation import audit, make, small_manifest, small_task

from fedchain.chain import EmbeddedChain
from fedchain.protocol.privacy import default_masked
from fedchain.storage import LocalBlockStore
from fedchain.tasks.api import DemoData


class CountingStore(LocalBlockStore):
    """The local store, counting the verified reads of each CID."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[str] = Counter()

    def get_verified(self, cid: str, sha256: bytes, **kwargs: Any) -> bytearray:
        self.reads[cid] += 1
        return super().get_verified(cid, sha256, **kwargs)


def test_each_masked_update_is_read_once_by_the_coordinator_and_once_by_each_participant(
    tmp_path: Path, demo: DemoData
) -> None:
    chain = EmbeddedChain()
    try:
        store = CountingStore(tmp_path / "store")
        manifest = small_manifest(small_task(), min_updates=2, privacy=default_masked(3))
        fed = make(chain, store, demo, manifest)
        summaries = fed.run(3)
        assert [s.status for s in summaries] == ["finalized"] * 3
        k = len(fed.participants)
        for r in range(3):
            history = fed.ledger.round_history(r)
            assert len(history.updates) == k
            assert [store.reads[u.cid] for u in history.updates] == [1 + k] * k
        assert audit(fed).ok
    finally:
        chain.close()
