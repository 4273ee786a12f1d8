#!/usr/bin/env python3
"""Benchmark the embedded store: add and get throughput for one blob, next to ``sha256sum``.

    python scripts/bench_store.py            # a 200 MB random file
    python scripts/bench_store.py --size 1000000000 --runs 1

Everything runs in one go on the same file: ``sha256sum FILE`` (the coreutils binary,
what an auditor runs), ``cid_of`` (import without storing), ``put_stream`` into a fresh
store directory, and ``get_to`` into /dev/null and into a file. The file is read once
first so every step starts from the page cache. Blocks are not fsync'ed (the store's
default). The peak memory of adding is measured in a child process that only imports
the store and adds the file: its peak RSS (VmHWM) next to its RSS just before the add.
MB is 10**6 bytes. Prints a small table; ``--json`` prints the numbers instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedchain.storage import LocalBlockStore, cid_of_stream  # noqa: E402

MB = 1_000_000

CHILD = """
import os, sys, time
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
from fedchain.storage import LocalBlockStore
store = LocalBlockStore(sys.argv[2], max_blob_size=1 << 40)
before = status("VmRSS")
with open(sys.argv[1], "rb") as f:
    cid = store.put_stream(f)
print(cid, before, status("VmHWM"))
"""


def timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    """Best wall time of ``runs`` calls (seconds) and the last result."""
    times = []
    result: object = None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200 * MB, help="blob size in bytes (default: 200 MB)")
    parser.add_argument("--runs", type=int, default=3, help="repeat each timing, keep the best (default: 3)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="fedchain-bench-", dir=args.dir))
    try:
        blob = scratch / "blob.bin"
        with blob.open("wb") as f:
            left = args.size
            while left:
                n = min(left, 16 << 20)
                f.write(os.urandom(n))
                left -= n
        with blob.open("rb") as f:  # warm the page cache
            while f.read(16 << 20):
                pass

        sha_s, _ = timed(lambda: subprocess.run(["sha256sum", str(blob)], check=True, capture_output=True), args.runs)

        def cid_only() -> object:
            with blob.open("rb") as f:
                return cid_of_stream(f)

        cid_s, cid = timed(cid_only, args.runs)

        stores: list[Path] = []

        def add() -> object:
            where = scratch / f"store-{len(stores)}"
            stores.append(where)
            with blob.open("rb") as f:
                return LocalBlockStore(where, max_blob_size=1 << 40).put_stream(f)

        add_s, added = timed(add, args.runs)
        assert added == cid, (added, cid)
        store = LocalBlockStore(stores[-1], max_blob_size=1 << 40)

        def get_null() -> object:
            with open(os.devnull, "wb") as out:
                return store.get_to(str(cid), out)

        def get_file() -> object:
            with (scratch / "out.bin").open("wb") as out:
                return store.get_to(str(cid), out)

        get_s, got = timed(get_null, args.runs)
        get_file_s, _ = timed(get_file, args.runs)
        assert got == args.size

        rss = []
        for i in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(blob), str(scratch / f"rss-store-{i}")],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).stdout.split()
            rss.append((int(out[1]), int(out[2])))
        before, peak = max(rss, key=lambda pair: pair[1] - pair[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    mbs = lambda seconds: args.size / MB / seconds  # noqa: E731
    figures = {
        "size_bytes": args.size,
        "runs": args.runs,
        "cid": str(cid),
        "sha256sum_MBps": round(mbs(sha_s), 1),
        "cid_only_MBps": round(mbs(cid_s), 1),
        "add_MBps": round(mbs(add_s), 1),
        "get_to_devnull_MBps": round(mbs(get_s), 1),
        "get_to_file_MBps": round(mbs(get_file_s), 1),
        "add_vs_sha256sum": round(sha_s / add_s, 2),
        "get_vs_sha256sum": round(sha_s / get_s, 2),
        "add_rss_before_bytes": before,
        "add_peak_rss_bytes": peak,
        "add_peak_rss_growth_bytes": peak - before,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"blob: {args.size / MB:.0f} MB random, {args.runs} run(s) each, best kept; CID {cid}")
    print(f"  sha256sum            {figures['sha256sum_MBps']:8.1f} MB/s")
    print(f"  cid only (no store)  {figures['cid_only_MBps']:8.1f} MB/s")
    print(f"  add (put_stream)     {figures['add_MBps']:8.1f} MB/s   {figures['add_vs_sha256sum']:.2f}x sha256sum")
    print(
        f"  get -> /dev/null     {figures['get_to_devnull_MBps']:8.1f} MB/s   {figures['get_vs_sha256sum']:.2f}x sha256sum"
    )
    print(f"  get -> file          {figures['get_to_file_MBps']:8.1f} MB/s")
    print(
        f"  add peak RSS         {peak / MB:8.1f} MB   ({before / MB:.1f} MB before the add, +{(peak - before) / MB:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
