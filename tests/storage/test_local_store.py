"""The embedded store: round trips, verification of every block on read, size limits, pins."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fedchain.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CidFormatError,
    IntegrityError,
    StoreUnavailableError,
)
from fedchain.storage import CHUNK_SIZE, BlobStore, LocalBlockStore, cid_of, open_store
from fedchain.storage._cid import DAG_PB, RAW, BlockRef, block_key, parse_cid, sha256_ref
from fedchain.storage._dagpb import Link, file_node, uvarint
from fedchain.storage._unixfs import iter_dag

RandomBytes = Callable[[int, int], bytes]

#: 600,000 bytes: a root over three leaves (262,144 + 262,144 + 75,712).
SIZE = 600_000


def block_files(store: LocalBlockStore, cid: str) -> list[tuple[BlockRef, Path]]:
    """Every block of the blob with its file, root first."""
    refs = [ref for ref, _ in iter_dag(store._read_block, parse_cid(cid))]
    return [(ref, Path(store.location, "blocks", block_key(ref)[-3:-1], block_key(ref) + ".data")) for ref in refs]


def test_local_store_is_a_blob_store(store: LocalBlockStore) -> None:
    assert isinstance(store, BlobStore)


def test_bytes_round_trip(store: LocalBlockStore, random_bytes: RandomBytes) -> None:
    data = random_bytes(SIZE, 1)
    cid = store.put(data)
    assert cid == cid_of(data)
    assert store.get(cid) == data
    assert store.size(cid) == SIZE
    assert store.has(cid)


def test_stream_round_trip_through_files(store: LocalBlockStore, random_bytes: RandomBytes, tmp_path: Path) -> None:
    data = random_bytes(SIZE, 2)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    with src.open("rb") as f:
        cid = store.put_stream(f)
    with (tmp_path / "out.bin").open("wb") as out:
        assert store.get_to(cid, out) == SIZE
    assert (tmp_path / "out.bin").read_bytes() == data


def test_a_cidv1_reads_the_same_blob(store: LocalBlockStore, random_bytes: RandomBytes) -> None:
    data = random_bytes(SIZE, 3)
    v1 = store.put(data, version=1)
    assert v1.startswith("bafybei")
    assert store.get(v1) == data
    assert store.get(store.put(data)) == data


def test_the_empty_blob_round_trips(store: LocalBlockStore) -> None:
    cid = store.put(b"")
    assert store.get(cid) == b""
    assert store.size(cid) == 0


def test_adding_twice_changes_nothing(store: LocalBlockStore, random_bytes: RandomBytes) -> None:
    data = random_bytes(SIZE, 4)
    cid = store.put(data)
    files = sorted(p.name for p in Path(store.location, "blocks").rglob("*.data"))
    assert store.put(data) == cid
    assert sorted(p.name for p in Path(store.location, "blocks").rglob("*.data")) == files
    assert len(files) == 4


def test_blocks_live_in_kubo_flatfs_layout(store: LocalBlockStore) -> None:
    cid = store.put(b"hello\n")
    key = block_key(parse_cid(cid))
    assert key.startswith("CIQ")  # base32 of a sha2-256 multihash, as in a kubo repo
    assert Path(store.location, "blocks", key[-3:-1], key + ".data").is_file()


@pytest.mark.parametrize("which", ["root", "first leaf", "last leaf"])
def test_a_flipped_byte_in_any_block_file_is_caught_on_get(
    which: str, store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    cid = store.put(random_bytes(SIZE, 5))
    blocks = block_files(store, cid)
    ref, path = {"root": blocks[0], "first leaf": blocks[1], "last leaf": blocks[-1]}[which]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as info:
        store.get(cid)
    assert info.value.cid == cid
    assert info.value.block == str(ref)
    with pytest.raises(IntegrityError):
        store.get_to(cid, io.BytesIO())


def test_a_truncated_block_file_is_caught_on_get(store: LocalBlockStore, random_bytes: RandomBytes) -> None:
    cid = store.put(random_bytes(SIZE, 6))
    ref, path = block_files(store, cid)[2]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match=str(ref)):
        store.get(cid)


def test_an_oversized_block_file_is_refused_without_reading_it_all(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    cid = store.put(random_bytes(SIZE, 7))
    ref, path = block_files(store, cid)[1]
    with path.open("ab") as f:
        f.write(b"\0" * (2 << 20))
    with pytest.raises(IntegrityError, match="block limit"):
        store.get(cid)


def test_a_missing_block_is_not_found_naming_the_block(store: LocalBlockStore, random_bytes: RandomBytes) -> None:
    cid = store.put(random_bytes(SIZE, 8))
    ref, path = block_files(store, cid)[2]
    path.unlink()
    assert not store.has(cid)
    with pytest.raises(BlobNotFoundError) as info:
        store.get(cid)
    assert (info.value.cid, info.value.block) == (cid, str(ref))


def test_a_blob_never_added_is_not_found(store: LocalBlockStore) -> None:
    with pytest.raises(BlobNotFoundError):
        store.get(cid_of(b"never added"))
    assert not store.has(cid_of(b"never added"))


def test_put_refuses_a_blob_over_the_limit(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "s", max_blob_size=1000)
    with pytest.raises(BlobTooLargeError) as info:
        store.put(b"x" * 1001)
    assert (info.value.size, info.value.limit) == (1001, 1000)
    assert store.put(b"x" * 1000) == cid_of(b"x" * 1000)


def test_put_stream_refuses_a_file_over_the_limit_before_reading_it(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "s", max_blob_size=CHUNK_SIZE)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (CHUNK_SIZE + 1))
    with big.open("rb") as f:
        with pytest.raises(BlobTooLargeError) as info:
            store.put_stream(f)
        assert f.tell() == 0
    assert info.value.size == CHUNK_SIZE + 1
    assert not list(Path(store.location, "blocks").rglob("*.data"))


def test_put_stream_of_unknown_length_stops_at_the_limit(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "s", max_blob_size=2 * CHUNK_SIZE)
    read, write = os.pipe()
    os.write(write, b"y" * 60_000)  # fits the pipe buffer; the rest is never asked for
    os.close(write)

    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
            buf[: len(buf)] = b"z" * len(buf)
            return len(buf)

    with pytest.raises(BlobTooLargeError):
        store.put_stream(Endless())  # type: ignore[arg-type]
    with os.fdopen(read, "rb") as pipe:
        assert store.put_stream(pipe) == cid_of(b"y" * 60_000)


def test_get_refuses_a_blob_over_the_limit_before_reading_past_the_root(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    cid = store.put(random_bytes(SIZE, 9))
    for _, path in block_files(store, cid)[1:]:
        path.unlink()  # had get read a leaf, this would be BlobNotFoundError
    with pytest.raises(BlobTooLargeError) as info:
        store.get(cid, max_size=SIZE - 1)
    assert (info.value.size, info.value.limit) == (SIZE, SIZE - 1)
    small = LocalBlockStore(store.location, max_blob_size=SIZE - 1)
    with pytest.raises(BlobTooLargeError):
        small.get(cid, max_size=10 * SIZE)  # the store's own limit still applies
    with pytest.raises(BlobTooLargeError):
        small.get_to(cid, io.BytesIO())


def _store_block(store: LocalBlockStore, block: bytes, codec: int = DAG_PB, version: int = 0) -> BlockRef:
    ref = sha256_ref(hashlib.sha256(block).digest(), version, codec)
    store._write_block(ref.multihash, (block,))
    return ref


def _leaf(data: bytes) -> bytes:
    inner = b"\x08\x02\x12" + uvarint(len(data)) + data + b"\x18" + uvarint(len(data))
    return b"\x0a" + uvarint(len(inner)) + inner


def test_a_root_that_lies_about_a_child_size_is_an_integrity_error(store: LocalBlockStore) -> None:
    # Every block hashes correctly; only the sizes disagree (a forged, "truncated" blob).
    leaf = _store_block(store, _leaf(b"a" * 100))
    forged = file_node([Link(leaf.binary(), 114, 50)])
    root = _store_block(store, forged)
    with pytest.raises(IntegrityError, match="holds 100 bytes but its parent"):
        store.get(str(root))


def test_a_root_whose_filesize_disagrees_with_its_blocksizes_is_an_integrity_error(store: LocalBlockStore) -> None:
    leaf = _store_block(store, _leaf(b"b" * 10))
    node = bytearray(file_node([Link(leaf.binary(), 24, 10)]))
    node[node.rindex(b"\x18\x0a\x20") + 1] = 9  # filesize 9, blocksizes still [10]
    root = _store_block(store, bytes(node))
    with pytest.raises(IntegrityError, match="filesize 9"):
        store.get(str(root))


def test_a_directory_is_not_a_blob(store: LocalBlockStore) -> None:
    directory = _store_block(store, b"\x0a\x02\x08\x01")  # UnixFS Type=Directory, no links
    with pytest.raises(IntegrityError, match="Directory"):
        store.get(str(directory))


def test_a_dag_with_raw_leaves_and_cidv1_links_is_readable(store: LocalBlockStore) -> None:
    # The shape `ipfs add --cid-version=1` builds: raw leaves, CIDv1 links.
    chunks = [b"c" * CHUNK_SIZE, b"d" * 5]
    leaves = [_store_block(store, chunk, RAW, 1) for chunk in chunks]
    root = _store_block(
        store, file_node([Link(ref.binary(), len(c), len(c)) for ref, c in zip(leaves, chunks)]), DAG_PB, 1
    )
    assert store.get(root.text()) == b"".join(chunks)
    assert store.get(leaves[1].text()) == b"d" * 5


def test_a_malformed_cid_is_a_cid_format_error(store: LocalBlockStore) -> None:
    with pytest.raises(CidFormatError):
        store.get("not-a-cid")
    with pytest.raises(CidFormatError, match="codec"):
        store.get("bafyreib4pff766vhpbxbhjbqqnsh5emeznvujayjj4z2iu533cprgbz23m")  # dag-cbor


def test_pin_and_unpin_record_pins(store: LocalBlockStore) -> None:
    cid = store.put(b"referenced by the ledger")
    store.pin(cid)
    store.pin(cid)
    assert store.pins() == [cid]
    store.unpin(cid)
    store.unpin(cid)
    assert store.pins() == []
    with pytest.raises(BlobNotFoundError):
        store.pin(cid_of(b"absent"))


def test_open_store_creates_a_directory_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "new" / "store"), max_blob_size=123)
    assert isinstance(store, LocalBlockStore)
    assert store.max_blob_size == 123
    assert Path(store.location, "blocks").is_dir()


def test_a_file_where_the_store_should_be_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailableError):
        open_store(str(tmp_path / "file"))
    with pytest.raises(StoreUnavailableError):
        LocalBlockStore(tmp_path / "missing", create=False)
