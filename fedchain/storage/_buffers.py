"""Read buffers used again once nobody refers to them: a verified read need not fault a fresh blob in.

A verified read (:meth:`DagStore.get_verified`) returns the blob in a buffer of its own. A new
``bytearray`` of a few megabytes is fresh memory: the kernel maps and zeroes it page by page as
it is first written, and on a virtual machine that costs about as much as hashing the bytes
(measured on a 2-core Xeon VM: 3.4 ms for a fresh 4 MB buffer, 3.3 ms to hash 4 MB). A reader
that reads many blobs of similar sizes (the audit) gets most of that back by filling buffers it
filled before.

:func:`reading_into` makes a :class:`BufferPool` the source of the buffers that verified reads
on the calling thread (or task: it is a context variable) fill. Nothing changes for the caller:

- a buffer is taken for a read only if nothing but the pool refers to it, neither the caller
  that got it from an earlier read nor any view of it (a ``memoryview``, a numpy array over it:
  each holds a reference), so a buffer the caller still holds is never written again; CPython's
  reference counts say so exactly, and on any other Python the pool never takes a buffer back;
- a read fills every byte of the buffer it returns (the reader checks that it did), so nothing
  of an earlier blob is ever returned; a read that fails returns nothing;
- the pool keeps at most ``keep`` buffers; their memory is freed when the pool and every holder
  have let go of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

#: Extra capacity a new pooled buffer gets, so that later blobs a little larger (a longer header) fit it.
SLACK = 1 << 16
#: Smaller reads get buffers of their own (their pages cost little, and they would crowd out the large ones).
MIN_POOLED = 1 << 20

_POOL: contextvars.ContextVar[BufferPool | None] = contextvars.ContextVar("fedchain_read_buffers", default=None)
_CPYTHON = sys.implementation.name == "cpython"


class BufferPool:
    """Buffers for verified reads, each used again once nothing but the pool refers to it.

    Parameters
    ----------
    keep:
        The most buffers the pool holds (beyond them, reads get buffers of their own).
    """

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"a buffer pool keeps at least one buffer, not {keep}")
        self._keep = keep
        self._buffers: list[bytearray] = []
        self._lock = threading.Lock()
        self.reused = 0
        """How many reads were given a buffer used before (for tests and benchmarks)."""

    def take(self, size: int) -> bytearray:
        """A buffer of exactly ``size`` bytes that nothing else refers to (its contents are whatever it last held)."""
        if size < MIN_POOLED:
            return bytearray(size)
        with self._lock:
            for index in range(len(self._buffers)):
                # the list's reference and getrefcount's own argument: nobody else holds it
                if _CPYTHON and sys.getrefcount(self._buffers[index]) == 2:
                    buf = self._buffers[index]
                    if size < buf.__alloc__() <= size + 2 * SLACK:
                        _resize(buf, size)
                        self.reused += 1
                        return buf
                    del buf
            buf = bytearray(size + SLACK)
            del buf[size:]  # a minor shrink keeps the allocation: later blobs up to SLACK larger fit it
            if len(self._buffers) < self._keep:
                self._buffers.append(buf)
            elif _CPYTHON:
                # make room for it in place of a buffer nobody holds and that did not fit
                for index in range(len(self._buffers)):
                    if sys.getrefcount(self._buffers[index]) == 2:
                        self._buffers[index] = buf
                        break
            return buf


def _resize(buf: bytearray, size: int) -> None:
    """Make ``buf`` exactly ``size`` bytes long within its allocation (no new memory, nothing copied)."""
    if len(buf) > size:
        del buf[size:]
    elif len(buf) < size:
        buf.extend(bytes(size - len(buf)))


@contextlib.contextmanager
def reading_into(pool: BufferPool) -> Iterator[None]:
    """Verified reads in this context (this thread or task) fill buffers of ``pool``."""
    token = _POOL.set(pool)
    try:
        yield
    finally:
        _POOL.reset(token)


def new_buffer(size: int) -> bytearray:
    """The buffer a verified read of ``size`` bytes fills: the current pool's, or a new one."""
    pool = _POOL.get()
    return pool.take(size) if pool is not None else bytearray(size)


__all__ = ["BufferPool", "new_buffer", "reading_into"]
