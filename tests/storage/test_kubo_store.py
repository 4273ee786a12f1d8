"""KuboStore against a kubo *stand-in*: a small local HTTP server answering as kubo's RPC
documents (see ``KuboStandIn`` in conftest.py). It is not kubo; what it can check for
real is the request shape, CID agreement with the embedded store and the oracle, and
that nothing the daemon returns is used unverified, and faults a real daemon cannot be
made to show. ``test_kubo_integration.py`` runs the same backend against a real daemon
(js-ipfs, or the kubo that ``FEDCHAIN_KUBO_API`` names).
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import ipfshttpclient
import ipfshttpclient.exceptions
import pytest

from fedchain.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CarFormatError,
    IntegrityError,
    StoreUnavailableError,
)
from fedchain.storage import BlobStore, KuboStore, LocalBlockStore, cid_of, open_store
from fedchain.storage._cid import parse_cid
from fedchain.storage._kubo import api_multiaddr

if TYPE_CHECKING:
    from conftest import KuboStandIn

RandomBytes = Callable[[int, int], bytes]


@pytest.fixture
def kubo_store(kubo: KuboStandIn) -> KuboStore:
    store = KuboStore(kubo.url, max_blob_size=8 << 20)
    yield store
    store.close()


def test_kubo_store_is_a_blob_store(kubo_store: KuboStore) -> None:
    assert isinstance(kubo_store, BlobStore)


# ipfshttpclient's own connect() still builds urllib3 pools with strict=True (KuboStore does not).
@pytest.mark.filterwarnings("ignore:The 'strict' parameter is no longer needed:FutureWarning")
def test_client_works_with_a_current_kubo_that_connect_refuses(kubo: KuboStandIn) -> None:
    with pytest.raises(ipfshttpclient.exceptions.VersionMismatch):
        ipfshttpclient.connect(kubo.multiaddr + "/http")
    store = KuboStore(kubo.url)
    assert store.daemon_version == "0.32.1"
    store.close()


def test_a_daemon_older_than_the_minimum_is_refused(kubo: KuboStandIn) -> None:
    kubo.version = "0.4.23"
    with pytest.raises(StoreUnavailableError, match="older than 0.5.0"):
        KuboStore(kubo.url)


def test_an_unreachable_daemon_is_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        KuboStore(f"http://127.0.0.1:{port}", timeout=5)


def test_add_sends_kubos_default_import_settings_explicitly(kubo: KuboStandIn, kubo_store: KuboStore) -> None:
    kubo_store.put(b"hello\n")
    (call,) = kubo.calls("add")
    assert call.method == "POST"
    assert call.content_type.startswith("multipart/form-data")
    sent = {key: values[0].lower() for key, values in call.params.items()}
    assert sent["cid-version"] == "0"
    assert sent["raw-leaves"] == "false"
    assert sent["chunker"] == "size-262144"
    assert sent["trickle"] == "false"
    assert sent["hash"] == "sha2-256"
    assert sent["pin"] == "true"


@pytest.mark.parametrize("size", [0, 1, 262_144, 262_145, 3_000_000])
def test_kubo_cids_equal_the_embedded_store_and_the_oracle(
    random_bytes: RandomBytes,
    size: int,
    kubo_store: KuboStore,
    store: LocalBlockStore,
    write_file: Callable[..., Path],
    oracle: Callable[[Path], dict[str, str]],
) -> None:
    data = random_bytes(size, seed=size)
    expected = oracle(write_file(data))
    assert kubo_store.put(data) == store.put(data) == expected["CIDv0"]
    assert kubo_store.put(data, version=1) == expected["CIDv1"]


def test_put_stream_streams_a_file_and_round_trips(
    random_bytes: RandomBytes, kubo_store: KuboStore, write_file: Callable[..., Path]
) -> None:
    data = random_bytes(1_000_000, seed=7)
    with write_file(data).open("rb") as f:
        cid = kubo_store.put_stream(f)
    assert cid == cid_of(data)
    assert kubo_store.get(cid) == data
    out = io.BytesIO()
    assert kubo_store.get_to(cid, out) == len(data)
    assert out.getvalue() == data
    assert kubo_store.size(cid) == len(data)


def test_reads_use_raw_blocks_never_cat(random_bytes: RandomBytes, kubo: KuboStandIn, kubo_store: KuboStore) -> None:
    cid = kubo_store.put(random_bytes(600_000, seed=1))
    kubo_store.get(cid)
    assert len(kubo.calls("block/get")) == 4  # root + 3 leaves
    assert not kubo.calls("cat")


def test_a_daemon_that_answers_a_different_cid_on_add_is_caught(kubo: KuboStandIn, kubo_store: KuboStore) -> None:
    kubo.lie_on_add = cid_of(b"something else")
    with pytest.raises(IntegrityError, match="different DAG") as info:
        kubo_store.put(b"the real bytes")
    assert info.value.cid == cid_of(b"the real bytes")


def test_a_corrupt_block_from_the_daemon_is_an_integrity_error(
    random_bytes: RandomBytes, kubo: KuboStandIn, kubo_store: KuboStore
) -> None:
    data = random_bytes(600_000, seed=2)
    cid = kubo_store.put(data)
    leaf = kubo.store  # the stand-in's own blocks are fine; it corrupts them on the way out
    second_leaf = list(_dag_refs(leaf, cid))[2]
    kubo.corrupt.add(second_leaf.multihash)
    with pytest.raises(IntegrityError) as info:
        kubo_store.get(cid)
    assert info.value.cid == cid
    assert info.value.block == str(second_leaf)


def test_a_truncated_block_from_the_daemon_is_an_integrity_error(
    random_bytes: RandomBytes, kubo: KuboStandIn, kubo_store: KuboStore
) -> None:
    cid = kubo_store.put(random_bytes(300_000, seed=3))
    kubo.truncate_blocks = 1000
    with pytest.raises(IntegrityError, match=cid):
        kubo_store.get(cid)


def test_a_blob_the_daemon_lacks_is_not_found(kubo_store: KuboStore) -> None:
    missing = cid_of(b"never added")
    with pytest.raises(BlobNotFoundError, match=missing):
        kubo_store.get(missing)
    assert not kubo_store.has(missing)


def test_get_refuses_a_blob_over_the_limit_after_reading_only_the_root(
    random_bytes: RandomBytes, kubo: KuboStandIn, kubo_store: KuboStore
) -> None:
    cid = kubo_store.put(random_bytes(1_000_000, seed=4))
    before = len(kubo.calls("block/get"))
    with pytest.raises(BlobTooLargeError):
        kubo_store.get(cid, max_size=999_999)
    assert len(kubo.calls("block/get")) == before + 1


def test_put_refuses_a_blob_over_the_limit_before_sending_it(kubo: KuboStandIn) -> None:
    small = KuboStore(kubo.url, max_blob_size=1000)
    with pytest.raises(BlobTooLargeError):
        small.put(b"x" * 1001)
    with pytest.raises(BlobTooLargeError):
        small.put_stream(io.BytesIO(b"x" * 1001))
    assert not kubo.calls("add")


def test_put_stream_of_unknown_length_is_cut_off_at_the_limit(kubo: KuboStandIn) -> None:
    small = KuboStore(kubo.url, max_blob_size=300_000)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._left = 1_000_000

        def readable(self) -> bool:
            return True

        def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
            n = min(len(buf), self._left, 65_536)
            buf[:n] = b"y" * n
            self._left -= n
            return n

    with pytest.raises(BlobTooLargeError):
        small.put_stream(Pipe())  # type: ignore[arg-type]


def test_has_pin_and_unpin_use_the_daemon(kubo: KuboStandIn, kubo_store: KuboStore) -> None:
    cid = kubo_store.put(b"pinned by the ledger")
    assert kubo_store.has(cid)
    assert kubo.calls("block/stat")[-1].params["offline"] == ["true"]
    kubo_store.unpin(cid)
    assert cid not in kubo.pins
    kubo_store.unpin(cid)  # not pinned any more: no error
    kubo_store.pin(cid)
    assert cid in kubo.pins
    assert (
        kubo.calls("pin/add")[-1].params["recursive"][0].lower() == "true"
    )  # kubo parses bools with Go strconv.ParseBool


def test_pinning_a_blob_nobody_has_is_not_found(kubo_store: KuboStore) -> None:
    with pytest.raises(BlobNotFoundError):
        kubo_store.pin(cid_of(b"nowhere"))


def test_every_block_lookup_carries_the_lookup_timeout(kubo: KuboStandIn) -> None:
    store = KuboStore(kubo.url, lookup_timeout=1.5)
    cid = store.put(b"looked up with a deadline")
    store.get(cid)
    store.has(cid)
    store.pin(cid)
    store.close()
    for path in ("block/get", "block/stat"):
        assert {tuple(call.params["timeout"]) for call in kubo.calls(path)} == {("1500ms",)}, path
    # pin/add: lookup_timeout plus PIN_SECONDS_PER_BLOCK for the blob's one chunk.
    assert kubo.calls("pin/add")[-1].params["timeout"] == ["1550ms"]


def test_a_daemon_that_gave_up_looking_for_a_block_means_not_found(kubo: KuboStandIn, kubo_store: KuboStore) -> None:
    kubo.missing_times_out = True
    missing = cid_of(b"looked for online, never found")
    assert not kubo_store.has(missing)
    with pytest.raises(BlobNotFoundError):
        kubo_store.get(missing)
    with pytest.raises(BlobNotFoundError):
        kubo_store.pin(missing)


def test_the_lookup_timeout_must_be_positive(kubo: KuboStandIn) -> None:
    with pytest.raises(ValueError, match="lookup_timeout"):
        KuboStore(kubo.url, lookup_timeout=0)


def test_car_moves_a_blob_from_the_embedded_store_into_kubo_and_back(
    random_bytes: RandomBytes, kubo: KuboStandIn, kubo_store: KuboStore, store: LocalBlockStore, tmp_path: Path
) -> None:
    data = random_bytes(700_000, seed=5)
    cid = store.put(data)
    car = io.BytesIO()
    store.export_car(cid, car)
    assert kubo_store.import_car(io.BytesIO(car.getvalue())) == [cid]
    assert kubo.calls("dag/import")
    assert kubo_store.get(cid) == data
    back = io.BytesIO()
    kubo_store.export_car(cid, back)
    assert back.getvalue() == car.getvalue()
    fresh = LocalBlockStore(tmp_path / "fresh")
    assert fresh.import_car(io.BytesIO(back.getvalue())) == [cid]
    assert fresh.get(cid) == data


def test_a_bad_car_never_reaches_the_daemon(
    random_bytes: RandomBytes, kubo: KuboStandIn, kubo_store: KuboStore, store: LocalBlockStore
) -> None:
    cid = store.put(random_bytes(600_000, seed=6))
    car = io.BytesIO()
    store.export_car(cid, car)
    damaged = bytearray(car.getvalue())
    damaged[-10] ^= 0xFF
    with pytest.raises(IntegrityError):
        kubo_store.import_car(io.BytesIO(bytes(damaged)))
    with pytest.raises(CarFormatError):
        kubo_store.import_car(io.BytesIO(car.getvalue()[:-100]))
    assert not kubo.calls("dag/import")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("https://ipfs.example:443", "/dns/ipfs.example/tcp/443/https"),
        ("http://[::1]:5001", "/ip6/::1/tcp/5001/http"),
        ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001"),
    ],
)
def test_api_addresses_become_multiaddrs(given: str, expected: str) -> None:
    assert api_multiaddr(given) == expected


def test_open_store_picks_kubo_for_urls_and_multiaddrs(kubo: KuboStandIn) -> None:
    for location in (kubo.url, kubo.multiaddr):
        store = open_store(location)
        assert isinstance(store, KuboStore)
        assert store.location == location
        store.close()


def _dag_refs(store: LocalBlockStore, cid: str) -> list:  # type: ignore[type-arg]
    from fedchain.storage._unixfs import iter_dag

    return [ref for ref, _ in iter_dag(store._read_block, parse_cid(cid))]
