"""CARv1 export and import: a blob moves between stores (and IPFS nodes) with its CID unchanged."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import dag_cbor
import pytest
from multiformats import CID, varint

from fedchain.errors import CarFormatError, IntegrityError
from fedchain.storage import CHUNK_SIZE, LocalBlockStore, cid_of, export_car, import_car
from fedchain.storage._cid import parse_cid
from fedchain.storage._unixfs import iter_dag

RandomBytes = Callable[[int, int], bytes]


def car_of(store: LocalBlockStore, cid: str) -> bytes:
    out = io.BytesIO()
    written = export_car(store, cid, out)
    assert written == len(out.getvalue())
    return out.getvalue()


def sections(car: bytes) -> tuple[dict[str, object], list[tuple[str, bytes]]]:
    """Parse a CAR independently of the store's reader (dag-cbor + multiformats only)."""
    length, used, _ = varint.decode_raw(car)
    header = dag_cbor.decode(car[used : used + length])
    pos = used + length
    out = []
    while pos < len(car):
        length, used, _ = varint.decode_raw(car[pos:])
        section = car[pos + used : pos + used + length]
        cid = CID.decode(section[:34]) if section[:2] == b"\x12\x20" else None
        assert cid is not None
        out.append((str(cid), section[34:]))
        pos += used + length
    assert isinstance(header, dict)
    return header, out


def test_round_trip_through_car_is_byte_identical(
    store: LocalBlockStore, random_bytes: RandomBytes, tmp_path: Path
) -> None:
    data = random_bytes(5 * CHUNK_SIZE + 3, 1)
    cid = store.put(data)
    car = car_of(store, cid)
    other = LocalBlockStore(tmp_path / "other")
    assert import_car(other, io.BytesIO(car)) == [cid]
    assert other.get(cid) == data
    assert car_of(other, cid) == car
    assert other.pins() == [cid]


def test_car_holds_a_v1_header_and_blocks_depth_first(store: LocalBlockStore, random_bytes: RandomBytes) -> None:
    data = random_bytes(3 * CHUNK_SIZE, 2)
    cid = store.put(data)
    header, blocks = sections(car_of(store, cid))
    assert header == {"roots": [CID.decode(cid)], "version": 1}
    expected = [str(ref) for ref, _ in iter_dag(store._read_block, parse_cid(cid))]
    assert [c for c, _ in blocks] == expected
    assert blocks[0][0] == cid  # kubo's `ipfs dag export` order: root first


def test_repeated_blocks_are_written_once(store: LocalBlockStore) -> None:
    cid = store.put(b"\0" * (4 * CHUNK_SIZE))  # four identical leaves
    _, blocks = sections(car_of(store, cid))
    assert len(blocks) == 2


def test_empty_and_single_chunk_blobs_round_trip(store: LocalBlockStore, tmp_path: Path) -> None:
    for i, data in enumerate([b"", b"one chunk"]):
        cid = store.put(data)
        other = LocalBlockStore(tmp_path / f"o{i}")
        assert import_car(other, io.BytesIO(car_of(store, cid))) == [cid]
        assert other.get(cid) == data


def test_a_cidv1_root_is_exported_as_given(store: LocalBlockStore, tmp_path: Path) -> None:
    v1 = store.put(b"v1 please", version=1)
    car = car_of(store, v1)
    other = LocalBlockStore(tmp_path / "o")
    assert import_car(other, io.BytesIO(car)) == [v1]
    assert other.get(v1) == b"v1 please"


def test_a_corrupt_block_in_a_car_is_an_integrity_error(
    store: LocalBlockStore, random_bytes: RandomBytes, tmp_path: Path
) -> None:
    cid = store.put(random_bytes(2 * CHUNK_SIZE, 3))
    car = bytearray(car_of(store, cid))
    car[-5] ^= 0x10
    other = LocalBlockStore(tmp_path / "o")
    with pytest.raises(IntegrityError) as info:
        import_car(other, io.BytesIO(bytes(car)))
    assert info.value.cid == cid
    assert not other.has(cid)


def test_a_truncated_car_is_refused(store: LocalBlockStore, random_bytes: RandomBytes, tmp_path: Path) -> None:
    cid = store.put(random_bytes(2 * CHUNK_SIZE, 4))
    car = car_of(store, cid)
    for cut in (len(car) - 1, len(car) - CHUNK_SIZE - 20, 10, 0):
        with pytest.raises(CarFormatError):
            import_car(LocalBlockStore(tmp_path / f"o{cut}"), io.BytesIO(car[:cut]))


def test_a_car_missing_a_block_of_its_root_is_refused(
    store: LocalBlockStore, random_bytes: RandomBytes, tmp_path: Path
) -> None:
    cid = store.put(random_bytes(2 * CHUNK_SIZE, 5))
    car = car_of(store, cid)
    header_len, used, _ = varint.decode_raw(car)
    first = used + header_len
    length, used2, _ = varint.decode_raw(car[first:])
    root_only = car[: first + used2 + length]
    with pytest.raises(CarFormatError, match="whole DAG"):
        import_car(LocalBlockStore(tmp_path / "o"), io.BytesIO(root_only))


def test_a_carv2_or_garbage_is_refused(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "o")
    v2 = dag_cbor.encode({"version": 2})
    with pytest.raises(CarFormatError, match="CARv2"):
        import_car(store, io.BytesIO(varint.encode(len(v2)) + v2))
    with pytest.raises(CarFormatError):
        import_car(store, io.BytesIO(b"\x05hello"))


def test_a_car_larger_than_the_store_allows_is_refused(
    store: LocalBlockStore, random_bytes: RandomBytes, tmp_path: Path
) -> None:
    cid = store.put(random_bytes(8 * CHUNK_SIZE, 6))
    car = car_of(store, cid)
    small = LocalBlockStore(tmp_path / "small", max_blob_size=CHUNK_SIZE)
    with pytest.raises(CarFormatError, match="limit"):
        import_car(small, io.BytesIO(car))


def test_export_of_a_damaged_blob_fails_rather_than_writing_bad_blocks(
    store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    cid = store.put(random_bytes(2 * CHUNK_SIZE, 7))
    for path in Path(store.location, "blocks").rglob("*.data"):
        if path.stat().st_size > CHUNK_SIZE:
            path.write_bytes(path.read_bytes()[:-1] + b"!")
            break
    with pytest.raises(IntegrityError):
        car_of(store, cid)


def test_cid_is_unchanged_by_the_trip(store: LocalBlockStore, tmp_path: Path) -> None:
    data = b"same bytes, same CID, any node"
    cid = store.put(data)
    other = LocalBlockStore(tmp_path / "o")
    (root,) = import_car(other, io.BytesIO(car_of(store, cid)))
    assert root == cid == cid_of(data) == other.put(data)
