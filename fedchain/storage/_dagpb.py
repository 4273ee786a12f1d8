"""dag-pb nodes and UnixFS file data, encoded and decoded by hand.

Written by hand because the two messages are tiny and no maintained Python library
encodes them (a protobuf runtime plus generated code would be a heavy dependency for
five fields). The byte layout is the one kubo writes, checked against an independent
implementation (``ipfs_cid``) in the tests:

- ``PBNode``: ``Links`` (field 2, repeated) come *before* ``Data`` (field 1), as the
  dag-pb spec requires; each ``PBLink`` is ``Hash`` (1), ``Name`` (2, always present,
  empty for file chunks) and ``Tsize`` (3, the link target's cumulative block size).
- UnixFS ``Data``: ``Type`` (1, File = 2), ``Data`` (2, absent when empty),
  ``filesize`` (3, present even for an empty file) and ``blocksizes`` (4, one unpacked
  varint per child: the file bytes under that child).

Decoding is strict where a lax reader would let a forged block through (unknown
fields, wrong wire types, links after data) and bounded (blocks are size-limited
before they get here).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

#: UnixFS ``Data.Type`` values.
UNIXFS_RAW = 0
UNIXFS_DIRECTORY = 1
UNIXFS_FILE = 2
UNIXFS_METADATA = 3
UNIXFS_SYMLINK = 4
UNIXFS_HAMT_SHARD = 5
UNIXFS_TYPE_NAMES = {0: "Raw", 1: "Directory", 2: "File", 3: "Metadata", 4: "Symlink", 5: "HAMTShard"}


class DecodeError(ValueError):
    """A block is not a well-formed dag-pb node or UnixFS data (internal; callers wrap it)."""


def uvarint(n: int) -> bytes:
    """Encode ``n`` as an unsigned protobuf (LEB128) varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(tag: int, payload_len: int) -> bytes:
    return bytes((tag << 3 | 2,)) + uvarint(payload_len)


@functools.lru_cache(maxsize=64)
def leaf_envelope(size: int) -> tuple[bytes, bytes]:
    """The bytes around a chunk of ``size`` bytes in a kubo leaf node (``raw-leaves=false``).

    The leaf block is ``prefix + chunk + suffix``; returning the two halves lets the
    importer hash and write a leaf without copying the chunk.
    """
    if size == 0:  # kubo's empty file: Type=File, no Data field, filesize=0
        inner = b"\x08\x02\x18\x00"
        return _len_field(1, len(inner)) + inner, b""
    suffix = b"\x18" + uvarint(size)
    head = b"\x08\x02" + _len_field(2, size)
    return _len_field(1, len(head) + size + len(suffix)) + head, suffix


@dataclass(frozen=True, slots=True)
class Link:
    """A link from a file node to a child: binary CID, cumulative block size, file bytes under it."""

    cid: bytes
    tsize: int
    filesize: int


def file_node(links: Sequence[Link]) -> bytes:
    """Encode an internal UnixFS file node over ``links`` (no inline data), as kubo does."""
    parts: list[bytes] = []
    for link in links:
        body = _len_field(1, len(link.cid)) + link.cid + b"\x12\x00\x18" + uvarint(link.tsize)
        parts.append(_len_field(2, len(body)))
        parts.append(body)
    unixfs = b"\x08\x02\x18" + uvarint(sum(link.filesize for link in links))
    unixfs += b"".join(b"\x20" + uvarint(link.filesize) for link in links)
    parts.append(_len_field(1, len(unixfs)))
    parts.append(unixfs)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class PBLink:
    """A decoded dag-pb link: the binary CID, and the name and Tsize if present."""

    hash: memoryview
    name: bytes | None
    tsize: int | None


@dataclass(slots=True)
class PBNode:
    """A decoded dag-pb node; ``data`` is a view into the block, ``None`` if absent."""

    links: list[PBLink] = field(default_factory=list)
    data: memoryview | None = None


@dataclass(slots=True)
class UnixFSData:
    """Decoded UnixFS ``Data``; ``data`` is a view into the block."""

    type: int
    data: memoryview | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)


def _varint_at(view: memoryview, pos: int, stop: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= stop:
            raise DecodeError("truncated varint")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise DecodeError("varint too long")


def _fields(view: memoryview, start: int, stop: int) -> list[tuple[int, int, int | memoryview]]:
    """Split a protobuf message into ``(field number, wire type, value)`` triples."""
    out: list[tuple[int, int, int | memoryview]] = []
    pos = start
    while pos < stop:
        key, pos = _varint_at(view, pos, stop)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire == 0:
            value, pos = _varint_at(view, pos, stop)
            out.append((number, wire, value))
        elif wire == 2:
            length, pos = _varint_at(view, pos, stop)
            if pos + length > stop:
                raise DecodeError(f"field {number} runs past the end of its message")
            out.append((number, wire, view[pos : pos + length]))
            pos += length
        else:
            raise DecodeError(f"unsupported wire type {wire} for field {number}")
    return out


def decode_node(block: bytes | memoryview) -> PBNode:
    """Decode a dag-pb block.

    Raises
    ------
    DecodeError
        If the block is not canonical dag-pb (unknown fields, links after data, a link
        without a hash, wrong wire types).
    """
    view = memoryview(block)
    node = PBNode()
    for number, wire, value in _fields(view, 0, len(view)):
        if number == 2 and wire == 2 and isinstance(value, memoryview):
            if node.data is not None:
                raise DecodeError("link after the data field")
            node.links.append(_decode_link(value))
        elif number == 1 and wire == 2 and isinstance(value, memoryview):
            if node.data is not None:
                raise DecodeError("duplicate data field")
            node.data = value
        else:
            raise DecodeError(f"unexpected field {number} (wire type {wire}) in a dag-pb node")
    return node


def _decode_link(view: memoryview) -> PBLink:
    hash_: memoryview | None = None
    name: bytes | None = None
    tsize: int | None = None
    last = 0
    for number, wire, value in _fields(view, 0, len(view)):
        if number <= last:
            raise DecodeError("link fields out of order or repeated")
        last = number
        if number == 1 and wire == 2 and isinstance(value, memoryview):
            hash_ = value
        elif number == 2 and wire == 2 and isinstance(value, memoryview):
            name = bytes(value)
        elif number == 3 and wire == 0 and isinstance(value, int):
            tsize = value
        else:
            raise DecodeError(f"unexpected field {number} (wire type {wire}) in a dag-pb link")
    if hash_ is None:
        raise DecodeError("link without a hash")
    return PBLink(hash_, name, tsize)


def decode_unixfs(data: memoryview) -> UnixFSData:
    """Decode UnixFS ``Data``; fields other than the four a file uses are skipped.

    Raises
    ------
    DecodeError
        If a field has the wrong wire type or ``Type`` is missing.
    """
    type_: int | None = None
    out = UnixFSData(type=-1)
    for number, _wire, value in _fields(data, 0, len(data)):
        if number == 1:
            if not isinstance(value, int):
                raise DecodeError("UnixFS Type is not a varint")
            type_ = value
        elif number == 2:
            if not isinstance(value, memoryview):
                raise DecodeError("UnixFS Data is not bytes")
            out.data = value
        elif number == 3:
            if not isinstance(value, int):
                raise DecodeError("UnixFS filesize is not a varint")
            out.filesize = value
        elif number == 4:
            if isinstance(value, int):
                out.blocksizes.append(value)
            else:  # packed encoding; kubo writes unpacked, but both are valid protobuf
                pos = 0
                while pos < len(value):
                    size, pos = _varint_at(value, pos, len(value))
                    out.blocksizes.append(size)
        # hashType (5), fanout (6), mode (7), mtime (8) do not affect a file's bytes
    if type_ is None:
        raise DecodeError("UnixFS data without a Type")
    out.type = type_
    return out


__all__ = [
    "UNIXFS_FILE",
    "UNIXFS_RAW",
    "UNIXFS_TYPE_NAMES",
    "DecodeError",
    "Link",
    "PBLink",
    "PBNode",
    "UnixFSData",
    "decode_node",
    "decode_unixfs",
    "file_node",
    "leaf_envelope",
    "uvarint",
]
