"""The :class:`BlobStore` interface and the verified read paths every backend shares.

Two ways to read a blob, both verified, neither ever returning bytes nobody checked:

- :meth:`DagStore.get` checks every block against the CID that names it. It needs nothing
  but the CID, so it is what a caller uses who holds nothing else.
- :meth:`DagStore.get_verified` is for a caller who holds the blob's sha256 from an
  authority it trusts more than the store, the ledger: by the design's "One hash" rule
  the on-chain digest, sha256 of the blob's bytes, is what makes a blob the right one,
  and the CID beside it only says where to fetch it. The blob's bytes are hashed once,
  as they are copied into one buffer of the blob's exact size, and returned only if
  they hash to that digest. A blob that hashes to the ledger's digest is the blob the
  ledger recorded (short of a sha256 collision), whichever blocks it came from; hashing
  every leaf block against its CID as well would hash every byte a second time and
  prove nothing more about the bytes. What it no longer proves by default is that the
  recorded CID names those bytes, i.e. that the store holds the right blocks under the
  right names (an honest store computes the names from the bytes, so only a damaged or
  lying store could break it, and another IPFS node asked for that CID would then serve
  other bytes). ``check_cid=True`` keeps that check, at the cost of the second hash.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import BinaryIO, Protocol, runtime_checkable

from fedchain.errors import BlobTooLargeError, DigestMismatchError, IntegrityError
from fedchain.storage._car import write_car
from fedchain.storage._cid import BlockRef, parse_cid
from fedchain.storage._unixfs import LeafRunReader, iter_dag, iter_file, read_file, read_root
from fedchain.types import Cid

logger = logging.getLogger(__name__)

#: The default largest blob a store accepts or returns: 256 MiB.
DEFAULT_MAX_BLOB_SIZE = 256 * 1024 * 1024


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed blob storage: bytes in, a kubo-compatible CID out, and back.

    Every read is verified against the CID whatever the backend; a mismatch raises
    :class:`~fedchain.errors.IntegrityError` naming the CID and the block. ``cid``
    arguments accept a CIDv0 or CIDv1 string (or :class:`~fedchain.types.Cid`).
    """

    @property
    def location(self) -> str:
        """Where the store is: a directory path or a kubo API address."""
        ...

    @property
    def max_blob_size(self) -> int:
        """The largest blob, in bytes, this store accepts or returns."""
        ...

    @property
    def concurrent_reads(self) -> bool:
        """Whether the read methods may be called from several threads at once."""
        ...

    def put(self, data: bytes, *, version: int = 0) -> Cid:
        """Store ``data`` as one UnixFS file; return its CID (v0 unless ``version=1``)."""
        ...

    def put_stream(self, stream: BinaryIO, *, version: int = 0) -> Cid:
        """Store everything left in ``stream``, holding a few chunks in memory at most."""
        ...

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        """Return the blob's bytes, verified; refuse before reading if over the limit."""
        ...

    def get_verified(
        self, cid: str, sha256: bytes, *, max_size: int | None = None, check_cid: bool = False
    ) -> bytearray:
        """Return the blob's bytes in a new buffer, only if they hash to ``sha256``; each byte hashed once."""
        ...

    def get_to(self, cid: str, out: BinaryIO, *, max_size: int | None = None) -> int:
        """Stream the blob to ``out`` block by block; return the number of bytes written."""
        ...

    def size(self, cid: str) -> int:
        """The blob's size in bytes, from its (verified) root node."""
        ...

    def has(self, cid: str) -> bool:
        """Whether the store holds the blob."""
        ...

    def pin(self, cid: str) -> None:
        """Keep the blob (the ledger references it)."""
        ...

    def unpin(self, cid: str) -> None:
        """Stop keeping the blob on the ledger's account; unpinning an unpinned blob is no error."""
        ...

    def export_car(self, cid: str, out: BinaryIO) -> int:
        """Write the blob's DAG as a CARv1 to ``out``; return the bytes written."""
        ...

    def import_car(self, stream: BinaryIO) -> list[Cid]:
        """Import a CARv1 (every block verified); return its roots."""
        ...

    def close(self) -> None:
        """Release connections or handles; the store is not used afterwards."""
        ...


class DagStore(ABC):
    """Shared read path over a backend's raw block lookup (:meth:`_read_block`).

    Subclasses supply storage and retrieval of raw blocks; everything that turns
    blocks into verified blob bytes lives here, so no backend can skip verification.
    """

    def __init__(self, max_blob_size: int) -> None:
        if max_blob_size < 0:
            raise ValueError(f"max_blob_size must be >= 0, not {max_blob_size}")
        self._max_blob_size = max_blob_size

    @property
    def max_blob_size(self) -> int:
        """The largest blob, in bytes, this store accepts or returns."""
        return self._max_blob_size

    @property
    def concurrent_reads(self) -> bool:
        """Whether the read methods may be called from several threads at once (not unless a backend says so)."""
        return False

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store is."""

    @abstractmethod
    def _read_block(self, ref: BlockRef) -> bytes | None:
        """A block's raw bytes (unverified; at most a little over the block limit), or ``None``."""

    def _read_block_into(self, ref: BlockRef, parts: Sequence[memoryview]) -> int | None:
        """Fill ``parts`` in order with the block's bytes and return its size, or ``None`` if absent.

        The verified read's scatter read (:data:`~fedchain.storage._unixfs.BlockReader`);
        this default copies from :meth:`_read_block`, a backend with files overrides it
        to read straight into the parts.
        """
        block = self._read_block(ref)
        if block is None:
            return None
        view = memoryview(block)
        for part in parts:
            n = min(len(part), len(view))
            part[:n] = view[:n]
            view = view[n:]
        return len(block)

    def _leaf_run_reader(self) -> LeafRunReader | None:
        """The verified read's reader of a run of leaves (:data:`~fedchain.storage._unixfs.LeafRunReader`), if any.

        None by default: the leaves are read one by one through :meth:`_read_block_into`.
        """
        return None

    def _limit(self, max_size: int | None) -> int:
        return self._max_blob_size if max_size is None else min(max_size, self._max_blob_size)

    def _check_put_size(self, size: int) -> None:
        if size > self._max_blob_size:
            raise BlobTooLargeError(size, self._max_blob_size)

    def iter_blob(self, cid: str, *, max_size: int | None = None) -> Iterator[memoryview]:
        """Yield the blob's bytes in verified pieces (a chunk at a time).

        Raises
        ------
        CidFormatError
            If ``cid`` is not a CID.
        BlobTooLargeError
            Before any block but the root is read, if the blob is over the limit.
        BlobNotFoundError, IntegrityError
            If a block is missing or does not match.
        """
        return iter_file(self._read_block, parse_cid(cid), limit=self._limit(max_size))

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        """Return the blob's bytes, every block verified against its CID.

        Parameters
        ----------
        cid:
            The blob's CID (v0 or v1).
        max_size:
            Refuse blobs larger than this (the store's own limit applies as well).

        Raises
        ------
        BlobTooLargeError
            If the root node says the blob is larger than the limit (nothing else is read).
        BlobNotFoundError, IntegrityError, CidFormatError
        """
        return b"".join(self.iter_blob(cid, max_size=max_size))

    def get_verified(
        self, cid: str, sha256: bytes, *, max_size: int | None = None, check_cid: bool = False
    ) -> bytearray:
        """Return the blob's bytes, only if they hash to ``sha256``: one pass, one buffer.

        The bytes are copied block by block into one new buffer of the blob's exact size
        and hashed as they arrive, so the read holds one copy of the blob (plus a block)
        and hashes each byte once. Why that is a sound check, and what it leaves out
        unless ``check_cid`` is set, is in the module docstring. Every node with children
        (the root of a blob of more than one block, and any inner node) is checked
        against its CID before its links are followed, and all UnixFS sizes are checked,
        as by :meth:`get`.

        Parameters
        ----------
        cid:
            Where the blob is (v0 or v1).
        sha256:
            The digest the bytes must have (32 bytes), from an authority the caller
            trusts: for fedchain, the ledger.
        max_size:
            Refuse blobs larger than this (the store's own limit applies as well).
        check_cid:
            Also check every leaf block against its CID, as :meth:`get` does (hashes
            every byte a second time).

        Returns
        -------
        bytearray
            A buffer owned by the caller (nothing else refers to it).

        Raises
        ------
        DigestMismatchError
            If the blob's bytes do not hash to ``sha256``; its ``actual`` is their digest.
            Nothing is returned.
        IntegrityError
            If a block the read relied on is malformed or does not match its CID; after a
            digest mismatch or a malformed leaf, the blob is read again with every block
            checked, so a damaged block is reported naming the block, exactly as
            :meth:`get` reports it.
        BlobTooLargeError, BlobNotFoundError, CidFormatError
            As :meth:`get`.
        """
        if len(sha256) != 32:
            raise ValueError(f"sha256 must be a 32-byte digest, not {len(sha256)} bytes")
        ref = parse_cid(cid)
        limit = self._limit(max_size)
        try:
            return read_file(
                self._read_block,
                ref,
                limit=limit,
                sha256=bytes(sha256),
                check_leaves=check_cid,
                read_into=self._read_block_into,
                read_leaves=self._leaf_run_reader(),
            )
        except IntegrityError as err:
            if check_cid:
                raise
            # The rare failure path: find out, block by block, what a full check says
            # (a damaged block, named; or whole bytes that are simply other bytes).
            self._diagnose(ref, limit, err)
            raise

    def _diagnose(self, ref: BlockRef, limit: int, err: IntegrityError) -> None:
        """Re-read ``ref`` checking every block; raise what that finds (else return, to re-raise ``err``)."""
        h = hashlib.sha256()
        for piece in iter_file(self._read_block, ref, limit=limit):
            h.update(piece)
        if isinstance(err, DigestMismatchError) and h.digest() != err.actual:
            raise DigestMismatchError(err.cid, err.expected, h.digest()) from None  # the store changed meanwhile

    def get_to(self, cid: str, out: BinaryIO, *, max_size: int | None = None) -> int:
        """Write the blob to ``out`` chunk by chunk; return the number of bytes written.

        Each chunk is written only after its block was verified; if a later block fails,
        ``out`` holds a verified prefix and the error is raised (write to a temporary
        file and rename it to avoid keeping the prefix).
        """
        written = 0
        for piece in self.iter_blob(cid, max_size=max_size):
            out.write(piece)
            written += len(piece)
        return written

    def size(self, cid: str) -> int:
        """The blob's size in bytes, read from its verified root node."""
        ref = parse_cid(cid)
        return read_root(self._read_block, ref, str(ref)).filesize

    def export_car(self, cid: str, out: BinaryIO) -> int:
        """Write the DAG under ``cid`` as a CARv1 (root as given), blocks verified, DFS order."""
        ref = parse_cid(cid)
        return write_car(out, [ref], iter_dag(self._read_block, ref))

    def close(self) -> None:
        """Release resources (nothing by default)."""

    def __enter__(self) -> DagStore:  # noqa: PYI034 - subclasses are not expected
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


__all__ = ["DEFAULT_MAX_BLOB_SIZE", "BlobStore", "DagStore"]
