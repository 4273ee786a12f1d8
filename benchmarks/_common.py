"""What the benchmark parts share: the machine, chains, deterministic keys, timing and memory helpers, targets.

Everything here measures through what fedchain is given (a chain, a store, a task); nothing
reaches into a fedchain module to replace a name.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import logging
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar

import numpy as np

from fedchain.chain import Chain, EmbeddedChain, Signer, connect
from fedchain.errors import FedchainError
from fedchain.storage import BlobStore
from fedchain.types import Cid

logger = logging.getLogger(__name__)

MB = 1024 * 1024

#: The chains a part can run on.
CHAINS = ("embedded", "anvil")


def signer(label: str) -> Signer:
    """A key derived from ``label``: the same label gives the same account (hence the same digests)."""
    return Signer.from_key(hashlib.sha256(f"fedchain bench {label}".encode()).digest(), label)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def time_of(fn: Callable[[], object], repeats: int, *, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` by ``clock`` (wall by default; ``time.process_time`` for
    the CPU of every thread), after one warm-up call (first-touch page faults)."""
    fn()
    times = []
    for _ in range(repeats):
        started = clock()
        fn()
        times.append(clock() - started)
    return median(times)


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, *, faults: dict[str, float] | None = None
) -> dict[str, float]:
    """Median seconds of each function, the functions run in turn (so a busy spell of the machine hits all alike).

    With ``faults``, it is filled with each function's median minor page faults a call (the
    process's, every thread's): a call that writes fresh memory pays the kernel for every page
    it first touches, and whether ``malloc`` hands a large array fresh pages or ones used before
    depends on what the process allocated and freed before, so the same code can take one time
    or another with the same arguments.
    """
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    counts: dict[str, list[int]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
            counts[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    if faults is not None:
        faults.update({name: median(c) for name, c in counts.items()})
    return {name: median(t) for name, t in times.items()}


def anvil_missing() -> str | None:
    """None if anvil can be found, else why not."""
    from fedchain.chain.anvil import find_anvil

    try:
        find_anvil(None)
    except FedchainError as err:
        return str(err)
    return None


class BenchCell(Protocol):
    """A cell of a benchmark's grid: what :func:`measure_cells` reads of it."""

    @property
    def chain(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def rounds(self) -> int: ...


CellT = TypeVar("CellT", bound=BenchCell)


def measure_cells(
    part: str, cells: Iterable[CellT], measure: Callable[[CellT], dict[str, Any]]
) -> list[dict[str, Any]]:
    """``measure`` of each cell in turn, progress and each cell's figures on stderr; an anvil cell without anvil is
    reported skipped, with why."""
    out: list[dict[str, Any]] = []
    for cell in cells:
        if cell.chain == "anvil" and (why := anvil_missing()):
            out.append({"label": cell.label, "skipped": why})
            continue
        print(f"{part}: {cell.label}, {cell.rounds} rounds", file=sys.stderr, flush=True)
        out.append(measure(cell))
        print(f"{part}: {cell.label} done: {json.dumps(out[-1], default=str)}", file=sys.stderr, flush=True)
    return out


@contextlib.contextmanager
def open_chain(kind: str) -> Iterator[Chain]:
    """An empty chain of ``kind`` (``embedded`` or ``anvil``), closed (and the node stopped) after."""
    if kind == "embedded":
        chain: Chain = EmbeddedChain()
        try:
            yield chain
        finally:
            chain.close()
        return
    from fedchain.chain.anvil import AnvilNode

    with AnvilNode() as node:
        chain = connect(node.url)
        try:
            yield chain
        finally:
            chain.close()


def chain_label(kind: str) -> str:
    return "eth-tester" if kind == "embedded" else kind


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux: ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's peak RSS since start or the last :func:`reset_peak_rss`."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cache_sizes() -> dict[str, int]:
    """The data caches of CPU 0 by level (``L1d``, ``L2``, ``L3``), in bytes, from sysfs (empty if unknown)."""
    out: dict[str, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            try:
                with open(f"{base}/{entry}/type") as f:
                    kind = f.read().strip()
                with open(f"{base}/{entry}/level") as f:
                    level = f.read().strip()
                with open(f"{base}/{entry}/size") as f:
                    size = f.read().strip()
            except OSError:
                continue
            if kind == "Instruction":
                continue
            unit = {"K": 1024, "M": MB}.get(size[-1:], 1)
            out[f"L{level}{'d' if level == '1' else ''}"] = int(size.rstrip("KM")) * unit
    return out


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "caches": cache_sizes(),
        "memory_gb": round(mem / 1e9, 1),
        "load_1min": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------- a store that times itself


class TimedStore:
    """A :class:`~fedchain.storage.BlobStore` that passes every call to ``inner`` and keeps its seconds and bytes.

    fedchain receives its store, so this is how the benchmarks see the store's share of a
    round and how many bytes a reader fetched (each verified read hashes every byte once).
    """

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.bytes_read = 0
        self.bytes_written = 0
        self._lock = threading.Lock()  # readers may call from several threads

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - started

    def _read(self, n: int) -> None:
        with self._lock:
            self.bytes_read += n

    @property
    def location(self) -> str:
        return self.inner.location

    @property
    def max_blob_size(self) -> int:
        return self.inner.max_blob_size

    @property
    def concurrent_reads(self) -> bool:
        return self.inner.concurrent_reads

    def put(self, data: bytes, *, version: int = 0) -> Cid:
        with self._timed():
            self.bytes_written += len(data)
            return self.inner.put(data, version=version)

    def put_stream(self, stream: BinaryIO, *, version: int = 0) -> Cid:
        with self._timed():
            return self.inner.put_stream(stream, version=version)

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        with self._timed():
            data = self.inner.get(cid, max_size=max_size)
            self._read(len(data))
            return data

    def get_verified(
        self, cid: str, sha256: bytes, *, max_size: int | None = None, check_cid: bool = False
    ) -> bytearray:
        with self._timed():
            data = self.inner.get_verified(cid, sha256, max_size=max_size, check_cid=check_cid)
            self._read(len(data))
            return data

    def get_to(self, cid: str, out: BinaryIO, *, max_size: int | None = None) -> int:
        with self._timed():
            n = self.inner.get_to(cid, out, max_size=max_size)
            self._read(n)
            return n

    def size(self, cid: str) -> int:
        return self.inner.size(cid)

    def has(self, cid: str) -> bool:
        return self.inner.has(cid)

    def pin(self, cid: str) -> None:
        with self._timed():
            self.inner.pin(cid)

    def unpin(self, cid: str) -> None:
        self.inner.unpin(cid)

    def export_car(self, cid: str, out: BinaryIO) -> int:
        return self.inner.export_car(cid, out)

    def import_car(self, stream: BinaryIO) -> list[Cid]:
        return self.inner.import_car(stream)

    def close(self) -> None:
        self.inner.close()


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Verdict:
    """One figure against its target."""

    figure: str
    measured: float | None
    op: str
    bound: float
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.bound if self.op == "<=" else self.measured >= self.bound

    def to_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "measured": self.measured,
            "target": f"{self.op} {self.bound:g}",
            "met": self.met,
            "note": self.note,
        }


def fmt_met(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def part_main(
    doc: str | None,
    run: Callable[[bool], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    argv: list[str] | None = None,
    *,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    special: Callable[[argparse.Namespace], int | None] | None = None,
) -> int:
    """``python -m benchmarks.<part> [--quick] [--json]``: run one part and print its table or JSON.

    ``extra`` adds a part's own arguments; ``special`` handles them first (its int return ends the run).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if special is not None and (code := special(args)) is not None:
        return code
    result = run(args.quick)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0
