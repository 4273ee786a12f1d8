"""Read buffers are used again only once nothing refers to them, and a read returns only its own bytes."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from fedchain.errors import DigestMismatchError
from fedchain.storage import LocalBlockStore
from fedchain.storage._buffers import MIN_POOLED, SLACK, BufferPool, new_buffer, reading_into

SIZE = MIN_POOLED + 12_345


def _blobs(store: LocalBlockStore, count: int, size: int = SIZE) -> list[tuple[str, bytes, bytes]]:
    rng = np.random.default_rng(size)
    out = []
    for i in range(count):
        data = rng.integers(0, 256, size + 8 * i, dtype=np.uint8).tobytes()
        out.append((store.put(data), hashlib.sha256(data).digest(), data))
    return out


def test_a_buffer_is_filled_again_only_after_its_holder_let_go_of_it(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path)
    (cid_a, sha_a, _), (cid_b, sha_b, b), (cid_c, sha_c, c) = _blobs(store, 3)
    pool = BufferPool(keep=4)
    with reading_into(pool):
        first = store.get_verified(cid_a, sha_a)
        second = store.get_verified(cid_b, sha_b)  # the first is still held: a buffer of its own
        assert pool.reused == 0 and first is not second
        address = np.frombuffer(first, np.uint8).ctypes.data
        view = np.frombuffer(second, np.uint8)  # a view of the second keeps it held
        del first, second
        third = store.get_verified(cid_c, sha_c)
        assert pool.reused == 1 and np.frombuffer(third, np.uint8).ctypes.data == address  # the first's memory
        assert bytes(third) == c and bytes(view) == b  # each read's own bytes, the held one untouched
        assert len(third) == len(c)


def test_a_read_that_fails_returns_nothing_and_its_buffer_serves_the_next(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path)
    (cid_a, _, _), (cid_b, sha_b, b) = _blobs(store, 2)
    pool = BufferPool(keep=2)
    with reading_into(pool):
        with pytest.raises(DigestMismatchError):
            store.get_verified(cid_a, sha_b)
        got = store.get_verified(cid_b, sha_b)
    assert bytes(got) == b and pool.reused == 1


def test_outside_the_context_and_for_small_blobs_every_read_gets_a_new_buffer(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path)
    [(cid, sha, data)] = _blobs(store, 1)
    [(small_cid, small_sha, small)] = _blobs(store, 1, size=MIN_POOLED // 2)
    pool = BufferPool(keep=2)
    with reading_into(pool):
        for _ in range(3):
            assert store.get_verified(small_cid, small_sha) == small
    assert pool.reused == 0
    for _ in range(3):
        assert store.get_verified(cid, sha) == data
    assert pool.reused == 0 and len(new_buffer(7)) == 7


def test_the_pool_is_per_thread_context_and_holds_at_most_keep_buffers(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path)
    blobs = _blobs(store, 6)
    pool = BufferPool(keep=2)
    held = []
    with reading_into(pool):
        for cid, sha, data in blobs:
            held.append(store.get_verified(cid, sha))
            assert held[-1] == data
        seen: list[int] = []
        # another thread reads outside the context: never from the pool
        worker = threading.Thread(target=lambda: seen.append(len(store.get_verified(*blobs[0][:2]))))
        worker.start()
        worker.join()
    assert seen == [len(blobs[0][2])] and len(pool._buffers) == 2 and pool.reused == 0


def test_a_much_larger_blob_does_not_fit_an_old_buffer_and_gets_its_own(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path)
    [(cid_a, sha_a, _)] = _blobs(store, 1)
    [(cid_b, sha_b, b)] = _blobs(store, 1, size=SIZE + 2 * SLACK)
    pool = BufferPool(keep=1)
    with reading_into(pool):
        store.get_verified(cid_a, sha_a)
        assert store.get_verified(cid_b, sha_b) == b
    assert pool.reused == 0
