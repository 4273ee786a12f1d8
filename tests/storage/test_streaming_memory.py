"""Adding and reading a large blob holds a few chunks in memory, not the blob.

The blob here is 64 MiB, generated on the fly; memory is measured with tracemalloc (the
Python heap, where a blob would have to live). ``scripts/bench_store.py`` reports the
process's peak RSS for a 200 MB file.
"""

from __future__ import annotations

import io
import random
import tracemalloc
from pathlib import Path

import pytest

from fedchain.storage import CHUNK_SIZE, LocalBlockStore, cid_of_stream

SIZE = 64 << 20
BOUND = 4 * CHUNK_SIZE + (256 << 10)  # a few chunks plus slack


class Generated(io.RawIOBase):
    """``SIZE`` pseudo-random bytes, made as they are read."""

    def __init__(self) -> None:
        self._rng = random.Random(1)
        self._left = SIZE

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self._left, 1 << 16)
        buf[:n] = self._rng.randbytes(n)
        self._left -= n
        return n


class Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


@pytest.mark.slow
def test_adding_and_reading_64_mib_stays_within_a_few_chunks(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "store", max_blob_size=SIZE)
    tracemalloc.start()
    try:
        cid = store.put_stream(Generated())  # type: ignore[arg-type]
        _, add_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        written = store.get_to(cid, Discard())  # type: ignore[arg-type]
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == SIZE
    assert cid == cid_of_stream(Generated())  # type: ignore[arg-type]
    print(f"add peak {add_peak} bytes, get peak {get_peak} bytes")
    assert add_peak < BOUND, f"add peaked at {add_peak} bytes"
    assert get_peak < BOUND, f"get peaked at {get_peak} bytes"
