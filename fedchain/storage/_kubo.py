"""The kubo backend: a kubo (go-ipfs) daemon over its RPC API, through ``ipfshttpclient``.

Why the client is built with ``ipfshttpclient.Client(...)`` and not ``connect()``:
``ipfshttpclient.connect()`` asks the daemon for its version and refuses anything from
0.8.0 on (its ``VERSION_MAXIMUM``), while current kubo is 0.3x. The endpoints used here
(``version``, ``add``, ``block/get``, ``block/stat``, ``pin/add``, ``pin/rm``,
``dag/import``) and their answers have not changed in the ways that matter since kubo
0.5 (from which the RPC API is POST-only, which ipfshttpclient 0.7 already does), so the
store builds the client directly and checks the version itself: at least 0.5.

Nothing kubo returns is trusted:

- ``put`` sends kubo's default import settings explicitly (``cid-version=0``,
  ``raw-leaves=false``, ``chunker=size-262144``, balanced layout, sha2-256), computes
  the CID locally from the same bytes as they stream out, and fails if kubo's answer
  differs (for example when the daemon's config changes the file layout).
- reads fetch raw blocks (``block/get``) and verify the DAG here, block by block,
  exactly as for the embedded store; ``cat`` is never used.
- ``import_car`` verifies every block and the DAG's completeness before sending the
  archive to ``dag/import``.

A block the daemon does not hold is "not found" within ``lookup_timeout`` seconds, never a
hang: every lookup carries the RPC API's ``timeout`` option, and ``has`` also asks with
``offline``. kubo answers an offline lookup of a missing block at once; js-ipfs (which serves
the same API, see :mod:`fedchain.storage.jsipfs`) ignores ``offline`` and waits for the
network until the ``timeout`` expires, so its "request timed out" reads as "not found" too.
The HTTP timeout (``timeout``) stays the bound on a daemon that stops answering altogether,
which is "store unavailable".

ipfshttpclient 0.7 builds its urllib3 pools with ``strict=True``, which urllib3 2 only
warns about (a ``FutureWarning`` on the first request); the store drops that argument
from the client's pool settings so that nothing is printed.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_errors

from fedchain.errors import BlobNotFoundError, BlobTooLargeError, IntegrityError, StorageError, StoreUnavailableError
from fedchain.storage._base import DEFAULT_MAX_BLOB_SIZE, DagStore
from fedchain.storage._car import CarReader, car_import_limit
from fedchain.storage._cid import BlockRef, parse_cid
from fedchain.storage._unixfs import CHUNK_SIZE, MAX_BLOCK_SIZE, FileImporter, known_size
from fedchain.types import Cid

logger = logging.getLogger(__name__)

#: The oldest kubo whose RPC API this backend relies on (POST-only API, ``dag/import``).
MIN_KUBO_VERSION = (0, 5, 0)

#: ``ipfs add`` options that make kubo build exactly the embedded store's DAG.
ADD_OPTIONS: dict[str, Any] = {
    "cid_version": 0,
    "raw_leaves": False,
    "chunker": f"size-{CHUNK_SIZE}",
    "trickle": False,
}

#: Seconds ``pin`` allows the daemon per chunk of the blob, beyond ``lookup_timeout`` (a local
#: daemon pins a chunk in well under a millisecond).
PIN_SECONDS_PER_BLOCK = 0.05

_T = TypeVar("_T")
_NOT_FOUND = re.compile(r"not found|could not find|no link named", re.IGNORECASE)
#: What a daemon answers when the ``timeout`` option expires: kubo, then js-ipfs.
_TIMED_OUT = re.compile(r"context deadline exceeded|request timed out", re.IGNORECASE)


def _drop_strict(client: Any) -> None:
    """Remove ``strict`` from the urllib3 pool settings of ipfshttpclient's session (module docstring).

    ipfshttpclient's ``requests_wrapper.HTTPAdapter`` passes ``strict=True`` to its
    ``PoolManager``; urllib3 2 pops it with a ``FutureWarning`` each time it makes a pool.
    """
    session = getattr(getattr(client, "_client", None), "_session", None)
    adapters = getattr(session, "adapters", None)
    if not isinstance(adapters, dict):
        return
    for adapter in adapters.values():
        pool_kw = getattr(getattr(adapter, "poolmanager", None), "connection_pool_kw", None)
        if isinstance(pool_kw, dict):
            pool_kw.pop("strict", None)


def api_multiaddr(api: str) -> str:
    """Turn ``http://host:port`` (or a multiaddr, returned as is) into the multiaddr ipfshttpclient wants.

    Raises
    ------
    StoreUnavailableError
        If ``api`` is neither.
    """
    if api.startswith("/"):
        return api
    url = urllib.parse.urlsplit(api)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise StoreUnavailableError(api, "not a kubo API address (http://host:port or a multiaddr)")
    host = url.hostname
    port = url.port or (443 if url.scheme == "https" else 80)
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
        proto = "ip4"
    elif ":" in host:
        proto = "ip6"
    else:
        proto = "dns"
    return f"/{proto}/{host}/tcp/{port}/{url.scheme}"


def _parse_version(text: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", text.split("-", 1)[0])
    return tuple(int(n) for n in numbers[:3])


class _HashingReader:
    """A read-only stream that hands ``stream``'s bytes on while computing their CID.

    ipfshttpclient reads the upload through ``read(n)``; each piece also goes through
    the same importer the embedded store uses (blocks discarded), so the CID kubo
    answers can be checked without a second pass over the data.
    """

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._importer = FileImporter(None)
        self._pending = bytearray()
        self.name = "blob"
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n if n is not None and n > 0 else CHUNK_SIZE)
        self.size += len(data)
        if self.size > self._limit:
            raise BlobTooLargeError(self.size, self._limit, what="blob (at least)")
        pending = self._pending
        pending += data
        while len(pending) >= CHUNK_SIZE:
            self._importer.add_chunk(memoryview(pending)[:CHUNK_SIZE])
            del pending[:CHUNK_SIZE]
        return data

    def finish(self) -> BlockRef:
        if self._pending:
            self._importer.add_chunk(self._pending)
            self._pending = bytearray()
        return self._importer.finish()


class KuboStore(DagStore):
    """A kubo daemon as a :class:`~fedchain.storage.BlobStore`, with every read verified here.

    Parameters
    ----------
    api:
        The daemon's RPC API address: ``http://127.0.0.1:5001`` or a multiaddr such as
        ``/ip4/127.0.0.1/tcp/5001``.
    max_blob_size:
        The largest blob accepted or returned, in bytes.
    timeout:
        Seconds to wait for the daemon to answer any one RPC call; past that it is
        unavailable.
    lookup_timeout:
        Seconds the daemon may look for one block (the RPC API's ``timeout`` option) before
        the block counts as not found. A local daemon answers in milliseconds; raise it for
        a daemon that must fetch blobs from the network.
    pin_on_put:
        Pin what :meth:`put` adds, as ``ipfs add`` does by default, so that the daemon's
        garbage collector cannot drop a blob before the ledger records it.

    Raises
    ------
    StoreUnavailableError
        If the daemon does not answer, or is older than :data:`MIN_KUBO_VERSION`.
    """

    def __init__(
        self,
        api: str,
        *,
        max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
        timeout: float = 120.0,
        lookup_timeout: float = 3.0,
        pin_on_put: bool = True,
    ) -> None:
        super().__init__(max_blob_size)
        if not 0 < lookup_timeout:
            raise ValueError(f"lookup_timeout must be positive, not {lookup_timeout}")
        self._api = api
        self._pin_on_put = pin_on_put
        self._lookup_timeout = lookup_timeout
        # The RPC API's duration syntax (Go's time.ParseDuration; js-ipfs's parse-duration).
        self._lookup_opts = {"timeout": f"{max(1, round(lookup_timeout * 1000))}ms"}
        addr = api_multiaddr(api)
        try:
            # Not ipfshttpclient.connect(): it refuses daemons from 0.8.0 on (module docstring).
            self._client = ipfshttpclient.Client(addr, session=True, timeout=timeout, chunk_size=CHUNK_SIZE)
        except ipfs_errors.Error as err:
            raise StoreUnavailableError(api, f"bad API address: {err}") from err
        _drop_strict(self._client)
        try:
            info = self._call("version", self._client.version)
        except StoreUnavailableError:
            self._client.close()
            raise
        self.daemon_version = str(info.get("Version", "?"))
        if _parse_version(self.daemon_version) < MIN_KUBO_VERSION:
            self._client.close()
            wanted = ".".join(map(str, MIN_KUBO_VERSION))
            raise StoreUnavailableError(api, f"kubo {self.daemon_version} is older than {wanted}")
        logger.info("kubo %s at %s", self.daemon_version, api)

    @property
    def location(self) -> str:
        """The API address as given."""
        return self._api

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.close()

    def _call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call the client, turning its errors into the storage error tree."""
        try:
            return fn(*args, **kwargs)
        except ipfs_errors.ErrorResponse as err:
            raise StorageError(f"kubo at {self._api}: {what} failed: {err}") from err
        except (ipfs_errors.ConnectionError, ipfs_errors.TimeoutError) as err:
            raise StoreUnavailableError(self._api, f"{what}: {err}") from err
        except ipfs_errors.Error as err:
            raise StoreUnavailableError(self._api, f"{what}: {type(err).__name__}: {err}") from err

    # ------------------------------------------------------------------ blocks

    def _read_block(self, ref: BlockRef) -> bytes | None:
        """``block/get``, reading at most one byte past the block limit."""
        try:
            chunks = self._client.block.get(str(ref), stream=True, opts=self._lookup_opts)
            data = bytearray()
            for chunk in chunks:
                data += chunk
                if len(data) > MAX_BLOCK_SIZE:
                    break
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            return bytes(data)
        except ipfs_errors.ErrorResponse as err:
            if _NOT_FOUND.search(str(err)) or _TIMED_OUT.search(str(err)):
                logger.debug("kubo at %s: block/get %s: %s", self._api, ref, err)
                return None
            raise StorageError(f"kubo at {self._api}: block/get {ref} failed: {err}") from err
        except (ipfs_errors.ConnectionError, ipfs_errors.TimeoutError) as err:
            raise StoreUnavailableError(self._api, f"block/get {ref}: {err}") from err
        except ipfs_errors.Error as err:
            raise StoreUnavailableError(self._api, f"block/get {ref}: {type(err).__name__}: {err}") from err

    # ------------------------------------------------------------------ BlobStore

    def put(self, data: bytes, *, version: int = 0) -> Cid:
        """Add ``data`` with kubo's default import settings; return the CID, checked locally.

        Raises
        ------
        BlobTooLargeError
            If ``data`` is over the limit (nothing is sent).
        IntegrityError
            If kubo answers a CID other than the one computed here.
        StoreUnavailableError, StorageError
            If the daemon cannot be reached or refuses.
        """
        self._check_put_size(len(data))
        return self.put_stream(io.BytesIO(data), version=version)

    def put_stream(self, stream: BinaryIO, *, version: int = 0) -> Cid:
        """Stream everything left in ``stream`` to ``add``; a few chunks are in memory at most.

        Raises
        ------
        BlobTooLargeError
            Before sending if the stream's size is known and over the limit, else as soon
            as the limit is passed (the upload is then aborted).
        """
        size = known_size(stream)
        if size is not None:
            self._check_put_size(size)
        reader = _HashingReader(stream, self._max_blob_size)
        started = time.perf_counter()
        try:
            answer = self._call(
                "add", self._client.add, reader, pin=self._pin_on_put, opts={"hash": "sha2-256"}, **ADD_OPTIONS
            )
        except StoreUnavailableError as err:
            # ipfshttpclient reports an exception raised while streaming the body as a
            # connection problem; give the caller the real reason.
            if isinstance(err.__cause__, ipfs_errors.Error) and isinstance(
                err.__cause__.__context__, BlobTooLargeError
            ):
                raise err.__cause__.__context__ from None
            raise
        expected = reader.finish()
        returned = str(answer.get("Hash", ""))
        try:
            got = parse_cid(returned)
        except StorageError as err:
            raise IntegrityError(str(expected), returned, "kubo's add answered no valid CID") from err
        if got.multihash != expected.multihash:
            raise IntegrityError(
                str(expected),
                returned,
                "kubo built a different DAG from the same bytes; its Import.* config must keep kubo's defaults",
            )
        logger.debug("kubo add %s (%d bytes) in %.3f s", expected, reader.size, time.perf_counter() - started)
        return expected.with_version(version).text()

    def has(self, cid: str) -> bool:
        """Whether the daemon holds the blob's root block locally (``block/stat``, offline, bounded)."""
        ref = parse_cid(cid)
        try:
            self._client.block.stat(str(ref), offline=True, opts=self._lookup_opts)
        except ipfs_errors.ErrorResponse as err:
            if _NOT_FOUND.search(str(err)) or _TIMED_OUT.search(str(err)):
                return False
            raise StorageError(f"kubo at {self._api}: block/stat {ref} failed: {err}") from err
        except ipfs_errors.Error as err:
            raise StoreUnavailableError(self._api, f"block/stat {ref}: {err}") from err
        return True

    def pin(self, cid: str) -> None:
        """Pin the blob recursively (``pin/add``; kubo fetches missing blocks first).

        The root is read first (as :meth:`size` does), so a blob whose root the daemon cannot
        find is not found within ``lookup_timeout``; ``pin/add`` then gets ``lookup_timeout``
        plus :data:`PIN_SECONDS_PER_BLOCK` for each of the blob's chunks, and a daemon still
        looking for some block after that has not got the whole blob.

        Raises
        ------
        BlobNotFoundError
            If the daemon lacks the root or, within the time allowed, some other block.
        """
        ref = parse_cid(cid)
        chunks = -(-self.size(cid) // CHUNK_SIZE)
        budget = self._lookup_timeout + PIN_SECONDS_PER_BLOCK * chunks
        try:
            self._client.pin.add(str(ref), recursive=True, opts={"timeout": f"{max(1, round(budget * 1000))}ms"})
        except ipfs_errors.ErrorResponse as err:
            if _NOT_FOUND.search(str(err)) or _TIMED_OUT.search(str(err)):
                raise BlobNotFoundError(str(ref)) from err
            raise StorageError(f"kubo at {self._api}: pin/add {ref} failed: {err}") from err
        except ipfs_errors.Error as err:
            raise StoreUnavailableError(self._api, f"pin/add {ref}: {err}") from err

    def unpin(self, cid: str) -> None:
        """Remove the blob's recursive pin (``pin/rm``); no error if it was not pinned."""
        ref = parse_cid(cid)
        try:
            self._client.pin.rm(str(ref), recursive=True)
        except ipfs_errors.ErrorResponse as err:
            if "not pinned" in str(err):
                return
            raise StorageError(f"kubo at {self._api}: pin/rm {ref} failed: {err}") from err
        except ipfs_errors.Error as err:
            raise StoreUnavailableError(self._api, f"pin/rm {ref}: {err}") from err

    def import_car(self, stream: BinaryIO) -> list[Cid]:
        """Verify a CARv1 here (every block, every root's DAG complete), then ``dag/import`` it.

        The verified archive is spooled to a temporary file (in memory up to 8 MiB) so
        that nothing unverified reaches the daemon. Roots are pinned, as kubo does.

        Raises
        ------
        CarFormatError, IntegrityError
            If the archive is malformed, too large, incomplete, or a block does not match.
        """
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            reader = CarReader(_Tee(stream, spool), limit=car_import_limit(self._max_blob_size))
            for _ in reader.blocks():
                pass
            reader.check_complete()
            spool.seek(0)
            upload = _Named(spool, "blob.car")  # ipfshttpclient takes a file's name from .name
            answers = list(self._call("dag/import", self._client.dag.imprt, upload, stream=True))
        for answer in answers:
            root_info = answer.get("Root") if isinstance(answer, dict) else None
            pin_error = root_info.get("PinErrorMsg") if isinstance(root_info, dict) else None
            if pin_error:
                raise StorageError(f"kubo at {self._api}: dag/import could not pin: {pin_error}")
        return [root.text() for root in reader.roots]


class _Named:
    """A read-only view of ``stream`` with a ``name`` (a spooled temporary file's is ``None``)."""

    def __init__(self, stream: Any, name: str) -> None:
        self._stream = stream
        self.name = name

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._stream.read(n)
        return data


class _Tee:
    """Reads from ``source`` and copies every byte read into ``sink``."""

    def __init__(self, source: BinaryIO, sink: Any) -> None:
        self._source = source
        self._sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self._sink.write(data)
        return data


__all__ = ["ADD_OPTIONS", "MIN_KUBO_VERSION", "PIN_SECONDS_PER_BLOCK", "KuboStore", "api_multiaddr"]
