"""UnixFS file import (kubo's default ``ipfs add``) and verified, streaming read-back.

Import mirrors kubo's defaults: fixed-size chunks of 262,144 bytes, each wrapped in a
dag-pb leaf (``raw-leaves=false``), assembled into the *balanced* layout with at most
174 links per node, sha2-256, CIDv0. The balanced layout is a left-filled 174-ary tree
whose leaves all sit at the same depth; nodes on its right edge may be partly filled
(even with one child). The builder below produces it in one pass, holding at most one
pending node per tree level (174 links of about 48 bytes), so memory does not grow with
the blob. Written by hand: no maintained Python library implements kubo's importer.

Reading walks the DAG depth-first, re-hashing every block against the CID that names it
and checking the UnixFS sizes at every level, so a block that is missing, corrupt,
truncated, or lies about its size is reported (naming the blob and the block) before any
byte after it is handed out. The root's ``filesize`` is checked against the caller's
limit before any other block is read.

:func:`read_file` reads a whole blob into one buffer of its exact size. Given the sha256
the caller trusts (the ledger's), it hashes the file's bytes as they arrive instead of
every leaf block, so each byte is hashed once; nodes with children (one per 174 leaves)
are still checked against their CIDs before their links are followed, and all the sizes
are checked.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from fedchain.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CidFormatError,
    DigestMismatchError,
    IntegrityError,
)
from fedchain.storage._buffers import new_buffer
from fedchain.storage._cid import DAG_PB, RAW, BlockRef, check_block, read_binary_cid
from fedchain.storage._dagpb import (
    UNIXFS_FILE,
    UNIXFS_RAW,
    UNIXFS_TYPE_NAMES,
    DecodeError,
    Link,
    decode_node,
    decode_unixfs,
    file_node,
    leaf_envelope,
)

logger = logging.getLogger(__name__)

#: kubo's default chunker: ``size-262144``.
CHUNK_SIZE = 262_144
#: kubo's balanced layout: at most 174 links per node.
MAX_LINKS = 174
#: The largest block the store reads or accepts. kubo refuses blocks over 1 MiB; the
#: importer's blocks are at most a chunk plus 14 bytes. Checked before a block is read.
MAX_BLOCK_SIZE = 1 << 20
#: Deeper than any real file (174**8 chunks is 2**80 bytes); stops a forged, looping DAG.
MAX_DEPTH = 16

#: Receives each new block as its multihash and the parts that concatenate to its bytes.
BlockSink = Callable[[bytes, Sequence[bytes | bytearray | memoryview]], None]
#: Returns a block's bytes (not yet verified), or ``None`` if the store does not have it.
BlockSource = Callable[[BlockRef], bytes | None]
#: Reads a block into the given buffers in order, as ``readv`` does, and returns the
#: block's size (which may differ from the buffers' total: then the buffers' contents are
#: meaningless), or ``None`` if the store does not have it.
BlockReader = Callable[[BlockRef, Sequence[memoryview]], int | None]
#: Reads a run of leaves, each given as its reference and the size its parent gives it, straight
#: into the buffer one after the other, and returns how many leading ones it read. A leaf counts as
#: read only if its block is a raw leaf of that size, or a dag-pb leaf of that size in the layout
#: kubo writes (the envelope :func:`leaf_envelope` gives); the buffer past them means nothing.
LeafRunReader = Callable[[Sequence[tuple[BlockRef, int]], memoryview], int]


class FileImporter:
    """Build kubo's balanced UnixFS DAG from chunks, handing each block to ``sink``.

    Feed :meth:`add_chunk` with chunks of exactly :data:`CHUNK_SIZE` bytes (the last one
    may be shorter), then call :meth:`finish`. Children always reach the sink before
    their parent, so a store that has the root block has the whole DAG.

    Parameters
    ----------
    sink:
        Where blocks go; ``None`` computes the CID without storing anything.
    """

    def __init__(self, sink: BlockSink | None = None) -> None:
        self._sink = sink
        self._levels: list[list[Link]] = [[]]
        self.size = 0
        self._done = False

    def add_chunk(self, chunk: bytes | bytearray | memoryview) -> None:
        """Add the next chunk of the file (``len(chunk) <= CHUNK_SIZE``)."""
        n = len(chunk)
        if n == 0:
            return
        levels = self._levels
        # A full level is closed only when more data follows, so a file of exactly
        # 174 chunks keeps a one-level tree, as kubo's builder does.
        depth = 0
        while len(levels[depth]) == MAX_LINKS:
            self._close_level(depth)
            depth += 1
        prefix, suffix = leaf_envelope(n)
        h = hashlib.sha256(prefix)
        h.update(chunk)
        h.update(suffix)
        mh = b"\x12\x20" + h.digest()
        if self._sink is not None:
            self._sink(mh, (prefix, chunk, suffix))
        levels[0].append(Link(mh, len(prefix) + n + len(suffix), n))
        self.size += n

    def _close_level(self, depth: int) -> None:
        levels = self._levels
        links = levels[depth]
        block = file_node(links)
        mh = b"\x12\x20" + hashlib.sha256(block).digest()
        if self._sink is not None:
            self._sink(mh, (block,))
        if len(levels) == depth + 1:
            levels.append([])
        levels[depth + 1].append(
            Link(mh, len(block) + sum(link.tsize for link in links), sum(link.filesize for link in links))
        )
        levels[depth] = []

    def finish(self) -> BlockRef:
        """Close the open nodes on the right edge and return the root (a CIDv0 ref)."""
        if self._done:
            raise RuntimeError("FileImporter.finish called twice")
        self._done = True
        levels = self._levels
        if self.size == 0:
            prefix, _suffix = leaf_envelope(0)
            mh = b"\x12\x20" + hashlib.sha256(prefix).digest()
            if self._sink is not None:
                self._sink(mh, (prefix,))
            return BlockRef(0, DAG_PB, mh)
        depth = 0
        while not (depth == len(levels) - 1 and len(levels[depth]) == 1):
            if levels[depth]:
                self._close_level(depth)
            depth += 1
        return BlockRef(0, DAG_PB, levels[depth][0].cid)


def import_bytes(data: bytes | bytearray | memoryview, sink: BlockSink | None) -> BlockRef:
    """Import ``data`` as one UnixFS file; return the root ref (CIDv0)."""
    view = memoryview(data).cast("B")
    importer = FileImporter(sink)
    for start in range(0, len(view), CHUNK_SIZE):
        importer.add_chunk(view[start : start + CHUNK_SIZE])
    return importer.finish()


def known_size(stream: BinaryIO) -> int | None:
    """The number of bytes left in ``stream`` if it can be told without reading, else ``None``."""
    try:
        if stream.seekable():
            pos = stream.tell()
            end = stream.seek(0, 2)
            stream.seek(pos)
            return max(0, end - pos)
    except (OSError, ValueError, AttributeError):
        pass
    return None


def import_stream(stream: BinaryIO, sink: BlockSink | None, limit: int | None) -> tuple[BlockRef, int]:
    """Import everything left in ``stream`` as one UnixFS file, one chunk in memory at a time.

    Returns
    -------
    tuple
        The root ref (CIDv0) and the file size.

    Raises
    ------
    BlobTooLargeError
        Before reading, if the stream's size is known and over ``limit``; otherwise as
        soon as more than ``limit`` bytes have been read (blocks already stored are
        harmless: content-addressed and unreferenced).
    """
    if limit is not None:
        size = known_size(stream)
        if size is not None and size > limit:
            raise BlobTooLargeError(size, limit)
    importer = FileImporter(sink)
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    readinto: Callable[[memoryview], int | None] | None = getattr(stream, "readinto", None)
    while True:
        filled = 0
        while filled < CHUNK_SIZE:
            if readinto is not None:
                got = readinto(view[filled:])
                if got is None:  # a non-blocking stream with nothing ready: not supported
                    raise BlockingIOError("put_stream needs a blocking stream")
            else:
                piece = stream.read(CHUNK_SIZE - filled)
                got = len(piece)
                view[filled : filled + got] = piece
            if not got:
                break
            filled += got
        if filled:
            if limit is not None and importer.size + filled > limit:
                raise BlobTooLargeError(importer.size + filled, limit, what="blob (at least)")
            importer.add_chunk(view[:filled])
        if filled < CHUNK_SIZE:
            break
    return importer.finish(), importer.size


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class FileNode:
    """A verified, decoded file block: inline bytes, then children with their file sizes."""

    filesize: int
    data: memoryview
    children: tuple[tuple[BlockRef, int], ...]


def load_block(source: BlockSource, ref: BlockRef, root: str) -> bytes:
    """Fetch a block and check it against its CID.

    Raises
    ------
    BlobNotFoundError
        If the source has no such block.
    IntegrityError
        If the block is over :data:`MAX_BLOCK_SIZE` or does not hash to ``ref``.
    """
    block = _fetch(source, ref, root)
    check_block(ref, block, root)
    return block


def _fetch(source: BlockSource, ref: BlockRef, root: str) -> bytes:
    """Fetch a block (not checked against its CID), refusing one over :data:`MAX_BLOCK_SIZE`."""
    block = source(ref)
    if block is None:
        raise BlobNotFoundError(root, str(ref))
    if len(block) > MAX_BLOCK_SIZE:
        raise IntegrityError(
            root, str(ref), f"block of {len(block)} bytes is over the {MAX_BLOCK_SIZE}-byte block limit"
        )
    return block


def decode_file_node(ref: BlockRef, block: bytes, root: str) -> FileNode:
    """Decode a verified block as part of a UnixFS file.

    Raises
    ------
    IntegrityError
        If the block is not dag-pb UnixFS file data, or its sizes do not add up.
    """
    if ref.codec == RAW:
        return FileNode(len(block), memoryview(block), ())
    try:
        node = decode_node(block)
        if node.data is None:
            raise DecodeError("dag-pb node without UnixFS data")
        unixfs = decode_unixfs(node.data)
        if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
            name = UNIXFS_TYPE_NAMES.get(unixfs.type, str(unixfs.type))
            raise DecodeError(f"not a UnixFS file but a {name} node")
        if len(unixfs.blocksizes) != len(node.links):
            raise DecodeError(f"{len(node.links)} links but {len(unixfs.blocksizes)} blocksizes")
        children = tuple((read_binary_cid(link.hash)[0], size) for link, size in zip(node.links, unixfs.blocksizes))
    except (DecodeError, CidFormatError) as err:
        raise IntegrityError(root, str(ref), f"malformed UnixFS file node: {err}") from err
    data = unixfs.data if unixfs.data is not None else memoryview(b"")
    total = len(data) + sum(size for _, size in children)
    if unixfs.filesize is not None and unixfs.filesize != total:
        raise IntegrityError(root, str(ref), f"filesize {unixfs.filesize} but its data and children hold {total} bytes")
    return FileNode(total, data, children)


def read_root(source: BlockSource, ref: BlockRef, root: str) -> FileNode:
    """Fetch, verify and decode a file's root node (its ``filesize`` is the blob's size)."""
    return decode_file_node(ref, load_block(source, ref, root), root)


def iter_file(source: BlockSource, ref: BlockRef, *, limit: int | None, what: str = "blob") -> Iterator[memoryview]:
    """Yield the file's bytes in order, each piece only after its block was verified.

    Raises
    ------
    BlobTooLargeError
        Before any block but the root is read, if the root's filesize is over ``limit``.
    BlobNotFoundError, IntegrityError
        As soon as a block is missing, corrupt or inconsistent with its parent.
    """
    root_text = str(ref)
    node = read_root(source, ref, root_text)
    if limit is not None and node.filesize > limit:
        raise BlobTooLargeError(node.filesize, limit, what=what)
    yield from _walk(source, ref, node, root_text, 0)


def _walk(source: BlockSource, ref: BlockRef, node: FileNode, root: str, depth: int) -> Iterator[memoryview]:
    if node.data:
        yield node.data
    for child_ref, expected in node.children:
        if depth >= MAX_DEPTH:
            raise IntegrityError(root, str(child_ref), f"DAG deeper than {MAX_DEPTH} levels")
        child = decode_file_node(child_ref, load_block(source, child_ref, root), root)
        if child.filesize != expected:
            raise IntegrityError(
                root, str(child_ref), f"holds {child.filesize} bytes but its parent {ref} says {expected}"
            )
        yield from _walk(source, child_ref, child, root, depth + 1)


def read_file(
    source: BlockSource,
    ref: BlockRef,
    *,
    limit: int | None,
    sha256: bytes | None = None,
    check_leaves: bool = True,
    what: str = "blob",
    read_into: BlockReader | None = None,
    read_leaves: LeafRunReader | None = None,
) -> bytearray:
    """Read the whole file into a new buffer of its exact size.

    Parameters
    ----------
    source, ref:
        Where the blocks are, and the file's root.
    limit:
        Refuse (before reading anything but the root) a file larger than this.
    sha256:
        If given, the file's bytes must hash to it; they are hashed as they are copied in.
    check_leaves:
        Hash every leaf block against its CID as well (a one-block file's root is its
        leaf). Without a ``sha256`` it must be true (nothing else would check the leaves).
        Nodes with children are always checked.
    read_into:
        The store's scatter read, if it has one: a leaf in the layout kubo writes (or a
        raw leaf) is then read straight into its place in the buffer, its envelope into
        scratch space and compared with the one a leaf of that size has. Anything else
        (or any mismatch) is read and decoded block by block as usual.
    read_leaves:
        The store's reader of a run of leaves, if it has one: the leaves of a node are then read
        a run at a time (leaf by leaf as with ``read_into`` from the first one it did not read)
        and hashed together, so each run of leaves costs one call instead of a few per leaf.

    Raises
    ------
    BlobTooLargeError, BlobNotFoundError, IntegrityError
        As :func:`iter_file`.
    DigestMismatchError
        If the bytes read do not hash to ``sha256`` (nothing is returned).
    """
    if sha256 is None and not check_leaves:
        raise ValueError("read_file without a sha256 must check the leaf blocks")
    root_text = str(ref)
    if check_leaves:
        node = read_root(source, ref, root_text)
    else:
        node = _read_unless_leaf(source, ref, root_text)  # a one-block file is covered by the digest
    if limit is not None and node.filesize > limit:
        raise BlobTooLargeError(node.filesize, limit, what=what)
    buf = new_buffer(node.filesize)  # a new one, or one of the current pool's (see _buffers)
    view = memoryview(buf)
    hasher = hashlib.sha256() if sha256 is not None else None
    readers = _Readers(source, read_into, read_leaves)
    filled = _fill(readers, ref, node, root_text, 0, view, 0, hasher, check_leaves)
    if filled != len(buf):  # the sizes were checked level by level; this cannot differ
        raise IntegrityError(root_text, root_text, f"read {filled} bytes of a {len(buf)}-byte file")
    view.release()
    if hasher is not None and sha256 is not None:
        actual = hasher.digest()
        if actual != sha256:
            raise DigestMismatchError(root_text, sha256, actual)
    return buf


@dataclass(frozen=True)
class _Readers:
    """How :func:`read_file` gets blocks: one at a time, into given buffers, and a run of leaves at a time."""

    source: BlockSource
    read_into: BlockReader | None
    read_leaves: LeafRunReader | None


def _fill(
    readers: _Readers,
    ref: BlockRef,
    node: FileNode,
    root: str,
    depth: int,
    out: memoryview,
    pos: int,
    hasher: Any,
    check_leaves: bool,
) -> int:
    """Copy ``node``'s bytes into ``out`` from ``pos`` on (hashing them into ``hasher``); return the new position."""
    if node.data:
        pos = _put(out, pos, node.data, hasher, root, ref)
    children = node.children
    if children and depth >= MAX_DEPTH:
        raise IntegrityError(root, str(children[0][0]), f"DAG deeper than {MAX_DEPTH} levels")
    index = 0
    while index < len(children):
        if readers.read_leaves is not None:
            count, pos = _read_leaf_run(readers.read_leaves, children, index, out, pos, hasher, check_leaves)
            index += count
            if index == len(children):
                break
        child_ref, expected = children[index]
        index += 1
        if readers.read_into is not None and _read_leaf(
            readers.read_into, child_ref, expected, out, pos, hasher, check_leaves, root
        ):
            pos += expected
            continue
        if check_leaves:
            child = decode_file_node(child_ref, load_block(readers.source, child_ref, root), root)
        else:
            child = _read_unless_leaf(readers.source, child_ref, root)
        if child.filesize != expected:
            raise IntegrityError(
                root, str(child_ref), f"holds {child.filesize} bytes but its parent {ref} says {expected}"
            )
        pos = _fill(readers, child_ref, child, root, depth + 1, out, pos, hasher, check_leaves)
    return pos


def _read_leaf_run(
    read_leaves: LeafRunReader,
    children: Sequence[tuple[BlockRef, int]],
    index: int,
    out: memoryview,
    pos: int,
    hasher: Any,
    check: bool,
) -> tuple[int, int]:
    """Read leaves ``children[index:]`` straight into ``out`` from ``pos`` on, as many as the reader reads.

    Returns how many were read and the position after them. They are the leaves :func:`_read_leaf`
    would have read, with the same bytes: only a child that may be a leaf (raw or dag-pb, holding
    1 byte to a block's limit, within the file) is tried, and with ``check`` each is hashed against
    its CID, the run ending before the first that does not match (the caller reads it the general
    way, which says what is wrong). The run is hashed into ``hasher`` in one call.
    """
    end = index
    stop = pos
    while end < len(children):
        child_ref, size = children[end]
        if child_ref.codec not in (RAW, DAG_PB) or not 0 < size <= MAX_BLOCK_SIZE or stop + size > len(out):
            break
        stop += size
        end += 1
    if end == index:
        return 0, pos
    run = children[index:end]
    count = read_leaves(run, out[pos:stop])
    if check:
        at = pos
        for checked, (child_ref, size) in enumerate(run[:count]):
            prefix, suffix = (b"", b"") if child_ref.codec == RAW else leaf_envelope(size)
            h = hashlib.sha256(prefix)
            h.update(out[at : at + size])
            h.update(suffix)
            if child_ref.multihash[:2] != b"\x12\x20" or h.digest() != child_ref.multihash[2:]:
                count = checked
                break
            at += size
    read_to = pos + sum(size for _, size in run[:count])
    if hasher is not None and read_to > pos:
        hasher.update(out[pos:read_to])
    return count, read_to


def _read_unless_leaf(source: BlockSource, ref: BlockRef, root: str) -> FileNode:
    """Fetch and decode a block, checking it against its CID only if it has children.

    Decoding reads untrusted bytes safely and uses nothing yet; a node with children is
    checked before its links are followed. A leaf's bytes are covered by the caller's
    digest instead.
    """
    block = _fetch(source, ref, root)
    node = decode_file_node(ref, block, root)
    if node.children:
        check_block(ref, block, root)
    return node


def _read_leaf(
    read_into: BlockReader, ref: BlockRef, size: int, out: memoryview, pos: int, hasher: Any, check: bool, root: str
) -> bool:
    """Read ``ref`` into ``out[pos:pos + size]`` if it is a leaf holding exactly ``size`` bytes; else return ``False``.

    A raw leaf is its data. A dag-pb leaf as kubo writes it is ``prefix + data + suffix``
    with the envelope :func:`leaf_envelope` gives for its size, which
    :func:`decode_file_node` decodes to exactly that data and nothing else; so a block of
    that exact size whose envelope is that envelope is such a leaf. ``False`` (whatever
    was written into ``out``) sends the caller to the general path, which reads the block
    again and says precisely what is wrong with it, if anything.
    """
    if size <= 0 or pos + size > len(out) or size > MAX_BLOCK_SIZE:
        return False
    target = out[pos : pos + size]
    if ref.codec == RAW:
        prefix, suffix = b"", b""
        got = read_into(ref, [target])
        if got != size:
            return False
    elif ref.codec == DAG_PB:
        prefix, suffix = leaf_envelope(size)
        head, tail = bytearray(len(prefix)), bytearray(len(suffix))
        got = read_into(ref, [memoryview(head), target, memoryview(tail)])
        if got != len(prefix) + size + len(suffix) or head != prefix or tail != suffix:
            return False
    else:
        return False
    if check:
        if ref.multihash[:2] != b"\x12\x20" or len(ref.multihash) != 34:
            return False
        h = hashlib.sha256(prefix)
        h.update(target)
        h.update(suffix)
        if h.digest() != ref.multihash[2:]:
            return False
    if hasher is not None:
        hasher.update(target)
    return True


def _put(out: memoryview, pos: int, data: memoryview, hasher: Any, root: str, ref: BlockRef) -> int:
    end = pos + len(data)
    if end > len(out):
        raise IntegrityError(root, str(ref), f"the DAG holds more than the root's filesize of {len(out)} bytes")
    out[pos:end] = data
    if hasher is not None:
        hasher.update(data)
    return end


def iter_dag(source: BlockSource, ref: BlockRef) -> Iterator[tuple[BlockRef, bytes]]:
    """Yield every block of the DAG under ``ref``, verified, depth-first pre-order, each once.

    This is the order kubo's ``ipfs dag export`` writes. Works for any dag-pb/raw DAG,
    not only files.
    """
    root = str(ref)
    seen: set[bytes] = set()
    stack: list[tuple[BlockRef, int]] = [(ref, 0)]
    while stack:
        current, depth = stack.pop()
        if current.multihash in seen:
            continue
        seen.add(current.multihash)
        block = load_block(source, current, root)
        yield current, block
        if current.codec != DAG_PB:
            continue
        try:
            links = [read_binary_cid(link.hash)[0] for link in decode_node(block).links]
        except (DecodeError, CidFormatError) as err:
            raise IntegrityError(root, str(current), f"malformed dag-pb node: {err}") from err
        if links and depth >= MAX_DEPTH:
            raise IntegrityError(root, str(current), f"DAG deeper than {MAX_DEPTH} levels")
        stack.extend((link, depth + 1) for link in reversed(links))


__all__ = [
    "CHUNK_SIZE",
    "MAX_BLOCK_SIZE",
    "MAX_LINKS",
    "BlockReader",
    "BlockSink",
    "BlockSource",
    "FileImporter",
    "FileNode",
    "decode_file_node",
    "import_bytes",
    "import_stream",
    "iter_dag",
    "iter_file",
    "known_size",
    "load_block",
    "read_file",
    "read_root",
]
