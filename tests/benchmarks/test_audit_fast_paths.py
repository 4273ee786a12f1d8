"""The audit's cheaper paths give what the plain definitions give: details' gas from blocks, sketches in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.audit import History
from fedchain.audit import SKETCH_RUN, SKETCH_SIZE, RoundDetails, _sketch, audit_ledger
from fedchain.chain import EmbeddedChain
from fedchain.protocol.blobs import read_update
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


@pytest.mark.parametrize("seed", range(20))
def test_a_sketch_is_evenly_spaced_runs_of_the_tensors_laid_end_to_end(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shapes = [
        tuple(int(x) for x in rng.integers(1, 200, int(rng.integers(1, 3)))) for _ in range(int(rng.integers(1, 5)))
    ]
    delta = {f"t{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    size = int(rng.integers(1, 2000))
    sketch = _sketch(delta, size)
    assert sketch.dtype == np.float64
    assert sketch.tobytes() == _by_definition(delta, size).tobytes()


def _by_definition(delta: dict[str, np.ndarray], size: int) -> np.ndarray:
    """The sketch as its docstring defines it: runs of SKETCH_RUN, run r at r * (total // runs), over the
    tensors laid end to end in name order."""
    flat = np.concatenate([np.asarray(delta[k]).reshape(-1) for k in sorted(delta)])
    if flat.size <= size:
        positions = list(range(flat.size))
    else:
        run = min(SKETCH_RUN, size)
        runs = size // run
        positions = [r * (flat.size // runs) + j for r in range(runs) for j in range(run)]
    return flat[positions].astype(np.float64)


@pytest.mark.parametrize("seed", range(40))
def test_a_sketch_of_tensors_shorter_than_a_run_or_strided_is_the_same_sample(seed: int) -> None:
    """Runs that span several tensors (some shorter than a run) and tensors that are strided views."""
    rng = np.random.default_rng(1000 + seed)
    delta = {
        f"t{i}": rng.standard_normal(int(rng.integers(1, 40))).astype(np.float32)
        for i in range(int(rng.integers(1, 8)))
    }
    if seed % 3 == 0:
        delta["t0"] = rng.standard_normal((7, 9)).astype(np.float32)[:, ::2]  # not contiguous
    size = int(rng.integers(1, 80))
    assert _sketch(delta, size).tobytes() == _by_definition(delta, size).tobytes()


def test_a_rounds_cosine_matrix_is_kept_and_its_sketches_let_go(tmp_path: Path) -> None:
    chain = EmbeddedChain()
    try:
        store = open_store(str(tmp_path / "store"), max_blob_size=1 << 20)
        history = History(chain, store, 3, 5000)
        history.grow(2)
        report = audit_ledger(history.ledger, store)
        assert report.ok
        for r, d in report.details.items():
            assert d.settled and d.sketches == {}  # held no longer than its round
            fresh = RoundDetails(d.history)
            for u in d.history.updates:
                blob = store.get_verified(u.cid, u.update_hash)
                delta = read_update(blob, history.rules, u, base_hash=d.history.opened.base_hash).delta
                fresh.sketches[u.participant] = _sketch(delta, SKETCH_SIZE)
            assert d.cosine() == fresh.cosine() is not None
            assert report.to_json()["rounds"][r]["cosine"]["matrix"] == fresh.cosine()[1]  # type: ignore[index]
    finally:
        chain.close()
