"""KuboStore against a real kubo daemon: runs only when ``FEDCHAIN_KUBO_API`` names one.

    FEDCHAIN_KUBO_API=http://127.0.0.1:5001 python -m pytest tests/storage/test_kubo_integration.py

(``docker compose up ipfs`` from the repository's docker-compose.yml, or any ``ipfs
daemon``, provides one.) Skipped otherwise: no kubo binary can be installed where the
suite usually runs, and ``test_kubo_store.py`` covers the backend against a stand-in.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedchain.storage import CHUNK_SIZE, MAX_LINKS, KuboStore, LocalBlockStore, cid_of

API = os.environ.get("FEDCHAIN_KUBO_API", "")

pytestmark = pytest.mark.skipif(
    not API, reason="set FEDCHAIN_KUBO_API to a kubo RPC address to run against a real daemon"
)

RandomBytes = Callable[[int, int], bytes]


@pytest.fixture
def kubo_store() -> Iterator[KuboStore]:
    store = KuboStore(API, max_blob_size=64 << 20)
    yield store
    store.close()


@pytest.mark.parametrize(
    "size", [0, 1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3_000_000, MAX_LINKS * CHUNK_SIZE + 1]
)
def test_real_kubo_gives_the_embedded_stores_cids(size: int, kubo_store: KuboStore, random_bytes: RandomBytes) -> None:
    data = random_bytes(size, size + 17)
    cid = kubo_store.put(data)
    assert cid == cid_of(data)
    assert kubo_store.get(cid) == data
    assert kubo_store.size(cid) == size
    assert kubo_store.has(cid)
    kubo_store.unpin(cid)


def test_a_blob_moves_between_kubo_and_the_embedded_store_by_car(
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


def test_cidv1_from_real_kubo_names_the_same_blob(kubo_store: KuboStore) -> None:
    data = b"fedchain integration"
    v1 = kubo_store.put(data, version=1)
    assert v1 == cid_of(data, version=1)
    assert kubo_store.get(v1) == data
    kubo_store.unpin(v1)
