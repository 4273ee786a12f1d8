"""CIDs inside the store: a light block reference, parsing, formatting and hash checks.

Text and binary CIDs are parsed and formatted with the ``multiformats`` library (CID,
multihash, multibase, varint). Inside the DAG code a block is named by a small
:class:`BlockRef` (version, codec, multihash bytes) instead of a ``multiformats.CID``,
because building one of those costs about 0.1 ms and a 1 GiB blob has 4,096 links;
the binary forms are simple enough to read directly (``0x12 0x20`` + 32 bytes for
CIDv0, ``varint(1) varint(codec) multihash`` for CIDv1).

The two text forms the store itself writes, a CIDv0 (base58btc of a sha2-256 multihash)
and a base32 CIDv1 (dag-pb or raw, sha2-256), are also parsed and formatted here
directly: through ``multiformats`` one parse plus one format costs about 0.4 ms, as much
as hashing a 100k-parameter update, and every verified read does both. Anything else
(other bases, other hashes, malformed text) goes to ``multiformats``, which also
produces the error messages; the tests check both paths agree.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from dataclasses import dataclass

from multiformats import CID, multihash, varint

from fedchain.errors import CidFormatError, IntegrityError
from fedchain.types import Cid

logger = logging.getLogger(__name__)

#: Multicodec codes the store understands.
DAG_PB = 0x70
RAW = 0x55
#: Multihash code and digest length of sha2-256, kubo's default hash.
SHA2_256 = 0x12
SHA2_256_LEN = 32

_CODEC_NAMES = {DAG_PB: "dag-pb", RAW: "raw"}


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block's name: CID version, content codec and full multihash (code + length + digest).

    Two refs with the same multihash name the same bytes; the store keys blocks by
    multihash alone, as kubo does, so a CIDv0 and a CIDv1 of the same block share it.
    """

    version: int
    codec: int
    multihash: bytes

    def binary(self) -> bytes:
        """The binary CID, as it appears in a dag-pb link and a CAR section."""
        if self.version == 0:
            return self.multihash
        return varint.encode(1) + varint.encode(self.codec) + self.multihash

    def text(self) -> Cid:
        """The string form: base58btc for CIDv0, base32 for CIDv1 (kubo's defaults)."""
        if len(self.multihash) == 34 and self.multihash[:2] == b"\x12\x20":
            if self.version == 0:
                return Cid(_b58encode(self.multihash))
            if self.codec in _CODEC_NAMES:
                return Cid("b" + base64.b32encode(self.binary()).decode("ascii").rstrip("=").lower())
        if self.version == 0:
            return Cid(str(CID("base58btc", 0, "dag-pb", self.multihash)))
        return Cid(CID("base32", 1, _CODEC_NAMES.get(self.codec, self.codec), self.multihash).encode("base32"))

    def with_version(self, version: int) -> BlockRef:
        """The same block under CID ``version`` (0 only for dag-pb + sha2-256)."""
        if version == self.version:
            return self
        if version == 0 and not (self.codec == DAG_PB and self.multihash[:2] == b"\x12\x20"):
            raise CidFormatError(self.text(), "only dag-pb sha2-256 blocks have a CIDv0")
        if version not in (0, 1):
            raise CidFormatError(self.text(), f"unknown CID version {version}")
        return BlockRef(version, self.codec, self.multihash)

    def __str__(self) -> str:
        return self.text()


def sha256_ref(digest: bytes, version: int = 0, codec: int = DAG_PB) -> BlockRef:
    """The ref of a block whose sha2-256 digest is ``digest``."""
    return BlockRef(version, codec, b"\x12\x20" + digest)


def parse_cid(value: str | bytes | BlockRef) -> BlockRef:
    """Parse a CID given as text (any multibase), as binary, or pass a ref through.

    Raises
    ------
    CidFormatError
        If ``value`` is not a CID, or names a codec other than dag-pb or raw.
    """
    if isinstance(value, BlockRef):
        return value
    if isinstance(value, str):
        fast = _parse_common_text(value)
        if fast is not None:
            return fast
    try:
        cid = CID.decode(value.strip() if isinstance(value, str) else bytes(value))
    except (ValueError, KeyError, TypeError) as err:
        shown = value if isinstance(value, str) else bytes(value).hex()
        raise CidFormatError(shown, str(err) or type(err).__name__) from err
    codec = cid.codec.code
    if codec not in _CODEC_NAMES:
        raise CidFormatError(str(cid), f"codec {cid.codec.name} is not a UnixFS codec (dag-pb or raw)")
    return BlockRef(cid.version, codec, bytes(cid.digest))


_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_B32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")


@functools.lru_cache(maxsize=4096)
def _b58encode(data: bytes) -> str:
    """base58btc of ``data`` (which has no leading zero bytes: a sha2-256 multihash starts 0x12); remembered, as a read names its root several times."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, digit = divmod(n, 58)
        out.append(_B58_ALPHABET[digit])
    return "".join(reversed(out))


def _parse_common_text(text: str) -> BlockRef | None:
    """The ref of a CIDv0 or base32 CIDv1 of a sha2-256 dag-pb/raw block, or ``None`` for anything else.

    ``None`` sends the text to ``multiformats``, the reference for every other form and
    for the error messages. Only an exact round trip is accepted here (the ref formats
    back to the same text), so this cannot accept a string ``multiformats`` would reject.
    """
    if len(text) == 46 and text.startswith("Qm"):
        n = 0
        for char in text:
            digit = _B58_INDEX.get(char)
            if digit is None:
                return None
            n = n * 58 + digit
        if n >> (8 * 34):
            return None
        ref = BlockRef(0, DAG_PB, n.to_bytes(34, "big"))
    elif len(text) == 59 and text[0] == "b" and _B32_CHARS.issuperset(text[1:]):
        raw = base64.b32decode(text[1:].upper() + "======")  # 58 characters: 6 of padding
        if len(raw) != 36 or raw[0] != 1 or raw[1] not in _CODEC_NAMES or raw[2:4] != b"\x12\x20":
            return None
        ref = BlockRef(1, raw[1], raw[2:])
    else:
        return None
    if ref.multihash[:2] != b"\x12\x20" or ref.text() != text:
        return None
    return ref


def read_binary_cid(buf: bytes | memoryview, start: int = 0, end: int | None = None) -> tuple[BlockRef, int]:
    """Read a binary CID from ``buf[start:end]``; return it and the offset just past it.

    Raises
    ------
    CidFormatError
        If the bytes are not a well-formed CIDv0 or CIDv1 with a dag-pb or raw codec.
    """
    stop = len(buf) if end is None else end
    view = memoryview(buf)
    if stop - start >= 34 and view[start] == 0x12 and view[start + 1] == 0x20:
        return BlockRef(0, DAG_PB, bytes(view[start : start + 34])), start + 34
    try:
        version, pos = _uvarint(view, start, stop)
        if version != 1:
            raise ValueError(f"CID version {version}")
        codec, pos = _uvarint(view, pos, stop)
        code, mh_pos = _uvarint(view, pos, stop)
        length, digest_pos = _uvarint(view, mh_pos, stop)
        if digest_pos + length > stop:
            raise ValueError("multihash digest runs past the end")
    except ValueError as err:
        raise CidFormatError(bytes(view[start:stop][:64]).hex(), str(err)) from err
    if codec not in _CODEC_NAMES:
        raise CidFormatError(bytes(view[start:stop][:64]).hex(), f"codec 0x{codec:x} is not dag-pb or raw")
    del code
    return BlockRef(1, codec, bytes(view[pos : digest_pos + length])), digest_pos + length


def _uvarint(view: memoryview, pos: int, stop: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint at ``pos``; at most 9 bytes, as multiformats requires."""
    value = 0
    shift = 0
    while True:
        if pos >= stop:
            raise ValueError("varint runs past the end")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 63:
            raise ValueError("varint longer than 9 bytes")


def block_key(ref: BlockRef) -> str:
    """The blockstore key of a block: unpadded RFC 4648 base32 of its multihash (kubo's flatfs key)."""
    return base64.b32encode(ref.multihash).decode("ascii").rstrip("=")


def check_block(ref: BlockRef, data: bytes | memoryview, root: str) -> None:
    """Check that ``data`` hashes to ``ref``'s multihash.

    Raises
    ------
    IntegrityError
        Naming the blob ``root`` and the block, if the bytes do not match or the hash
        function is one the store cannot compute.
    """
    mh = ref.multihash
    if mh[:2] == b"\x12\x20" and len(mh) == 34:
        if hashlib.sha256(data).digest() == mh[2:]:
            return
        raise IntegrityError(root, str(ref), "bytes do not hash to the block's CID (sha2-256)")
    try:
        code, digest = multihash.unwrap_raw(mh)
        ok = bool(multihash.digest(bytes(data), code, size=len(digest)) == mh)
    except (KeyError, ValueError, TypeError) as err:
        raise IntegrityError(root, str(ref), f"cannot verify multihash: {err}") from err
    if not ok:
        raise IntegrityError(root, str(ref), "bytes do not hash to the block's CID")


__all__ = [
    "DAG_PB",
    "RAW",
    "BlockRef",
    "block_key",
    "check_block",
    "parse_cid",
    "read_binary_cid",
    "sha256_ref",
]
