"""The compiled reader of a run of leaves (fedchain/storage/_leaves.c) reads what the Python path reads.

Every verified read of the embedded store goes through it where it was built; each case here is
read both ways, with the reader and with it turned off for that store, and must give the same
bytes or the same error (type, block and problem): the reader decides nothing on its own.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from fedchain.errors import FedchainError, IntegrityError
from fedchain.storage import CHUNK_SIZE, LocalBlockStore, _local
from fedchain.storage._cid import BlockRef, block_key, parse_cid
from fedchain.storage._native import LeafReader, leaf_reader
from fedchain.storage._unixfs import MAX_LINKS, iter_dag

RandomBytes = Callable[[int, int], bytes]

pytestmark = pytest.mark.skipif(leaf_reader() is None, reason="the compiled leaf reader is not built here")


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _block_file(store: LocalBlockStore, ref: BlockRef) -> Path:
    key = block_key(ref)
    return Path(store.location, "blocks", key[-3:-1], key + ".data")


def _leaves(store: LocalBlockStore, cid: str) -> list[BlockRef]:
    return [ref for ref, block in iter_dag(store._read_block, parse_cid(cid)) if len(block) > CHUNK_SIZE // 2]


class _Counting:
    """The real compiled reader, counting the leaves it was asked for and read."""

    def __init__(self, real: LeafReader) -> None:
        self.real = real
        self.asked = 0
        self.read_ = 0

    def read(self, blocks: bytes, leaves: Sequence[tuple[bytes, bytes, bytes, int]], out: memoryview) -> int:
        self.asked += len(leaves)
        got = self.real.read(blocks, leaves, out)
        self.read_ += got
        return got


def _both_ways(store: LocalBlockStore, call: Callable[[], bytearray], monkeypatch: pytest.MonkeyPatch) -> object:
    """What ``call`` returns or raises with the compiled reader, after checking it is what the Python path gives."""

    def outcome() -> object:
        try:
            return bytes(call())
        except FedchainError as err:
            return (type(err), str(err), getattr(err, "block", None), getattr(err, "problem", None))

    with_reader = outcome()
    with monkeypatch.context() as m:
        m.setattr(_local.LocalBlockStore, "_leaf_run_reader", lambda self: None)
        without = outcome()
    assert with_reader == without
    return with_reader


def test_a_blob_of_many_leaves_is_read_in_one_run(
    store: LocalBlockStore, random_bytes: RandomBytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = leaf_reader()
    assert real is not None
    counting = _Counting(real)
    monkeypatch.setattr(_local, "leaf_reader", lambda: counting)
    data = random_bytes(10 * CHUNK_SIZE + 123, 1)
    cid = store.put(data)
    assert store.get_verified(cid, _sha(data)) == data
    assert (counting.asked, counting.read_) == (11, 11)
    assert store.get_verified(cid, _sha(data), check_cid=True) == data  # each leaf then hashed against its CID too


@pytest.mark.slow
def test_a_dag_of_two_levels_reads_the_same(
    tmp_path: Path, random_bytes: RandomBytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlockStore(tmp_path / "store", max_blob_size=64 << 20)
    data = random_bytes((MAX_LINKS + 3) * CHUNK_SIZE + 5, 2)  # a root over two inner nodes
    cid = store.put(data)
    assert _both_ways(store, lambda: store.get_verified(cid, _sha(data)), monkeypatch) == data


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize(
    "damage", ["none", "missing", "truncated", "grown", "flipped", "other envelope", "another leaf", "emptied"]
)
@pytest.mark.parametrize("check_cid", [False, True])
def test_a_damaged_leaf_is_reported_exactly_as_the_python_path_reports_it(
    damage: str,
    version: int,
    check_cid: bool,
    store: LocalBlockStore,
    random_bytes: RandomBytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random_bytes(5 * CHUNK_SIZE + 77, 3)
    cid = store.put(data, version=version)
    leaves = _leaves(store, cid)
    path = _block_file(store, leaves[2])  # a leaf in the middle of the run
    raw = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(raw[:-1])
    elif damage == "grown":
        path.write_bytes(raw + b"\0")
    elif damage == "flipped":
        changed = bytearray(raw)
        changed[len(raw) // 2] ^= 1
        path.write_bytes(bytes(changed))
    elif damage == "other envelope":
        path.write_bytes(raw.replace(b"\x08\x02", b"\x08\x00", 1))  # UnixFS Raw instead of File: same size
    elif damage == "another leaf":
        path.write_bytes(_block_file(store, leaves[0]).read_bytes())  # a valid leaf, of another chunk
    elif damage == "emptied":
        path.write_bytes(b"")
    result = _both_ways(store, lambda: store.get_verified(cid, _sha(data), check_cid=check_cid), monkeypatch)
    if damage == "none":
        assert result == data
    elif damage == "other envelope" and not check_cid:
        assert result == data  # the digest vouches for the bytes, as on the Python path
    else:
        assert isinstance(result, tuple)
        assert issubclass(result[0], FedchainError)


def _blocks_dir(store: LocalBlockStore) -> bytes:
    return os.fsencode(Path(store.location, "blocks"))


def test_a_run_larger_than_the_buffer_is_refused(store: LocalBlockStore, random_bytes: RandomBytes) -> None:
    reader = leaf_reader()
    assert reader is not None
    data = random_bytes(2 * CHUNK_SIZE, 4)
    cid = store.put(data)
    leaves = [(ref.multihash, b"", b"", CHUNK_SIZE) for ref in _leaves(store, cid)]
    with pytest.raises(ValueError, match="more bytes than the buffer"):
        reader.read(_blocks_dir(store), leaves, memoryview(bytearray(CHUNK_SIZE)))


def test_a_file_that_is_not_the_leaf_expected_stops_the_run_there(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    reader = leaf_reader()
    assert reader is not None
    data = random_bytes(3 * CHUNK_SIZE, 5)
    cid = store.put(data)
    refs = _leaves(store, cid)
    raw = _block_file(store, refs[0]).read_bytes()
    head, tail = raw[:10], raw[-4:]  # the envelope of a full chunk: 10 bytes before, 4 after
    run = [(ref.multihash, head, tail, CHUNK_SIZE) for ref in refs]
    blocks = _blocks_dir(store)
    out = memoryview(bytearray(3 * CHUNK_SIZE))
    assert reader.read(blocks, run, out) == 3
    assert bytes(out) == data
    absent = b"\x12\x20" + bytes(32)
    assert reader.read(blocks, [run[0], (absent, head, tail, CHUNK_SIZE), run[2]], out) == 1
    assert reader.read(blocks, [run[0], (run[1][0], head[:-1] + b"\0", tail, CHUNK_SIZE)], out) == 1  # another envelope
    assert reader.read(blocks, [run[0], (run[1][0], head, tail, CHUNK_SIZE - 1)], out) == 1  # another size
    assert reader.read(blocks, [run[0], (b"", head, tail, CHUNK_SIZE)], out) == 1  # no multihash
    assert reader.read(b"/" + b"x" * 5000, run, out) == 0  # a path too long for the reader


def test_the_reader_names_block_files_as_the_store_does(store: LocalBlockStore) -> None:
    reader = leaf_reader()
    assert reader is not None
    rng = random.Random(7)
    blocks = _blocks_dir(store)
    for length in [*range(2, 70), 128]:
        multihash = bytes(rng.randrange(256) for _ in range(length))
        assert reader.path(blocks, multihash) == os.fsencode(_block_file(store, BlockRef(1, 0x70, multihash)))
    assert reader.path(blocks, b"") is None
    assert reader.path(blocks, bytes(129)) is None


def test_the_environment_switch_turns_the_reader_off() -> None:
    code = "from fedchain.storage._native import leaf_reader; print(leaf_reader() is None)"
    env = {**os.environ, "FEDCHAIN_KERNELS": "numpy"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    env.pop("FEDCHAIN_KERNELS")
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert (off.stdout.strip(), on.stdout.strip()) == ("True", "False")


def test_reads_of_a_store_still_work_with_the_reader_off(
    store: LocalBlockStore, random_bytes: RandomBytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_local, "leaf_reader", lambda: None)
    data = random_bytes(3 * CHUNK_SIZE + 1, 6)
    cid = store.put(data)
    assert store._leaf_run_reader() is None
    assert store.get_verified(cid, _sha(data)) == data
    _block_file(store, _leaves(store, cid)[1]).write_bytes(b"x" * (CHUNK_SIZE + 14))
    with pytest.raises(IntegrityError):
        store.get_verified(cid, _sha(data))
