"""Several participants submitting into the same block, on a real node."""

from __future__ import annotations

import threading
import time

from fedchain.chain import Ledger, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.hashing import sha256
from fedchain.types import Cid


def test_three_submissions_mined_in_one_block_are_all_recorded(anvil_node: AnvilNode) -> None:
    chain = connect(anvil_node.url)
    coordinator = Signer.create("coordinator")
    hospitals = [Signer.create(f"h{i}") for i in range(3)]
    for s in (coordinator, *hospitals):
        chain.fund(s.address)
    ledger, _ = Ledger.deploy(chain, coordinator, sha256(b"g"), Cid("QmG"), sha256(b"manifest"), Cid("QmManifest"))
    for h in hospitals:
        ledger.register_participant(coordinator, h.address, 100)
    ledger.open_round(coordinator, 0, sha256(b"g"), Cid("QmG"), chain.now() + 600, 3)

    provider = chain.w3.provider
    provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    results: dict[str, int] = {}
    errors: list[BaseException] = []
    try:

        def submit(h: Signer) -> None:
            try:
                results[h.address] = ledger.submit_update(h, 0, sha256(h.address.encode()), Cid("QmU"), 5).block_number
            except BaseException as err:  # re-raised below
                errors.append(err)

        threads = [threading.Thread(target=submit, args=(h,)) for h in hospitals]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = provider.make_request("txpool_status", [])["result"]  # type: ignore[arg-type]
            if int(pending["pending"], 16) >= 3:
                break
            time.sleep(0.05)
        provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        for t in threads:
            t.join(timeout=60)
    finally:
        provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    assert errors == []
    assert len(set(results.values())) == 1, results
    history = ledger.round_history(0)
    assert {u.participant for u in history.updates} == {h.address for h in hospitals}
