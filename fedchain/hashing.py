"""The one hash: sha256 of a blob's bytes, as ``sha256sum`` prints it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import BinaryIO

from fedchain.errors import DigestFormatError
from fedchain.types import Digest

DIGEST_SIZE = 32
_READ_SIZE = 1 << 20


def sha256(data: bytes | bytearray | memoryview) -> Digest:
    """Return the sha256 digest of ``data``."""
    return Digest(hashlib.sha256(data).digest())


def sha256_chunks(chunks: Iterable[bytes]) -> Digest:
    """Return the sha256 digest of the concatenation of ``chunks`` without joining them."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return Digest(h.digest())


def sha256_file(stream: BinaryIO) -> Digest:
    """Return the sha256 digest of everything left in ``stream``, read in bounded pieces."""
    h = hashlib.sha256()
    while chunk := stream.read(_READ_SIZE):
        h.update(chunk)
    return Digest(h.digest())


def to_hex(digest: bytes) -> str:
    """Render a digest as ``0x`` + 64 lowercase hex digits (the form the chain shows)."""
    return "0x" + bytes(digest).hex()


def short(digest: bytes) -> str:
    """A short human form of a digest for reports: ``0x`` + the first 10 hex digits."""
    return "0x" + bytes(digest).hex()[:10]


def parse_digest(text: str | bytes) -> Digest:
    """Parse a digest given as 32 bytes or as 64 hex digits with or without ``0x``.

    Raises
    ------
    DigestFormatError
        If ``text`` is not exactly 32 bytes of digest.
    """
    if isinstance(text, (bytes, bytearray)):
        if len(text) != DIGEST_SIZE:
            raise DigestFormatError(repr(text), f"expected {DIGEST_SIZE} bytes, got {len(text)}")
        return Digest(bytes(text))
    s = text[2:] if text.startswith(("0x", "0X")) else text
    if len(s) != 2 * DIGEST_SIZE:
        raise DigestFormatError(text, f"expected {2 * DIGEST_SIZE} hex digits, got {len(s)}")
    try:
        return Digest(bytes.fromhex(s))
    except ValueError as err:
        raise DigestFormatError(text, "not hexadecimal") from err


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 63-bit seed derived from ``seed`` and a purpose, e.g. ``derive_seed(7, "train", 3, "st-mary")``.

    Derivation is sha256 of the parts joined by ``\\x1f``, so seeds for different purposes are
    unrelated and the same on every machine.
    """
    text = "\x1f".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def participant_seed(seed: int, round_id: int, participant: str) -> int:
    """The seed of ``participant``'s local training in ``round_id``: ``derive_seed(seed, "train", round_id, participant)``.

    The participant service passes it to the task's ``train``, and so does the tasks' plain FedAvg
    baseline, so a federation without a ledger trains identically.
    """
    return derive_seed(seed, "train", round_id, participant)


__all__ = [
    "DIGEST_SIZE",
    "derive_seed",
    "parse_digest",
    "participant_seed",
    "sha256",
    "sha256_chunks",
    "sha256_file",
    "short",
    "to_hex",
]
