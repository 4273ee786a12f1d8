"""Blob storage with IPFS CIDs: an embedded blockstore and a kubo backend behind one interface.

Everything else uses :class:`BlobStore`: ``put`` bytes or a stream and get a CID, ``get``
a CID and get bytes back that were verified block by block against it, whatever the
backend; or, holding the blob's sha256 from the ledger, ``get_verified`` it: one pass
that hashes each byte once and returns the bytes only if they hash to that digest (see
:mod:`fedchain.storage._base` for why that is sound). :func:`open_store` picks the
backend from a location string.

CIDs are exactly those of kubo's default ``ipfs add`` (UnixFS, 262,144-byte chunks,
balanced DAG of at most 174 links, dag-pb leaves, sha2-256, CIDv0). On request
(``version=1``) the CIDv1 of *the same DAG* is returned: dag-pb codec, base32, the same
multihash, so ``ipfs cid base32 <Qm...>`` gives it and any IPFS node holding the DAG
serves it under either CID. That is deliberately not what ``ipfs add --cid-version=1``
gives: that flag also switches kubo to raw leaves and CIDv1 links, a different DAG with
a different root hash. Reading accepts both forms, and raw leaves too, so DAGs imported
from a CAR made that way can still be read and verified.

Which parts are libraries and which are written here: CIDs, multihashes, multibase and
varints come from ``multiformats``; the CAR header's DAG-CBOR from ``dag-cbor``; the
kubo RPC client is ``ipfshttpclient``. The dag-pb/UnixFS encoding, kubo's balanced
importer, the verified DAG reader and the CAR section framing are written by hand (see
each ``_`` module's docstring for why).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import BinaryIO

from fedchain.errors import DigestMismatchError, StoreUnavailableError
from fedchain.storage._base import DEFAULT_MAX_BLOB_SIZE, BlobStore
from fedchain.storage._cid import parse_cid
from fedchain.storage._kubo import KuboStore
from fedchain.storage._local import LocalBlockStore
from fedchain.storage._unixfs import CHUNK_SIZE, MAX_LINKS, import_bytes, import_stream
from fedchain.types import Cid

logger = logging.getLogger(__name__)

_MULTIADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/")


def cid_of(data: bytes, *, version: int = 0) -> Cid:
    """The CID kubo's default ``ipfs add`` gives ``data``, computed without storing anything.

    Parameters
    ----------
    data:
        The blob.
    version:
        0 for CIDv0 (``Qm...``), 1 for the CIDv1 (``bafy...``) of the same DAG.
    """
    return import_bytes(data, None).with_version(version).text()


def cid_of_stream(stream: BinaryIO, *, version: int = 0) -> Cid:
    """Like :func:`cid_of` for everything left in ``stream``, one chunk in memory at a time."""
    ref, _ = import_stream(stream, None, None)
    return ref.with_version(version).text()


def normalize_cid(cid: str, *, version: int | None = None) -> Cid:
    """Check that ``cid`` is a dag-pb or raw CID and return its canonical text (optionally re-versioned).

    Raises
    ------
    CidFormatError
        If ``cid`` is not one.
    """
    ref = parse_cid(cid)
    return (ref if version is None else ref.with_version(version)).text()


def open_store(location: str, *, max_blob_size: int = DEFAULT_MAX_BLOB_SIZE, create: bool = True) -> BlobStore:
    """Open the store at ``location``.

    Parameters
    ----------
    location:
        A directory (created if missing) for the embedded :class:`LocalBlockStore`; or a
        kubo RPC API address, ``http://host:port`` / ``https://...`` or a multiaddr such
        as ``/ip4/127.0.0.1/tcp/5001``, for :class:`KuboStore`.
    max_blob_size:
        The largest blob the store accepts or returns, in bytes.
    create:
        Create a missing directory (``False`` for a reader such as the audit: a mistyped
        location is an error, and nothing is written to disk).

    Raises
    ------
    StoreUnavailableError
        If the directory cannot be used (or, without ``create``, does not exist as a store) or
        the daemon does not answer.
    """
    if not location:
        raise StoreUnavailableError(location, "empty store location")
    if location.startswith(("http://", "https://")) or _MULTIADDR.match(location):
        return KuboStore(location, max_blob_size=max_blob_size)
    if not create and not (Path(location) / "blocks").is_dir():
        what = "does not exist" if not Path(location).exists() else "is not a fedchain store (no blocks/ directory)"
        raise StoreUnavailableError(location, f"{what}; give the directory of an existing store")
    return LocalBlockStore(location, max_blob_size=max_blob_size)


def export_car(store: BlobStore, cid: str, out: BinaryIO) -> int:
    """Write the DAG of ``cid`` from ``store`` to ``out`` as a CARv1; return the bytes written.

    Every block is verified on the way out, so the archive is good whatever the backend.
    ``ipfs dag import`` on any IPFS node then serves the blob under the same CID.
    """
    return store.export_car(cid, out)


def import_car(store: BlobStore, stream: BinaryIO) -> list[Cid]:
    """Import a CARv1 (for example from ``ipfs dag export``) into ``store``; return its roots.

    Every block is verified against its CID before it is stored, and each root's DAG
    must be complete; roots are pinned (as ``ipfs dag import`` does).
    """
    return store.import_car(stream)


__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_BLOB_SIZE",
    "MAX_LINKS",
    "BlobStore",
    "DigestMismatchError",
    "KuboStore",
    "LocalBlockStore",
    "cid_of",
    "cid_of_stream",
    "export_car",
    "import_car",
    "normalize_cid",
    "open_store",
]
