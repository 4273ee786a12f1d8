"""The embedded chain's ``get_logs``: logs indexed as blocks are mined equal the receipts' logs.

``EmbeddedChain`` remembers each mined block's logs (by block hash) so that reading a round's
events decodes nothing; these tests compare what it serves with what py-evm's receipts hold, for
a fresh chain, a replayed journal and a chain that went back to a snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedchain.chain import EmbeddedChain, Ledger, Signer
from fedchain.hashing import sha256
from fedchain.types import Cid


def _federation(chain: EmbeddedChain) -> tuple[Ledger, Signer, list[Signer]]:
    coordinator = Signer.create("coordinator")
    hospitals = [Signer.create(f"hospital {i}") for i in range(3)]
    for s in (coordinator, *hospitals):
        chain.fund(s.address)
    ledger, _ = Ledger.deploy(chain, coordinator, sha256(b"g"), Cid("QmG"), sha256(b"manifest"), Cid("QmManifest"))
    for h in hospitals:
        ledger.register_participant(coordinator, h.address, 10)
    ledger.open_round(coordinator, 0, sha256(b"g"), Cid("QmG"), chain.now() + 600, 3)
    for i, h in enumerate(hospitals):
        ledger.submit_update(h, 0, sha256(bytes([i])), Cid(f"QmU{i}"), 3)
    return ledger, coordinator, hospitals


def _everything(chain: EmbeddedChain, address: str) -> list[Any]:
    head = int(chain.w3.eth.block_number)
    return chain.get_logs({"address": address, "fromBlock": 0, "toBlock": head})


def _decoded_from_receipts(chain: EmbeddedChain, address: str) -> list[Any]:
    """The same query answered without the index, from py-evm's receipts."""
    head = int(chain.w3.eth.block_number)
    logs = [log for n in range(head + 1) for log in chain._read_block_logs(n)]
    return [log for log in logs if log["address"] == address]


def test_indexed_logs_equal_the_receipts_logs_and_filter_by_topic() -> None:
    chain = EmbeddedChain()
    ledger, _, hospitals = _federation(chain)
    served = _everything(chain, ledger.address)
    assert served == _decoded_from_receipts(chain, ledger.address)
    assert len(served) >= 1 + 3 + 3  # created, registered x3, opened, submitted x3
    # a topic filter selects exactly the submissions
    submitted = served[-1]["topics"][0]
    picked = chain.get_logs(
        {
            "address": ledger.address,
            "fromBlock": 0,
            "toBlock": int(chain.w3.eth.block_number),
            "topics": [submitted.to_0x_hex()],
        }
    )
    assert [log["transactionHash"] for log in picked] == [log["transactionHash"] for log in served[-3:]]
    assert len(ledger.round_history(0).updates) == len(hospitals)


def test_a_replayed_journal_serves_the_same_logs(tmp_path: Path) -> None:
    journal = tmp_path / "chain.jsonl"
    chain = EmbeddedChain(journal)
    ledger, _, _ = _federation(chain)
    before = _everything(chain, ledger.address)
    chain.close()
    replayed = EmbeddedChain(journal, read_only=True)
    served = _everything(replayed, ledger.address)
    assert served == _decoded_from_receipts(replayed, ledger.address)

    # block hashes differ between a chain and its replay (eth-tester's genesis is not the same
    # one twice); everything else in the logs is the journal's
    def without_block_hash(logs: list[Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in log.items() if k != "blockHash"} for log in logs]

    assert without_block_hash(served) == without_block_hash(before)


def test_after_a_revert_the_new_blocks_logs_are_served_not_the_old_ones() -> None:
    chain = EmbeddedChain()
    ledger, coordinator, hospitals = _federation(chain)
    ledger.close_round(coordinator, 0)
    snapshot = chain.snapshot()
    ledger.finalize_round(
        coordinator,
        0,
        sha256(b"first"),
        Cid("QmFirst"),
        sorted((h.address for h in hospitals), key=lambda a: int(a, 16)),
    )
    assert ledger.round_history(0).aggregate is not None
    chain.revert(snapshot)
    coordinator.forget_nonce(chain.chain_id)
    assert ledger.round_history(0).aggregate is None  # the finalization's block is gone
    ledger.finalize_round(
        coordinator,
        0,
        sha256(b"second"),
        Cid("QmSecond"),
        sorted((h.address for h in hospitals), key=lambda a: int(a, 16)),
    )
    aggregate = ledger.round_history(0).aggregate
    assert aggregate is not None and aggregate.aggregate_hash == sha256(b"second")
    assert _everything(chain, ledger.address) == _decoded_from_receipts(chain, ledger.address)
