"""The audit's ``details=`` gas comes from blocks, and equals the sum of the transactions' receipts."""

from __future__ import annotations

from pathlib import Path

from benchmarks.audit import History
from fedchain.audit import audit_ledger
from fedchain.chain import EmbeddedChain
from fedchain.storage import open_store


def test_details_gas_and_times_equal_what_the_receipts_and_blocks_say(tmp_path: Path) -> None:
    chain = EmbeddedChain()
    try:
        store = open_store(str(tmp_path / "store"), max_blob_size=1 << 20)
        history = History(chain, store, 2, 1000)
        history.grow(2)
        r = history.ledger.next_round()
        history.ledger.open_round(history.coordinator, r, *history.base, chain.now() + 3600, 2)
        history.ledger.abandon_round(history.coordinator, r)
        report = audit_ledger(history.ledger, store, details=True)
        assert report.ok
        w3 = chain.w3
        assert sorted(report.details) == [0, 1, 2]
        for d in report.details.values():
            h = d.history
            txs = [h.opened.tx_hash, *(u.tx_hash for u in h.updates)]
            txs += [e.tx_hash for e in (h.closed, h.aggregate, h.abandoned) if e is not None]
            assert d.gas == sum(int(w3.eth.get_transaction_receipt(t)["gasUsed"]) for t in txs)  # type: ignore[arg-type]
            assert d.opened_time == int(w3.eth.get_block(h.state.opened_block)["timestamp"])
            assert d.end_time == int(w3.eth.get_block(h.state.end_block)["timestamp"])
    finally:
        chain.close()
