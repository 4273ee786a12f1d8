"""The embedded store's CIDs equal an independent importer's (``ipfs_cid``), byte for byte."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedchain.storage import CHUNK_SIZE, MAX_LINKS, LocalBlockStore, cid_of, cid_of_stream, normalize_cid
from fedchain.storage._dagpb import leaf_envelope

Oracle = Callable[[Path], dict[str, str]]
RandomBytes = Callable[[int, int], bytes]

SIZES = [0, 1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3_000_000]


@pytest.mark.parametrize("size", SIZES)
def test_cid_equals_the_oracle(
    size: int, oracle: Oracle, random_bytes: RandomBytes, write_file: Callable[..., Path], store: LocalBlockStore
) -> None:
    data = random_bytes(size, size + 1)
    path = write_file(data)
    expected = oracle(path)
    assert cid_of(data) == expected["CIDv0"]
    assert cid_of(data, version=1) == expected["CIDv1"]
    with path.open("rb") as f:
        assert store.put_stream(f) == expected["CIDv0"]
    assert store.put(data, version=1) == expected["CIDv1"]


@pytest.mark.slow
def test_cid_equals_the_oracle_at_the_first_two_level_tree(
    oracle: Oracle, random_bytes: RandomBytes, tmp_path: Path, store: LocalBlockStore
) -> None:
    # 174 full chunks fill one node; one more byte needs a root over two nodes.
    data = random_bytes(MAX_LINKS * CHUNK_SIZE + 1, 174)
    for size in (MAX_LINKS * CHUNK_SIZE, MAX_LINKS * CHUNK_SIZE + 1):
        path = tmp_path / f"blob-{size}"
        path.write_bytes(data[:size])
        expected = oracle(path)
        with path.open("rb") as f:
            cid = store.put_stream(f)
        assert cid == expected["CIDv0"], size
        assert normalize_cid(cid, version=1) == expected["CIDv1"]
        assert store.get(cid) == data[:size]
        path.unlink()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.integers(0, 3 * CHUNK_SIZE).map(lambda n: bytes(range(256)) * (n // 256) + b"\x07" * (n % 256)),
    )
)
def test_cid_of_random_contents_equals_the_oracle(data: bytes, oracle: Oracle, tmp_path: Path) -> None:
    path = tmp_path / "hypothesis.bin"
    path.write_bytes(data)
    assert cid_of(data) == oracle(path)["CIDv0"]


@pytest.mark.parametrize("seed", range(5))
def test_cid_of_random_sizes_and_bytes_equals_the_oracle(
    seed: int, oracle: Oracle, random_bytes: RandomBytes, write_file: Callable[..., Path]
) -> None:
    size = int.from_bytes(random_bytes(3, seed), "big") % (4 * CHUNK_SIZE)
    data = random_bytes(size, seed)
    assert cid_of(data) == oracle(write_file(data))["CIDv0"]


def test_well_known_cids() -> None:
    # kubo: `printf '' | ipfs add -Q` and `echo hello | ipfs add -Q`
    assert cid_of(b"") == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert cid_of(b"hello\n") == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"


def test_an_empty_file_is_one_node_with_filesize_zero() -> None:
    prefix, suffix = leaf_envelope(0)
    assert prefix + suffix == bytes.fromhex("0a0408021800")


def test_cidv1_is_the_base32_dag_pb_form_of_the_same_multihash() -> None:
    v0 = cid_of(b"x" * 1_000_000)
    v1 = cid_of(b"x" * 1_000_000, version=1)
    assert v1.startswith("bafybei")
    assert normalize_cid(v1, version=0) == v0
    assert normalize_cid(v0, version=1) == v1


def test_cid_of_stream_equals_cid_of_bytes(random_bytes: RandomBytes) -> None:
    data = random_bytes(CHUNK_SIZE * 3 + 5, 9)
    assert cid_of_stream(io.BytesIO(data)) == cid_of(data)
    assert cid_of_stream(io.BytesIO(data), version=1) == cid_of(data, version=1)


def test_a_stream_that_returns_short_reads_gives_the_same_cid(random_bytes: RandomBytes) -> None:
    data = random_bytes(CHUNK_SIZE * 2 + 77, 10)

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self._view = memoryview(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
            n = min(len(buf), 10_007, len(self._view))
            buf[:n] = self._view[:n]
            self._view = self._view[n:]
            return n

    assert cid_of_stream(Trickle()) == cid_of(data)  # type: ignore[arg-type]
