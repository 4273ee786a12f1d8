"""Time fedchain's robust rules against Flower's implementations of the same rules, on the same arrays.

Usage: ``python benchmarks/robust.py [--quick] [--repeats N] [--ks 10,100]``

Every rule runs side by side with Flower's on the same in-memory float32 updates (a model of
P parameters in two tensors, base zero, server learning rate 1), interleaved, and the table
shows the median of the repeats in seconds and the ratio Flower / fedchain (>= 1: fedchain
is at least as fast). Flower's rules come in two generations:

- ``legacy``: ``flwr.server.strategy.aggregate`` (``aggregate_median``, ``aggregate_trimmed_avg``,
  ``aggregate_krum`` with its K*K loop of ``np.linalg.norm``);
- ``serverapp``: ``flwr.serverapp.strategy`` (``np.median(np.stack(...))``, ``trim_mean``, and
  ``compute_distances`` + ``select_multikrum``, a float32 BLAS Gram matrix whose rounding
  depends on the BLAS and its thread count), called on lightweight records that hand Flower
  the same numpy arrays, so no serialization is timed.

Flower's legacy Krum at K=100 (10,000 norms of P elements) is slow, so it runs once.
On a shared machine run it with OPENBLAS_NUM_THREADS=1: a multi-threaded OpenBLAS spinning
against other loads slows every matrix product (Flower's and fedchain's Krum) tenfold.
The machine may be shared: read the figures as the median of interleaved repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedchain.fl.robust import coordinate_median, multi_krum, trimmed_mean


class _Record:
    """What Flower's ``compute_distances`` and ``select_multikrum`` read of a record (no copies)."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.array_records = {"arrays": self}

    def to_numpy_ndarrays(self) -> list[np.ndarray]:
        return self.arrays

    def __getitem__(self, key: str) -> _Record:
        return self


def _updates(k: int, p: int, seed: int) -> tuple[dict[str, np.ndarray], list[tuple[str, int, dict[str, np.ndarray]]]]:
    rng = np.random.default_rng(seed)
    split = p * 3 // 4
    base = {"w": np.zeros(split, dtype=np.float32), "b": np.zeros(p - split, dtype=np.float32)}
    updates = []
    for i in range(k):
        scale = np.float32(0.01 * (1 + 0.05 * i))  # distinct scales: Krum's scores well apart
        delta = {name: (rng.standard_normal(a.size, dtype=np.float32) * scale) for name, a in base.items()}
        updates.append((f"0x{rng.integers(1 << 62):040x}", int(rng.integers(10, 1000)), delta))
    return base, updates


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _contenders(
    base: dict[str, np.ndarray], updates: list[Any], threads: int | None, trim: float, f: int, m: int
) -> list[tuple[str, Callable[[], Any], Callable[[], Any], Callable[[], Any]]]:
    """``(rule, fedchain's, Flower's legacy, Flower's serverapp)`` callables on the same arrays."""
    from flwr.server.strategy import aggregate as legacy
    from flwr.serverapp.strategy.fedtrimmedavg import trim_mean as new_trim_mean
    from flwr.serverapp.strategy.multikrum import select_multikrum

    results = [([d["b"], d["w"]], n) for _, n, d in sorted(updates)]
    layers = list(zip(*(arrays for arrays, _ in results), strict=True))
    records = [_Record(arrays) for arrays, _ in results]

    def new_multikrum(count: int) -> Any:
        chosen = select_multikrum(records, num_malicious_nodes=f, num_nodes_to_select=count)  # type: ignore[arg-type]
        picked = [(rec.arrays, results[records.index(rec)][1]) for rec in chosen]
        return legacy.aggregate(picked)

    th = threads
    return [
        (
            "median",
            lambda: coordinate_median(base, updates, threads=th),
            lambda: legacy.aggregate_median(results),
            lambda: [np.median(np.stack(layer), axis=0) for layer in layers],
        ),
        (
            "trimmed-mean",
            lambda: trimmed_mean(base, updates, trim=trim, threads=th),
            lambda: legacy.aggregate_trimmed_avg(results, trim),
            lambda: [new_trim_mean(np.stack(layer), trim) for layer in layers],
        ),
        (
            "krum",
            lambda: multi_krum(base, updates, f=f, m=1, threads=th),
            lambda: legacy.aggregate_krum(results, f, 0),
            lambda: new_multikrum(1),
        ),
        (
            "multi-krum",
            lambda: multi_krum(base, updates, f=f, m=m, threads=th),
            lambda: legacy.aggregate_krum(results, f, m),
            lambda: new_multikrum(m),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="P = 65,536 instead of 1,048,576")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ks", default="10,100")
    parser.add_argument("--threads", type=int, default=None, help="fedchain's threads (default: CPUs, at most 4)")
    args = parser.parse_args(argv)

    p = 1 << 16 if args.quick else 1 << 20
    trim, f, m = 0.1, 2, 5
    print(f"P={p:,}  repeats={args.repeats}  trim={trim}  f={f}  m={m}  (seconds, median; ratio = flower / fedchain)")
    print(f"{'K':>4} {'rule':<14} {'fedchain':>9} {'legacy':>9} {'serverapp':>9} {'legacy/fc':>9} {'serverapp/fc':>12}")
    for k in (int(x) for x in args.ks.split(",")):
        base, updates = _updates(k, p, seed=k)
        rules = _contenders(base, updates, args.threads, trim, f, m)
        for name, ours, old, new in rules:
            slow_legacy = name in ("krum", "multi-krum") and k > 20
            times: dict[str, list[float]] = {"fc": [], "legacy": [], "new": []}
            for rep in range(args.repeats):
                times["fc"].append(_time(ours))
                if old is not None and (not slow_legacy or rep == 0):
                    times["legacy"].append(_time(old))
                times["new"].append(_time(new))
            fc = statistics.median(times["fc"])
            lg = statistics.median(times["legacy"]) if times["legacy"] else float("nan")
            nw = statistics.median(times["new"])
            print(f"{k:>4} {name:<14} {fc:>9.3f} {lg:>9.3f} {nw:>9.3f} {lg / fc:>9.2f} {nw / fc:>12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
