"""KuboStore against a real IPFS daemon: js-ipfs started by the ``ipfs_api`` fixture, or a kubo.

By default the session starts js-ipfs 0.66.1 from ``node_modules`` (``npm ci``), offline on
loopback ports with a temporary repository; it serves kubo's RPC API for every endpoint the
backend uses. To run against a real kubo instead (``docker compose up ipfs``, or any ``ipfs
daemon``)::

    FEDCHAIN_KUBO_API=http://127.0.0.1:5001 python -m pytest tests/storage/test_kubo_integration.py

``test_kubo_store.py`` keeps the faults a real daemon cannot be made to show (lying, corrupt or
truncated answers) against a stand-in.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from fedchain.errors import BlobNotFoundError
from fedchain.storage import CHUNK_SIZE, MAX_LINKS, KuboStore, LocalBlockStore, cid_of
from fedchain.storage._cid import parse_cid

pytestmark = pytest.mark.ipfs_daemon

RandomBytes = Callable[[int, int], bytes]

#: The sizes whose CIDs are compared: empty, one byte, around one chunk, several chunks, and
#: around the width of one DAG node (174 links), where a second level of the tree begins.
SIZES = [
    0,
    1,
    100,
    CHUNK_SIZE - 1,
    CHUNK_SIZE,
    CHUNK_SIZE + 1,
    5 << 20,
    MAX_LINKS * CHUNK_SIZE,
    MAX_LINKS * CHUNK_SIZE + 1,
]


@pytest.fixture
def kubo_store(ipfs_api: str) -> Iterator[KuboStore]:
    store = KuboStore(ipfs_api, max_blob_size=64 << 20)
    yield store
    store.close()


@pytest.mark.parametrize("size", SIZES)
def test_the_daemon_gives_the_embedded_stores_and_the_oracles_cids(
    size: int,
    kubo_store: KuboStore,
    random_bytes: RandomBytes,
    write_file: Callable[..., Path],
    oracle: Callable[[Path], dict[str, str]],
) -> None:
    data = random_bytes(size, size + 17)
    expected = oracle(write_file(data))
    # put() itself fails unless the daemon's own answer is the CID computed here.
    cid = kubo_store.put(data)
    assert cid == cid_of(data) == expected["CIDv0"]
    assert kubo_store.get(cid) == data
    assert kubo_store.size(cid) == size
    assert kubo_store.has(cid)
    kubo_store.unpin(cid)


def test_a_blob_moves_between_the_daemon_and_the_embedded_store_by_car(
    kubo_store: KuboStore, store: LocalBlockStore, random_bytes: RandomBytes, tmp_path: Path
) -> None:
    data = random_bytes(3 * CHUNK_SIZE + 1, 99)
    cid = store.put(data)
    car = io.BytesIO()
    store.export_car(cid, car)
    assert kubo_store.import_car(io.BytesIO(car.getvalue())) == [cid]
    assert kubo_store.get(cid) == data
    back = io.BytesIO()
    kubo_store.export_car(cid, back)
    fresh = LocalBlockStore(tmp_path / "fresh")
    assert fresh.import_car(io.BytesIO(back.getvalue())) == [cid]
    assert fresh.get(cid) == data
    kubo_store.unpin(cid)


def test_cidv1_from_the_daemon_names_the_same_blob(
    kubo_store: KuboStore, write_file: Callable[..., Path], oracle: Callable[[Path], dict[str, str]]
) -> None:
    data = b"fedchain integration"
    v1 = kubo_store.put(data, version=1)
    assert v1 == cid_of(data, version=1) == oracle(write_file(data))["CIDv1"]
    assert kubo_store.get(v1) == data
    kubo_store.unpin(v1)


def test_pin_and_unpin_on_the_daemon(kubo_store: KuboStore) -> None:
    cid = kubo_store.put(b"pinned, unpinned, pinned again")
    kubo_store.unpin(cid)
    kubo_store.unpin(cid)  # not pinned any more: no error
    kubo_store.pin(cid)
    assert kubo_store.has(cid)
    kubo_store.unpin(cid)


def test_a_blob_the_daemon_lacks_is_not_found_within_five_seconds(kubo_store: KuboStore) -> None:
    missing = cid_of(b"no daemon holds this blob")
    started = time.monotonic()
    assert not kubo_store.has(missing)
    assert time.monotonic() - started < 5
    for read in (kubo_store.get, kubo_store.size, kubo_store.pin):
        started = time.monotonic()
        with pytest.raises(BlobNotFoundError) as caught:
            read(missing)
        assert caught.value.cid == missing
        assert time.monotonic() - started < 5, read.__name__


def test_a_blob_whose_leaf_the_daemon_lacks_is_not_found_within_five_seconds(
    ipfs_api: str, kubo_store: KuboStore, store: LocalBlockStore, random_bytes: RandomBytes
) -> None:
    data = random_bytes(2 * CHUNK_SIZE, 5)
    cid = store.put(data)
    root = store._read_block(parse_cid(cid))
    assert root is not None
    # Only the root reaches the daemon, through its own block/put: both leaves are missing.
    answer = requests.post(
        f"{ipfs_api}/api/v0/block/put",
        params={"cid-codec": "dag-pb", "mhtype": "sha2-256", "format": "v0"},
        files={"file": ("root", root, "application/octet-stream")},
        timeout=30,
    )
    assert answer.json()["Key"] == cid
    assert kubo_store.has(cid)
    assert kubo_store.size(cid) == len(data)
    started = time.monotonic()
    with pytest.raises(BlobNotFoundError) as caught:
        kubo_store.get(cid)
    assert time.monotonic() - started < 5
    assert (caught.value.cid, caught.value.block) == (cid, cid_of(data[:CHUNK_SIZE]))
    started = time.monotonic()
    with pytest.raises(BlobNotFoundError):
        kubo_store.pin(cid)
    assert time.monotonic() - started < 5


def test_the_cli_reads_a_missing_blob_from_the_daemon_as_not_found_and_prints_no_warning(
    ipfs_api: str, repo_env: dict[str, str]
) -> None:
    missing = cid_of(b"not on the daemon either")
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "fedchain", "store", "--store", ipfs_api, "get", missing, "-o", "/dev/null"],
        check=False,
        capture_output=True,
        text=True,
        env=repo_env,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr  # the command could not do its job (the one exit-code table)
    assert f"not in the store: {missing}" in run.stderr
    assert "Warning" not in run.stderr
    assert time.monotonic() - started < 30  # interpreter start-up included
