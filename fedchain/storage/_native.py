"""The embedded store's run of leaf reads in one C call (``_leaves.c``), where the install built it.

:meth:`LocalBlockStore.get_verified <fedchain.storage.LocalBlockStore>` reads a blob's leaf
blocks straight into one buffer. :func:`leaf_reader` gives the compiled reader, which makes the
system calls of a whole run of leaves (open, stat, ``readv``, close each) in one call without the
GIL, or ``None`` (the library was not built, this is not a POSIX system, or
``FEDCHAIN_KERNELS=numpy``): the leaves are then read one by one from Python, with the same
result. The reader decides nothing the Python path would not (see ``_leaves.c``).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedchain._native import built_library, turned_off

logger = logging.getLogger(__name__)

#: One leaf to read: its block's multihash, the envelope bytes before and after its data, and the data's size.
Leaf = tuple[bytes, bytes, bytes, int]


class LeafReader:
    """The compiled ``fc_read_leaves`` (and ``fc_leaf_path``, the block file names it reads)."""

    def __init__(self, read: Any, path: Any) -> None:
        self._read = read
        self._path = path

    def read(self, blocks: bytes, leaves: Sequence[Leaf], out: memoryview) -> int:
        """Read the leaves' data into ``out``, one after the other; return how many leading ones were read.

        ``blocks`` is the store's blocks directory (see :meth:`path`). A leaf counts as read only
        if its file is exactly its envelope and data, the envelope the given bytes; ``out`` must
        hold all the leaves' data (``ValueError`` otherwise).
        """
        count = len(leaves)
        if count == 0:
            return 0
        if sum(leaf[3] for leaf in leaves) > len(out):
            raise ValueError("the leaves hold more bytes than the buffer")
        multihashes = (ctypes.c_char_p * count)(*(leaf[0] for leaf in leaves))
        lengths = (ctypes.c_int64 * count)(*(len(leaf[0]) for leaf in leaves))
        heads = (ctypes.c_char_p * count)(*(leaf[1] for leaf in leaves))
        tails = (ctypes.c_char_p * count)(*(leaf[2] for leaf in leaves))
        head_lens = (ctypes.c_int64 * count)(*(len(leaf[1]) for leaf in leaves))
        tail_lens = (ctypes.c_int64 * count)(*(len(leaf[2]) for leaf in leaves))
        sizes = (ctypes.c_int64 * count)(*(leaf[3] for leaf in leaves))
        target = (ctypes.c_char * len(out)).from_buffer(out)  # an export of ``out`` until deleted
        try:
            return int(
                self._read(blocks, multihashes, lengths, heads, head_lens, tails, tail_lens, sizes, count, target)
            )
        finally:
            del target

    def path(self, blocks: bytes, multihash: bytes) -> bytes | None:
        """The file the reader reads for a block: ``<blocks>/<XY>/<KEY>.data`` (``None`` if that is too long)."""
        out = ctypes.create_string_buffer(4096)
        length = int(self._path(blocks, multihash, len(multihash), out, len(out)))
        return out.raw[:length] if length >= 0 else None


@functools.cache
def leaf_reader() -> LeafReader | None:
    """The compiled reader, loaded on first use; ``None`` when it is turned off, not built or not available here."""
    if turned_off():
        return None
    path = built_library(Path(__file__).parent, "_leaves")
    if path is None:
        logger.debug("the compiled leaf reader was not built with this install; leaves are read from Python")
        return None
    try:
        lib = ctypes.CDLL(str(path))
        available, read, name = lib.fc_read_leaves_available, lib.fc_read_leaves, lib.fc_leaf_path
    except (OSError, AttributeError) as err:
        logger.warning(
            "cannot load the compiled leaf reader %s (%s): reinstall fedchain; leaves are read from Python", path, err
        )
        return None
    available.argtypes, available.restype = (), ctypes.c_int64
    if not available():
        return None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    read.argtypes, read.restype = (ctypes.c_char_p, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, ptr), i64
    name.argtypes, name.restype = (ctypes.c_char_p, ctypes.c_char_p, i64, ptr, i64), i64
    return LeafReader(read, name)


__all__ = ["Leaf", "LeafReader", "leaf_reader"]
