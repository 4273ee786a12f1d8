"""The audit's read-ahead hands the verifier exactly what its own reads would have returned or raised.

The rounds come from a stand-in for the ledger (a list of real records over real blobs in a
real store): what is tested is the read-ahead's bookkeeping, not the chain; the audit tests
run it against real chains.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_utils.address import to_checksum_address

from fedchain.audit._readahead import DEPTH, ReadAhead
from fedchain.errors import BlobNotFoundError, ChainError
from fedchain.fl.codec import sum_of_squares_after_header
from fedchain.records import (
    AggregateRecord,
    RoundHistory,
    RoundOpened,
    RoundState,
    RoundStatus,
    UpdateRecord,
)
from fedchain.storage import DigestMismatchError, LocalBlockStore
from fedchain.types import Address, Cid, Digest, RoundId

LIMIT = 1 << 20
PEOPLE = [Address(to_checksum_address("0x" + f"{i:02x}" * 20)) for i in (0x11, 0x22)]


class Ledger:
    """A stand-in for :class:`fedchain.chain.Ledger`: the rounds given, then maybe a chain failure."""

    def __init__(self, rounds: list[RoundHistory], fail_after: int | None = None) -> None:
        self.rounds, self.fail_after = rounds, fail_after

    def history(self) -> Iterator[RoundHistory]:
        for i, h in enumerate(self.rounds):
            if i == self.fail_after:
                raise ChainError("the node went away")
            yield h


class Watched:
    """The real store, noting which thread reads what, and whether two reads ever overlap."""

    def __init__(self, store: LocalBlockStore, concurrent: bool) -> None:
        self._store, self.concurrent_reads = store, concurrent
        self.reads: list[tuple[str, str]] = []
        self._active = 0
        self.overlapped = False
        self._lock = threading.Lock()

    def get_verified(
        self, cid: str, sha256: bytes, *, max_size: int | None = None, check_cid: bool = False
    ) -> bytearray:
        with self._lock:
            self._active += 1
            self.overlapped |= self._active > 1
            self.reads.append((threading.current_thread().name, cid))
        try:
            time.sleep(0.002)  # long enough for an overlap to show
            return self._store.get_verified(cid, sha256, max_size=max_size, check_cid=check_cid)
        finally:
            with self._lock:
                self._active -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _sha(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).digest())


def _history(store: LocalBlockStore, r: int, *, missing: bool = False, floats: bool = False) -> RoundHistory:
    updates = []
    for i, who in enumerate(PEOPLE):
        blob = f"update {r} {who}".encode() * 1000
        if floats:  # an 8-byte header, then float32 values: what a sum of squares is computed over
            values = np.arange(1000 * r + 100 * i, 1000 * r + 100 * i + 3000, dtype=np.float32) / np.float32(7)
            blob = (8).to_bytes(8, "little") + b"{}      " + values.tobytes()
        cid = (
            store.put(blob)
            if not (missing and who == PEOPLE[1])
            else LocalBlockStore(Path(store.location).parent / "elsewhere").put(blob)
        )
        updates.append(UpdateRecord(RoundId(r), who, _sha(blob), cid, 10, 1, "0x"))
    aggregate = f"aggregate {r}".encode() * 1000
    record = AggregateRecord(RoundId(r), _sha(aggregate), store.put(aggregate), tuple(PEOPLE), 2, "0x")
    state = RoundState(RoundId(r), RoundStatus.FINALIZED, 0, 2, 2, 1, 2, 2)
    return RoundHistory(
        state, RoundOpened(RoundId(r), _sha(b"base"), Cid("QmBase"), 0, 2, 1, "0x"), tuple(updates), record
    )


def _reads(h: RoundHistory) -> list[tuple[Cid, Digest]]:
    assert h.aggregate is not None
    return [(u.cid, u.update_hash) for u in h.updates] + [(h.aggregate.cid, h.aggregate.aggregate_hash)]


@pytest.mark.parametrize("concurrent", [True, False])
def test_the_verifier_gets_each_blob_it_asks_for_read_ahead(tmp_path: Path, concurrent: bool) -> None:
    store = LocalBlockStore(tmp_path / "store")
    rounds = [_history(store, r) for r in range(6)]
    watched = Watched(store, concurrent)
    with ReadAhead(Ledger(rounds), watched, max_blob_size=LIMIT) as reader:
        seen = []
        for h in reader.rounds():
            seen.append(h)
            for cid, digest in _reads(h):
                assert reader.store.get_verified(cid, digest, max_size=LIMIT) == store.get_verified(cid, digest)
    assert seen == rounds
    ahead = [cid for thread, cid in watched.reads if thread.startswith("fedchain-audit-read")]
    assert ahead == [cid for h in rounds for cid, _ in _reads(h)]  # every read made ahead, once, in order
    assert watched.overlapped is concurrent  # a store that cannot be read concurrently is not


def test_a_read_that_failed_ahead_fails_when_the_verifier_makes_it(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "store")
    rounds = [_history(store, 0), _history(store, 1, missing=True), _history(store, 2)]
    with ReadAhead(Ledger(rounds), store, max_blob_size=LIMIT) as reader:
        r0, r1 = next(iter_ := reader.rounds()), next(iter_)
        del r0
        first, second = r1.updates
        assert reader.store.get_verified(first.cid, first.update_hash, max_size=LIMIT)
        with pytest.raises(BlobNotFoundError) as ahead:
            reader.store.get_verified(second.cid, second.update_hash, max_size=LIMIT)
        with pytest.raises(BlobNotFoundError) as direct:
            store.get_verified(second.cid, second.update_hash, max_size=LIMIT)
        assert str(ahead.value) == str(direct.value)
        assert [h.state.round_id for h in iter_] == [2]


def test_reads_the_verifier_does_not_make_are_dropped_and_others_are_made_directly(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "store")
    rounds = [_history(store, r) for r in range(4)]
    base = b"a base model" * 100
    base_cid = store.put(base)
    with ReadAhead(Ledger(rounds), store, max_blob_size=LIMIT) as reader:
        for i, h in enumerate(reader.rounds()):
            # not planned: made now
            assert reader.store.get_verified(base_cid, _sha(base), max_size=LIMIT) == base
            with pytest.raises(DigestMismatchError):
                reader.store.get_verified(base_cid, _sha(b"other"), max_size=LIMIT)
            reads = _reads(h)
            if i % 2:  # a round that failed early reads only its first update
                reads = reads[:1]
            for cid, digest in reads:
                assert reader.store.get_verified(cid, digest, max_size=LIMIT) == store.get_verified(cid, digest)


def test_a_chain_failure_is_raised_when_its_round_is_reached(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "store")
    rounds = [_history(store, r) for r in range(3)]
    got = []
    with (
        ReadAhead(Ledger(rounds, fail_after=2), store, max_blob_size=LIMIT) as reader,
        pytest.raises(ChainError, match="went away"),
    ):
        for h in reader.rounds():
            got.append(int(h.state.round_id))
            for cid, digest in _reads(h):
                reader.store.get_verified(cid, digest, max_size=LIMIT)
    assert got == [0, 1]


def test_no_more_than_depth_blobs_are_read_ahead(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "store")
    rounds = [_history(store, r) for r in range(5)]
    watched = Watched(store, True)
    with ReadAhead(Ledger(rounds), watched, max_blob_size=LIMIT) as reader:
        next(reader.rounds())
        time.sleep(0.2)  # let the workers run as far as they may
        assert len(watched.reads) == DEPTH


def test_with_squares_each_update_read_ahead_comes_with_its_sum_of_squares_and_nothing_else_does(
    tmp_path: Path,
) -> None:
    store = LocalBlockStore(tmp_path / "store")
    rounds = [_history(store, r, floats=True) for r in range(3)]
    with ReadAhead(Ledger(rounds), store, max_blob_size=LIMIT, squares=True) as reader:
        for h in reader.rounds():
            assert h.aggregate is not None
            for u in h.updates:
                blob = reader.store.get_verified(u.cid, u.update_hash, max_size=LIMIT)
                expected = sum_of_squares_after_header(blob)
                assert expected is not None and expected.start == 16
                assert reader.store.squares_of(bytearray(blob)) is None  # an equal copy is not that buffer
                assert reader.store.squares_of(blob) == expected
                assert reader.store.squares_of(blob) is None  # handed over once
            blob = reader.store.get_verified(h.aggregate.cid, h.aggregate.aggregate_hash, max_size=LIMIT)
            assert reader.store.squares_of(blob) is None  # an aggregate's norm is nobody's business
    with ReadAhead(Ledger(rounds), store, max_blob_size=LIMIT) as reader:
        for h in reader.rounds():
            u = h.updates[0]
            assert reader.store.squares_of(reader.store.get_verified(u.cid, u.update_hash, max_size=LIMIT)) is None


def test_sums_of_squares_the_verifier_never_asks_for_do_not_keep_their_buffers(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "store")
    rounds = [_history(store, r, floats=True) for r in range(2 * DEPTH)]
    with ReadAhead(Ledger(rounds), store, max_blob_size=LIMIT, squares=True) as reader:
        for h in reader.rounds():
            for u in h.updates:
                reader.store.get_verified(u.cid, u.update_hash, max_size=LIMIT)
        assert 0 < len(reader.store._squares) <= DEPTH
