"""CARv1 (content-addressed archive) writing and streaming, verified reading.

A CARv1 is ``varint(len) header`` followed by sections ``varint(len) CID block``; the
header is the DAG-CBOR map ``{"roots": [CID, ...], "version": 1}``. The header is
encoded and decoded with the ``dag-cbor`` library (same authors and CID type as
``multiformats``). The section framing is three lines of varint handling and is written
here because the Python CAR libraries load a whole archive into memory, and a blob's
CAR must stream with bounded memory. Block order on export is kubo's ``ipfs dag export``
order (depth-first, pre-order, each block once), so for a DAG built with the same
settings the file is the one kubo writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

import dag_cbor
from multiformats import CID, varint

from fedchain.errors import CarFormatError, CidFormatError, IntegrityError
from fedchain.storage._cid import DAG_PB, BlockRef, check_block, parse_cid, read_binary_cid
from fedchain.storage._dagpb import DecodeError, decode_node

logger = logging.getLogger(__name__)

#: Largest header accepted (a header lists roots; ours has one).
MAX_HEADER_SIZE = 1 << 20
#: Largest section accepted: a block at the block limit plus a generous CID.
MAX_SECTION_SIZE = (1 << 20) + 256


class Readable(Protocol):
    """Anything with ``read(n) -> bytes``."""

    def read(self, n: int = -1, /) -> bytes: ...


def car_import_limit(max_blob_size: int) -> int:
    """How many CAR bytes an import may read for a blob of at most ``max_blob_size`` bytes.

    A kubo DAG adds well under 1% to the file (14 bytes per 262,144-byte leaf, about
    48 bytes per link, about 40 bytes of CAR framing per block); the margin is generous.
    """
    return max_blob_size + max_blob_size // 64 + (1 << 20)


def encode_header(roots: list[BlockRef]) -> bytes:
    """The length-prefixed CARv1 header naming ``roots``."""
    header = dag_cbor.encode({"roots": [CID.decode(root.binary()) for root in roots], "version": 1})
    return varint.encode(len(header)) + header


def write_car(out: BinaryIO, roots: list[BlockRef], blocks: Iterable[tuple[BlockRef, bytes]]) -> int:
    """Write a CARv1 of ``blocks`` under ``roots`` to ``out``; return the bytes written."""
    written = out.write(encode_header(roots)) or 0
    count = 0
    for ref, block in blocks:
        cid = ref.binary()
        section = varint.encode(len(cid) + len(block)) + cid
        written += (out.write(section) or 0) + (out.write(block) or 0)
        count += 1
    logger.debug("wrote CAR of %d blocks, %d bytes, roots %s", count, written, [str(r) for r in roots])
    return written


def _read_varint(stream: Readable, what: str) -> int | None:
    """Read an unsigned varint; ``None`` at a clean end of stream."""
    value = 0
    shift = 0
    for index in range(10):
        byte = stream.read(1)
        if not byte:
            if index == 0:
                return None
            raise CarFormatError(f"CAR ends inside the length of a {what}")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    raise CarFormatError(f"CAR {what} length is not a valid varint")


def _read_exact(stream: Readable, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise CarFormatError(f"CAR is truncated: {what} needs {size} bytes, got {len(data)}")
    return data


class CarReader:
    """Read a CARv1 section by section; every block is checked against its CID.

    Parameters
    ----------
    stream:
        The archive, positioned at its start.
    limit:
        Refuse the archive once more than this many bytes have been read (``None``: no limit).

    Raises
    ------
    CarFormatError
        If the header or a section is malformed, the version is not 1, or the limit is passed.
    """

    def __init__(self, stream: Readable, *, limit: int | None = None) -> None:
        self._stream = stream
        self._limit = limit
        self.bytes_read = 0
        #: For each block read so far (by multihash), the blocks it links to.
        self.links: dict[bytes, list[BlockRef]] = {}
        self.roots = self._read_header()

    def _count(self, n: int) -> None:
        self.bytes_read += n
        if self._limit is not None and self.bytes_read > self._limit:
            raise CarFormatError(f"CAR is larger than the {self._limit}-byte limit for importing it")

    def _read_header(self) -> list[BlockRef]:
        length = _read_varint(self._stream, "header")
        if length is None:
            raise CarFormatError("empty file: not a CAR")
        if length == 0 or length > MAX_HEADER_SIZE:
            raise CarFormatError(f"CAR header length {length} is out of range")
        raw = _read_exact(self._stream, length, "the header")
        self._count(len(varint.encode(length)) + length)
        try:
            header = dag_cbor.decode(raw)
        except Exception as err:  # dag_cbor raises several error types of its own
            raise CarFormatError(f"CAR header is not DAG-CBOR: {err}") from err
        if not isinstance(header, dict):
            raise CarFormatError("CAR header is not a map")
        version = header.get("version")
        if version != 1:
            hint = " (CARv2: export it as CARv1, e.g. `ipfs dag export`)" if version == 2 else ""
            raise CarFormatError(f"CAR version {version!r} is not supported{hint}")
        roots = header.get("roots")
        if not isinstance(roots, list):
            raise CarFormatError("CAR header roots is not a list")
        refs: list[BlockRef] = []
        for root in roots:
            if not isinstance(root, CID):
                raise CarFormatError(f"CAR header root {root!r} is not a CID")
            try:
                refs.append(parse_cid(bytes(root)))
            except CidFormatError as err:
                raise CarFormatError(f"CAR root is not a UnixFS CID: {err}") from err
        return refs

    def blocks(self) -> Iterator[tuple[BlockRef, bytes]]:
        """Yield ``(ref, block)`` for each section, after checking the block against its CID.

        Raises
        ------
        CarFormatError
            On a malformed or truncated section.
        IntegrityError
            If a block does not hash to its CID (naming the first root and the block).
        """
        first_root = str(self.roots[0]) if self.roots else "CAR"
        while True:
            length = _read_varint(self._stream, "section")
            if length is None:
                return
            if length == 0 or length > MAX_SECTION_SIZE:
                raise CarFormatError(f"CAR section length {length} is out of range")
            self._count(len(varint.encode(length)) + length)
            section = _read_exact(self._stream, length, "a section")
            try:
                ref, start = read_binary_cid(section)
            except CidFormatError as err:
                raise CarFormatError(f"CAR section does not start with a usable CID: {err}") from err
            block = section[start:]
            check_block(ref, block, first_root)
            children: list[BlockRef] = []
            if ref.codec == DAG_PB:
                try:
                    children = [read_binary_cid(link.hash)[0] for link in decode_node(block).links]
                except (DecodeError, CidFormatError) as err:
                    raise IntegrityError(first_root, str(ref), f"malformed dag-pb node: {err}") from err
            self.links[ref.multihash] = children
            yield ref, block

    def missing_under(self, root: BlockRef) -> BlockRef | None:
        """After :meth:`blocks` is exhausted: the first block of ``root``'s DAG the archive lacks."""
        stack = [root]
        seen: set[bytes] = set()
        while stack:
            ref = stack.pop()
            if ref.multihash in seen:
                continue
            seen.add(ref.multihash)
            if ref.multihash not in self.links:
                return ref
            stack.extend(self.links[ref.multihash])
        return None

    def check_complete(self) -> None:
        """After :meth:`blocks` is exhausted: raise unless every root's whole DAG was in the archive.

        Raises
        ------
        CarFormatError
            Naming the root and the first missing block.
        """
        for root in self.roots:
            missing = self.missing_under(root)
            if missing is not None:
                raise CarFormatError(f"CAR does not hold the whole DAG of its root {root}: block {missing} is missing")


__all__ = ["CarReader", "Readable", "car_import_limit", "encode_header", "write_car"]
