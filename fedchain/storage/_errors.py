"""The storage error that only a digest-verified read raises.

It lives here rather than in :mod:`fedchain.errors` only because that module belongs to
another part of the code base; it is a plain :class:`~fedchain.errors.IntegrityError`
subclass, so every handler of storage errors already handles it.
"""

from __future__ import annotations

from fedchain.errors import IntegrityError


class DigestMismatchError(IntegrityError):
    """A blob's bytes do not hash to the sha256 the caller expected (for example the ledger's).

    Parameters
    ----------
    cid:
        The blob read.
    expected, actual:
        The sha256 digest the caller gave, and that of the bytes the store holds under ``cid``.
    """

    def __init__(self, cid: str, expected: bytes, actual: bytes) -> None:
        self.expected = bytes(expected)
        self.actual = bytes(actual)
        super().__init__(cid, cid, f"the blob's bytes hash to sha256 0x{self.actual.hex()}, expected 0x{self.expected.hex()}")


__all__ = ["DigestMismatchError"]
