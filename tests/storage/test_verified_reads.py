"""get_verified: a blob read against the sha256 the ledger holds, each byte hashed once.

What it must do: return exactly the blob, in a fresh buffer, only if it hashes to the given
digest; report a damaged block as get reports it; check the DAG's inner nodes and sizes as
get does; hold about one copy of the blob. What it deliberately no longer does unless asked
(check_cid=True): prove that the leaf blocks are the ones the CID names.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from fedchain.errors import BlobNotFoundError, BlobTooLargeError, IntegrityError
from fedchain.storage import CHUNK_SIZE, DigestMismatchError, KuboStore, LocalBlockStore
from fedchain.storage._cid import (
    DAG_PB,
    RAW,
    BlockRef,
    block_key,
    parse_cid,
    sha256_ref,
)
from fedchain.storage._dagpb import Link, file_node, uvarint
from fedchain.storage._unixfs import iter_dag

RandomBytes = Callable[[int, int], bytes]

#: A root over three leaves (262,144 + 262,144 + 75,712 bytes).
SIZE = 600_000


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _block_file(store: LocalBlockStore, ref: BlockRef) -> Path:
    key = block_key(ref)
    return Path(store.location, "blocks", key[-3:-1], key + ".data")


def _blocks(store: LocalBlockStore, cid: str) -> list[BlockRef]:
    """The blob's blocks, root first, then its leaves in order."""
    return [ref for ref, _ in iter_dag(store._read_block, parse_cid(cid))]


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _store_block(store: LocalBlockStore, block: bytes, codec: int = DAG_PB, version: int = 0) -> BlockRef:
    ref = sha256_ref(_sha(block), version, codec)
    store._write_block(ref.multihash, (block,))
    return ref


def _leaf(data: bytes) -> bytes:
    inner = b"\x08\x02\x12" + uvarint(len(data)) + data + b"\x18" + uvarint(len(data))
    return b"\x0a" + uvarint(len(inner)) + inner


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, SIZE])
def test_a_verified_read_returns_the_blob_in_a_fresh_buffer(
    store: LocalBlockStore, random_bytes: RandomBytes, size: int
) -> None:
    data = random_bytes(size, size)
    cid = store.put(data)
    got = store.get_verified(cid, _sha(data))
    assert isinstance(got, bytearray)
    assert got == data
    assert store.get_verified(cid, _sha(data), check_cid=True) == data
    assert store.get_verified(store.put(data, version=1), _sha(data)) == data


def test_a_digest_that_does_not_match_fails_and_returns_nothing(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    data = random_bytes(SIZE, 1)
    cid = store.put(data)
    wrong = _sha(b"what the ledger says instead")
    with pytest.raises(DigestMismatchError) as info:
        store.get_verified(cid, wrong)
    assert (info.value.cid, info.value.expected, info.value.actual) == (cid, wrong, _sha(data))
    assert f"0x{_sha(data).hex()}" in str(info.value) and f"0x{wrong.hex()}" in str(info.value)
    with pytest.raises(DigestMismatchError):
        store.get_verified(cid, wrong, check_cid=True)


@pytest.mark.parametrize("which", ["root", "first leaf", "last leaf"])
def test_a_corrupted_block_on_disk_is_caught_and_named(
    which: str, store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    data = random_bytes(SIZE, 2)
    cid = store.put(data)
    blocks = _blocks(store, cid)
    ref = {"root": blocks[0], "first leaf": blocks[1], "last leaf": blocks[-1]}[which]
    _flip(_block_file(store, ref))
    for check_cid in (False, True):
        with pytest.raises(IntegrityError) as info:
            store.get_verified(cid, _sha(data), check_cid=check_cid)
        # the digest check fails; the read is then redone block by block to say which block is bad
        assert (info.value.cid, info.value.block) == (cid, str(ref))
        assert not isinstance(info.value, DigestMismatchError)


def test_a_corrupted_one_block_blob_is_caught_and_named(store: LocalBlockStore) -> None:
    data = b"a small blob, its root is its only leaf" * 100
    cid = store.put(data)
    [root] = _blocks(store, cid)
    _flip(_block_file(store, root))
    with pytest.raises(IntegrityError) as info:
        store.get_verified(cid, _sha(data))
    assert (info.value.cid, info.value.block) == (cid, str(root))


def test_a_corrupted_inner_node_is_caught_before_its_links_are_followed(store: LocalBlockStore) -> None:
    # root -> two inner nodes -> two leaves each: inner nodes are checked against their CIDs
    chunks = [bytes([65 + i]) * (10 + i) for i in range(4)]
    leaves = [_store_block(store, _leaf(c)) for c in chunks]
    inner = [
        file_node([Link(leaves[i].binary(), len(_leaf(chunks[i])), len(chunks[i])) for i in pair])
        for pair in ((0, 1), (2, 3))
    ]
    inner_refs = [_store_block(store, block) for block in inner]
    sizes = [len(chunks[0]) + len(chunks[1]), len(chunks[2]) + len(chunks[3])]
    root = _store_block(
        store, file_node([Link(ref.binary(), 100, size) for ref, size in zip(inner_refs, sizes, strict=True)])
    )
    data = b"".join(chunks)
    assert store.get_verified(root.text(), _sha(data)) == data
    _flip(_block_file(store, inner_refs[1]))
    with pytest.raises(IntegrityError) as info:
        store.get_verified(root.text(), _sha(data))
    assert info.value.block == str(inner_refs[1])


def test_sizes_are_checked_as_get_checks_them(store: LocalBlockStore) -> None:
    leaf = _store_block(store, _leaf(b"a" * 100))
    root = _store_block(store, file_node([Link(leaf.binary(), 114, 50)]))  # the root says 50, the leaf holds 100
    with pytest.raises(IntegrityError, match="holds 100 bytes but its parent"):
        store.get_verified(root.text(), _sha(b"a" * 100))


def test_raw_leaves_and_cidv1_links_read_verified(store: LocalBlockStore) -> None:
    chunks = [b"c" * CHUNK_SIZE, b"d" * 5]
    leaves = [_store_block(store, chunk, RAW, 1) for chunk in chunks]
    root = _store_block(
        store, file_node([Link(ref.binary(), len(c), len(c)) for ref, c in zip(leaves, chunks, strict=True)]), DAG_PB, 1
    )
    data = b"".join(chunks)
    assert store.get_verified(root.text(), _sha(data)) == data
    assert store.get_verified(root.text(), _sha(data), check_cid=True) == data


def test_leaves_under_the_wrong_names_pass_the_digest_check_unless_the_cids_are_checked(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    # What a digest-verified read gives up: the store (damaged or lying) holds other bytes
    # under a leaf's name. The bytes returned are exactly the ones the digest names, but
    # the CID does not name them, so another IPFS node would serve something else.
    data = random_bytes(SIZE, 3)
    cid = store.put(data)
    leaf = _blocks(store, cid)[1]
    other = random_bytes(CHUNK_SIZE, 4)
    _block_file(store, leaf).write_bytes(_leaf(other))
    served = other + data[CHUNK_SIZE:]
    assert store.get_verified(cid, _sha(served)) == served
    with pytest.raises(IntegrityError) as info:
        store.get_verified(cid, _sha(served), check_cid=True)
    assert info.value.block == str(leaf)
    with pytest.raises(IntegrityError):
        store.get(cid)


def test_a_blob_over_the_limit_is_refused_before_its_leaves_are_read(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    data = random_bytes(SIZE, 5)
    cid = store.put(data)
    for ref in _blocks(store, cid)[1:]:
        _block_file(store, ref).unlink()
    with pytest.raises(BlobTooLargeError):
        store.get_verified(cid, _sha(data), max_size=SIZE - 1)
    with pytest.raises(BlobNotFoundError):
        store.get_verified(cid, _sha(data))


def test_a_digest_must_be_32_bytes(store: LocalBlockStore) -> None:
    cid = store.put(b"x")
    with pytest.raises(ValueError, match="32-byte"):
        store.get_verified(cid, _sha(b"x").hex().encode())


def test_the_kubo_backend_reads_verified_the_same_way(random_bytes: RandomBytes, kubo) -> None:  # type: ignore[no-untyped-def]
    data = random_bytes(SIZE, 6)
    store = KuboStore(kubo.url)
    try:
        cid = store.put(data)
        assert store.get_verified(cid, _sha(data)) == data
        with pytest.raises(DigestMismatchError):
            store.get_verified(cid, _sha(b"other"))
        leaf = _blocks(kubo.store, cid)[2]
        kubo.corrupt.add(leaf.multihash)  # the daemon corrupts it on the way out
        with pytest.raises(IntegrityError) as info:
            store.get_verified(cid, _sha(data))
        assert info.value.block == str(leaf)
    finally:
        store.close()


@pytest.mark.slow
def test_a_verified_read_of_a_large_blob_holds_one_copy(tmp_path: Path, random_bytes: RandomBytes) -> None:
    size = 64 << 20
    store = LocalBlockStore(tmp_path / "store", max_blob_size=size)
    data = random_bytes(size, 7)
    cid = store.put(data)
    digest = _sha(data)
    del data
    tracemalloc.start()
    try:
        blob = store.get_verified(cid, digest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(blob) == size
    print(f"verified read of {size} bytes peaked at {peak} bytes")
    assert peak < size + 4 * CHUNK_SIZE, f"peaked at {peak} bytes: more than one copy of the blob and a few blocks"


@pytest.mark.parametrize("change", ["truncated", "grown"])
def test_a_leaf_file_of_the_wrong_size_is_reported_as_get_reports_it(
    change: str, store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    # a leaf is read straight into the blob's buffer only if its file is exactly the leaf
    # expected there; anything else goes through the block-by-block path and its errors
    data = random_bytes(SIZE, 8)
    cid = store.put(data)
    path = _block_file(store, _blocks(store, cid)[2])
    raw = path.read_bytes()
    path.write_bytes(raw[:1000] if change == "truncated" else raw + b"\0")
    with pytest.raises(IntegrityError) as expected:
        store.get(cid)
    with pytest.raises(IntegrityError) as info:
        store.get_verified(cid, _sha(data))
    assert (info.value.cid, info.value.block, info.value.problem) == (
        expected.value.cid,
        expected.value.block,
        expected.value.problem,
    )


def test_a_leaf_in_another_encoding_of_the_same_bytes_is_decoded_the_general_way(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    data = random_bytes(SIZE, 9)
    cid = store.put(data)
    leaf = _blocks(store, cid)[1]
    raw_type = _leaf(data[:CHUNK_SIZE]).replace(
        b"\x08\x02", b"\x08\x00", 1
    )  # UnixFS Raw instead of File: other bytes, same data
    _block_file(store, leaf).write_bytes(raw_type)
    assert store.get_verified(cid, _sha(data)) == data  # the digest vouches for the bytes
    with pytest.raises(IntegrityError, match="do not hash"):
        store.get_verified(cid, _sha(data), check_cid=True)  # the CID does not name that block
