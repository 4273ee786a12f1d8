"""The embedded store: a blockstore directory with kubo's CIDs, nothing to install.

Layout (the same sharding as kubo's default ``flatfs`` datastore, so the directory is
easy to inspect side by side with a kubo repo)::

    <dir>/blocks/<XY>/<KEY>.data   one file per block; KEY is the unpadded base32 of the
                                   block's multihash ("CIQ..." for sha2-256), XY its
                                   next-to-last two characters
    <dir>/pins/<KEY>               one file per pinned root, holding the CID as text

Blocks are keyed by multihash, so a CIDv0 and a CIDv1 of one block share a file.

Crash and concurrency safety: a block is written to a temporary file in its shard
directory (``.KEY.<pid>.<random>.tmp``) and renamed over its final name with
:func:`os.replace`, which is atomic on POSIX, so a block file is either absent or whole;
a killed writer leaves at most a temporary file, never a partial block. Several
processes may add to one store at once: two writers of the same block write identical
bytes, and whichever rename lands last wins. Children are written before their parents,
so a root block present means its whole DAG was written.

Durability: by default blocks are not fsync'ed (a crash of the *process* loses nothing
written; a power loss may lose recent blocks, and any block damaged that way fails
verification on read rather than being returned). Pass ``fsync=True`` to fsync each
block file and its directory before the rename is relied on.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Sequence
from typing import BinaryIO

from fedchain.errors import BlobNotFoundError, CidFormatError, StoreUnavailableError
from fedchain.storage._base import DEFAULT_MAX_BLOB_SIZE, DagStore
from fedchain.storage._car import CarReader, car_import_limit
from fedchain.storage._cid import DAG_PB, RAW, BlockRef, block_key, parse_cid, read_binary_cid
from fedchain.storage._dagpb import DecodeError, decode_node, leaf_envelope
from fedchain.storage._native import Leaf, leaf_reader
from fedchain.storage._unixfs import CHUNK_SIZE, MAX_BLOCK_SIZE, LeafRunReader, import_bytes, import_stream
from fedchain.types import Cid

logger = logging.getLogger(__name__)

_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_OPEN_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


class LocalBlockStore(DagStore):
    """A blockstore directory that computes exactly the CIDs of kubo's default ``ipfs add``.

    Parameters
    ----------
    path:
        The store directory; created (with parents) unless ``create`` is false.
    max_blob_size:
        The largest blob accepted by :meth:`put` / :meth:`put_stream` or returned by
        :meth:`get`; larger ones are refused with :class:`~fedchain.errors.BlobTooLargeError`
        before they are read.
    fsync:
        Flush each block and its directory to disk before relying on it (slower).
    create:
        Create the directory if it does not exist.

    Raises
    ------
    StoreUnavailableError
        If the directory does not exist (and ``create`` is false), is not a directory,
        or cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
        fsync: bool = False,
        create: bool = True,
    ) -> None:
        super().__init__(max_blob_size)
        self._path = os.path.abspath(os.fspath(path))
        self._blocks = os.path.join(self._path, "blocks")
        self._blocks_path = os.fsencode(self._blocks)  # what the compiled leaf reader names block files under
        self._pins = os.path.join(self._path, "pins")
        self._fsync = fsync
        self._shards_made: set[str] = set()
        if not create and not os.path.isdir(self._path):
            raise StoreUnavailableError(self._path, "no such directory")
        try:
            os.makedirs(self._blocks, exist_ok=True)
            os.makedirs(self._pins, exist_ok=True)
        except OSError as err:
            raise StoreUnavailableError(self._path, f"cannot create the store: {err.strerror or err}") from err

    @property
    def location(self) -> str:
        """The store directory (absolute)."""
        return self._path

    @property
    def concurrent_reads(self) -> bool:
        """True: a read opens its own files and shares no state."""
        return True

    # ------------------------------------------------------------------ blocks on disk

    def _block_path(self, ref: BlockRef) -> tuple[str, str]:
        key = block_key(ref)
        shard = os.path.join(self._blocks, key[-3:-1])
        return shard, os.path.join(shard, key + ".data")

    def _read_block(self, ref: BlockRef) -> bytes | None:
        _, path = self._block_path(ref)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                # Read exactly the file (no over-allocation); of an oversized file, one
                # byte past the limit is enough for the caller to refuse it.
                data = f.read(size if size <= MAX_BLOCK_SIZE else MAX_BLOCK_SIZE + 1)
                return data if isinstance(data, bytes) else b""
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreUnavailableError(self._path, f"cannot read block {ref}: {err.strerror or err}") from err

    def _read_block_into(self, ref: BlockRef, parts: Sequence[memoryview]) -> int | None:
        """Read the block file straight into ``parts`` (``readv``) if it fits them; return its size."""
        _, path = self._block_path(ref)
        try:
            fd = os.open(path, _OPEN_READ)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreUnavailableError(self._path, f"cannot read block {ref}: {err.strerror or err}") from err
        try:
            size = os.fstat(fd).st_size
            if size != sum(len(part) for part in parts):
                return size  # not the block the caller expects: it reads it the general way
            pending = [part for part in parts if len(part)]
            while pending:
                n = os.readv(fd, pending)
                if n == 0:
                    return size - sum(len(part) for part in pending)  # the file shrank meanwhile
                while n and n >= len(pending[0]):
                    n -= len(pending.pop(0))
                if n:
                    pending[0] = pending[0][n:]
            return size
        except OSError as err:
            raise StoreUnavailableError(self._path, f"cannot read block {ref}: {err.strerror or err}") from err
        finally:
            os.close(fd)

    def _leaf_run_reader(self) -> LeafRunReader | None:
        """The compiled reader of a run of leaf files (:mod:`fedchain.storage._native`), where it was built."""
        return self._read_leaves if leaf_reader() is not None else None

    def _read_leaves(self, leaves: Sequence[tuple[BlockRef, int]], out: memoryview) -> int:
        """Read a run of leaf files straight into ``out`` in one call (see :data:`LeafRunReader`)."""
        reader = leaf_reader()
        if reader is None:
            return 0
        runs: list[Leaf] = [
            (ref.multihash, *((b"", b"") if ref.codec == RAW else leaf_envelope(size)), size) for ref, size in leaves
        ]
        return reader.read(self._blocks_path, runs, out)

    def _has_block(self, ref: BlockRef) -> int | None:
        """The size of the block's file, or ``None`` if absent."""
        try:
            return os.stat(self._block_path(ref)[1]).st_size
        except FileNotFoundError:
            return None

    def _write_block(self, multihash: bytes, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Store a block atomically (temp file + rename); skip it if already there whole."""
        ref = BlockRef(1, DAG_PB, multihash)  # the key depends on the multihash only
        shard, path = self._block_path(ref)
        size = sum(len(part) for part in parts)
        try:
            if os.stat(path).st_size == size:
                return
        except FileNotFoundError:
            pass
        tmp = os.path.join(shard, f".{os.path.basename(path)[:-5]}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            if shard not in self._shards_made:
                os.makedirs(shard, exist_ok=True)
                self._shards_made.add(shard)
            fd = os.open(tmp, _OPEN_NEW, 0o644)
            try:
                for part in parts:
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view) :]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if self._fsync:
                dir_fd = os.open(shard, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as err:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StoreUnavailableError(
                self._path, f"cannot write block {os.path.basename(path)}: {err.strerror or err}"
            ) from err

    # ------------------------------------------------------------------ BlobStore

    def put(self, data: bytes, *, version: int = 0) -> Cid:
        """Store ``data`` as one UnixFS file and return its CID.

        Parameters
        ----------
        data:
            The blob.
        version:
            0 for the CIDv0 ``Qm...`` (kubo's default), 1 for the CIDv1 ``bafy...`` of
            the same DAG.

        Raises
        ------
        BlobTooLargeError
            If ``data`` is over the store's limit (nothing is written).
        StoreUnavailableError
            If a block cannot be written.
        """
        self._check_put_size(len(data))
        started = time.perf_counter()
        ref = import_bytes(data, self._write_block).with_version(version)
        logger.debug("put %s (%d bytes) in %.3f s", ref, len(data), time.perf_counter() - started)
        return ref.text()

    def put_stream(self, stream: BinaryIO, *, version: int = 0) -> Cid:
        """Store everything left in ``stream``; at most one chunk of it is in memory at a time.

        Raises
        ------
        BlobTooLargeError
            Before reading if the stream's size is known and over the limit, else as soon
            as the limit is passed (blocks written until then are unreferenced).
        """
        started = time.perf_counter()
        ref, size = import_stream(stream, self._write_block, self._max_blob_size)
        ref = ref.with_version(version)
        logger.debug("put %s (%d bytes, streamed) in %.3f s", ref, size, time.perf_counter() - started)
        return ref.text()

    def has(self, cid: str) -> bool:
        """Whether every block of the blob is in the store.

        Internal nodes are read to find their children (not re-hashed: :meth:`get`
        verifies); full-size leaves are only checked for presence.
        """
        root = parse_cid(cid)
        stack = [root]
        seen: set[bytes] = set()
        while stack:
            ref = stack.pop()
            if ref.multihash in seen:
                continue
            seen.add(ref.multihash)
            size = self._has_block(ref)
            if size is None:
                return False
            if ref.codec != DAG_PB or size >= CHUNK_SIZE:
                continue  # a raw leaf, or a full leaf (internal nodes are far smaller)
            block = self._read_block(ref)
            if block is None:
                return False
            try:
                stack.extend(read_binary_cid(link.hash)[0] for link in decode_node(block).links)
            except (DecodeError, CidFormatError):
                return True  # present but malformed: get() will say exactly what is wrong
        return True

    def pin(self, cid: str) -> None:
        """Record that the blob is pinned (a local store never discards blocks on its own).

        Raises
        ------
        BlobNotFoundError
            If the store does not hold the whole blob.
        """
        ref = parse_cid(cid)
        if not self.has(cid):
            raise BlobNotFoundError(str(ref))
        path = os.path.join(self._pins, block_key(ref))
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(str(ref) + "\n")
        os.replace(tmp, path)

    def unpin(self, cid: str) -> None:
        """Remove the blob's pin record, if any."""
        try:
            os.unlink(os.path.join(self._pins, block_key(parse_cid(cid))))
        except FileNotFoundError:
            pass

    def pins(self) -> list[Cid]:
        """The pinned CIDs, sorted."""
        out: list[Cid] = []
        for name in sorted(os.listdir(self._pins)):
            if name.endswith(".tmp"):
                continue
            with open(os.path.join(self._pins, name), encoding="ascii") as f:
                out.append(Cid(f.read().strip()))
        return sorted(out)

    def import_car(self, stream: BinaryIO) -> list[Cid]:
        """Import a CARv1: verify and store each block, check each root's DAG is whole, pin the roots.

        Raises
        ------
        CarFormatError
            If the archive is malformed, larger than the store's limit allows, or lacks
            a block of one of its roots' DAGs (the blocks it did hold are kept: they are
            valid and unreferenced).
        IntegrityError
            If a block does not match its CID (nothing after it is stored).
        """
        reader = CarReader(stream, limit=car_import_limit(self._max_blob_size))
        count = 0
        for ref, block in reader.blocks():
            self._write_block(ref.multihash, (block,))
            count += 1
        reader.check_complete()
        roots = [root.text() for root in reader.roots]
        for root in roots:
            self.pin(root)
        logger.debug("imported CAR: %d blocks, %d bytes, roots %s", count, reader.bytes_read, roots)
        return roots


__all__ = ["LocalBlockStore"]
