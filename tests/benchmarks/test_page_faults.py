"""The benchmarks' page-fault counts say which calls wrote fresh memory (what explains a noisy aggregation figure)."""

from __future__ import annotations

import mmap

from benchmarks._common import interleaved

PAGES = 2048  # 8 MiB of 4 KiB pages


def _fresh() -> None:
    """Write one byte in each page of a new anonymous mapping: every page is a first touch."""
    with mmap.mmap(-1, PAGES * mmap.PAGESIZE) as mapping:
        if hasattr(mmap, "MADV_NOHUGEPAGE"):  # a kernel with transparent huge pages "always" would fault 4 times
            mapping.madvise(mmap.MADV_NOHUGEPAGE)
        for page in range(PAGES):
            mapping[page * mmap.PAGESIZE] = 1


def _reused(buffer: bytearray = bytearray(PAGES * mmap.PAGESIZE)) -> None:  # noqa: B008 - one buffer for every call
    buffer[:: mmap.PAGESIZE] = b"\x01" * PAGES


def test_a_call_that_writes_fresh_pages_counts_them_and_one_that_reuses_its_memory_does_not() -> None:
    faults: dict[str, float] = {}
    seconds = interleaved({"fresh": _fresh, "reused": _reused}, 3, faults=faults)
    assert set(seconds) == set(faults) == {"fresh", "reused"}
    assert faults["fresh"] >= PAGES * 0.9
    assert faults["reused"] < PAGES * 0.05


def test_without_the_faults_argument_only_seconds_come_back() -> None:
    assert set(interleaved({"reused": _reused}, 1)) == {"reused"}
