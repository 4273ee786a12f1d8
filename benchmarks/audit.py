"""The audit's throughput against sha256 over the same bytes, and its time as the history grows.

A history of finalized rounds of K synthetic updates of P parameters is written through the
ledger and the store (no training: only the audit is measured), then
:func:`fedchain.audit.audit_ledger` replays it (known code, every blob re-hashed, every
aggregate recomputed bit for bit). Two figures per history length:

- ``vs_sha256``: ``hashlib.sha256`` over the very blobs (read from the store, hashed in memory,
  one at a time) divided by the audit's time (>= 0.8: the audit costs at most 1.25 times
  hashing its bytes), the median over the repeats, each repeat's reference taken right before
  its audit;
- ``vs_bound``: the audit's own lower bound (the bytes the audit read through the store, each
  hashed once, divided by hashlib's rate on one large buffer) divided by the audit's time.

Linear: the audit's seconds per round at the longest history over the shortest.

What bounds the ratio: the work one round of the audit cannot skip, each piece timed alone on one
thread over the last round's blobs (CPU seconds, median of 5): hashing its bytes, the rest of the
verified reads (copying the blocks in, the buffer, the DAG walk), the updates' exact sums of
squares (the norms), decoding, the recomputed FedAvg compared with the stored aggregate in one
pass (``FedAvg.matches``, as the audit verifies a round it holds), the check of the stored
aggregate's header, and reading the round from the chain (the whole history read, per round). ``cap_vs_sha256`` is sha256's time over those pieces' total
spread perfectly over the machine's cores: what the audit would reach if nothing cost more
when two threads share the machine, and nothing waited. ``two_threads_speedup`` says how far
that holds: the same verified reads made by two threads at once against one (2.0 if the cores
do not slow each other down; a shared virtual machine's memory and caches make it less), and
``cap_at_measured_speedup`` is the cap with the cores worth that much together.

And what the machine allows the audit as it now works: ``audit_cpu_vs_pieces`` is the audit's own
CPU per round (every thread, at the longest history) over the pieces' total (what running them
side by side costs: shared caches and memory, the GIL, the glue between the pieces), and
``cap_at_audit_cpu`` is sha256's time over that CPU spread over the cores, counted as what two
threads hashing at once are worth against one (``two_threads_hash_speedup``): the audit cannot be
faster than that without spending less CPU.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import (
    CHAINS,
    MB,
    TimedStore,
    Verdict,
    anvil_missing,
    chain_label,
    median,
    open_chain,
    part_main,
    signer,
    time_of,
)
from benchmarks._task import SyntheticTask
from fedchain.audit import audit_ledger
from fedchain.chain import Chain, Ledger
from fedchain.fl.codec import sum_of_squares_after_header
from fedchain.hashing import sha256
from fedchain.orchestrator.federation import deploy, genesis_params, make_manifest
from fedchain.protocol import Rules, load_rules
from fedchain.protocol.blobs import aggregate_blob, read_model, read_update, stored_aggregate_arrays, update_blob
from fedchain.storage import BlobStore, open_store
from fedchain.storage._buffers import BufferPool, reading_into
from fedchain.types import Cid, Digest

TARGET = 0.8
#: Linear: seconds per round may grow by at most this factor from the shortest history to the longest.
TARGET_GROWTH = 1.25


class History:
    """A ledger with finalized rounds of ``k`` synthetic updates, grown ``rounds`` at a time."""

    def __init__(self, chain: Chain, store: BlobStore, k: int, p: int) -> None:
        task = SyntheticTask(p)
        self.chain = chain
        self.store = store
        self.coordinator = signer("audit coordinator")
        self.members = sorted((signer(f"audit participant {i}") for i in range(k)), key=lambda s: int(s.address, 16))
        for s in (self.coordinator, *self.members):
            chain.fund(s.address)
        manifest = make_manifest(
            task, seed=11, min_updates=k, round_seconds=3600, max_blob_size=task.schema().nbytes + (1 << 20)
        )
        self.params = genesis_params(task, manifest.seed)
        d = deploy(chain, self.coordinator, store, manifest, self.params)
        self.ledger: Ledger = d.ledger
        for s in self.members:
            self.ledger.register_participant(self.coordinator, s.address, 1_000_000)
        self.rules: Rules = load_rules(self.ledger, store)
        self.base = (d.genesis_hash, d.genesis_cid)
        self.blobs: list[Cid] = [d.manifest_cid, d.genesis_cid]
        self.rng = np.random.default_rng(5)

    def grow(self, rounds: int) -> None:
        ledger, c = self.ledger, self.coordinator
        for _ in range(rounds):
            r = ledger.next_round()
            base_hash, base_cid = self.base
            ledger.open_round(c, r, base_hash, base_cid, self.chain.now() + 3600, len(self.members))
            deltas = []
            for s in self.members:
                delta = {
                    n: self.rng.standard_normal(a.shape, dtype=np.float32) * np.float32(1e-3)
                    for n, a in self.params.items()
                }
                blob = update_blob(delta, round_id=r, base_hash=base_hash, sender=s.address, num_samples=100)
                cid = self.store.put(blob)
                ledger.submit_update(s, r, sha256(blob), cid, 100)
                self.blobs.append(cid)
                deltas.append((s.address, 100, delta))
            ledger.close_round(c, r)
            self.params = self.rules.strategy.aggregate(self.params, deltas, total_samples=100 * len(self.members))
            blob = aggregate_blob(
                self.params, self.rules, round_id=r, base_hash=base_hash, num_samples=100 * len(self.members)
            )
            digest, cid = sha256(blob), self.store.put(blob)
            ledger.finalize_round(c, r, digest, cid, [s.address for s in self.members])
            self.blobs.append(cid)
            self.base = (digest, cid)


def _sha256_of(store: BlobStore, cids: list[Cid]) -> tuple[int, float]:
    """Bytes of the blobs and the seconds hashlib takes over them in memory (median of 3 per blob, one blob held at a time)."""
    nbytes, seconds = 0, 0.0
    for cid in cids:
        data = store.get(cid)
        nbytes += len(data)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            hashlib.sha256(data).digest()
            times.append(time.perf_counter() - started)
        seconds += median(times)
        del data
    return nbytes, seconds


def hashlib_rate() -> float:
    """hashlib's sha256 bytes per second on one 64 MiB buffer (median of 3)."""
    buf = np.random.default_rng(0).integers(0, 256, 64 * MB, dtype=np.uint8).tobytes()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        hashlib.sha256(buf).digest()
        times.append(time.perf_counter() - started)
    return len(buf) / median(times)


def _cpu(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median CPU seconds (every thread of the process) of ``fn``, after a warm-up call."""
    return time_of(fn, repeats, clock=time.process_time)


def _read_all(store: BlobStore, reads: list[tuple[Cid, Digest]], pool: BufferPool) -> None:
    with reading_into(pool):
        for cid, digest in reads:
            store.get_verified(cid, digest)


def work_per_round(history: History) -> dict[str, float]:
    """CPU seconds of each piece of the audit's work for the last round, each alone on one thread."""
    ledger, store, rules = history.ledger, history.store, history.rules
    r = ledger.next_round() - 1
    h = ledger.round_history(r)
    assert h.aggregate is not None
    agg = h.aggregate
    reads = [(u.cid, u.update_hash) for u in h.updates] + [(agg.cid, agg.aggregate_hash)]
    blobs = [store.get_verified(cid, digest) for cid, digest in reads]
    base = read_model(store.get_verified(h.opened.base_cid, h.opened.base_hash), rules).params
    decoded = [read_update(b, rules, u, base_hash=h.opened.base_hash) for b, u in zip(blobs, h.updates, strict=False)]
    updates = [(u.participant, u.num_samples, d.delta) for u, d in zip(h.updates, decoded, strict=True)]
    total = sum(u.num_samples for u in h.updates)
    squares = [sum_of_squares_after_header(b) for b in blobs[:-1]]  # the decoder is given them, as in the audit
    stored = stored_aggregate_arrays(blobs[-1], rules, round_id=r, base_hash=h.opened.base_hash, num_samples=total)
    assert stored is not None
    pool = BufferPool(keep=2 * len(reads))  # as the audit reads: into buffers it read into before
    _read_all(store, reads, pool)
    out = {
        "hash": _cpu(lambda: [hashlib.sha256(b).digest() for b in blobs]),
        "read": _cpu(lambda: _read_all(store, reads, pool)),
        "squares": _cpu(lambda: [sum_of_squares_after_header(b) for b in blobs[:-1]]),
        "decode": _cpu(
            lambda: [
                read_update(b, rules, u, base_hash=h.opened.base_hash, copy=False, squares=q)
                for b, u, q in zip(blobs, h.updates, squares, strict=False)
            ]
        ),
        # the recomputed FedAvg compared with the stored aggregate in one pass (FedAvg.matches), as the
        # audit verifies a round it holds, and the check of the stored aggregate's header before it
        "fedavg": _cpu(lambda: rules.strategy.matches(base, updates, total_samples=total, expected=stored)),  # type: ignore[attr-defined]
        "compare": _cpu(
            lambda: stored_aggregate_arrays(
                blobs[-1], rules, round_id=r, base_hash=h.opened.base_hash, num_samples=total
            )
        ),
        "chain": _cpu(lambda: list(ledger.history()), repeats=3) / (r + 1),  # read in bulk, as the audit does
    }
    out["read"] = max(0.0, out["read"] - out["hash"])  # the verified read hashes too
    out["total"] = sum(out.values())
    out["two_threads_speedup"] = _two_threads_speedup(store, reads)
    out["two_threads_hash_speedup"] = _two_threads_hash_speedup(blobs)
    return out


def _two_threads_hash_speedup(blobs: list[bytearray], times: int = 8) -> float:
    """How much faster two threads hash the round's blobs than one (2.0 if the two cores are worth two).

    Hashing is the audit's critical work; on a virtual machine whose two vCPUs share a physical core's
    resources (or its memory) two threads hash less than twice as fast, and that caps the audit too.
    """

    def work(thread: int, count: int) -> None:
        for _ in range(count):
            for b in blobs:
                hashlib.sha256(b).digest()

    return _two_threads_vs_one(work, times)


def _two_threads_speedup(store: BlobStore, reads: list[tuple[Cid, Digest]], rounds: int = 8) -> float:
    """How much faster two threads make the same verified reads than one (2.0: the cores do not slow each other).

    The same ``rounds`` x the round's reads, on one thread, then split between two, each thread
    reading into buffers of its own.
    """
    pools = [BufferPool(keep=2 * len(reads)) for _ in range(2)]

    def work(thread: int, count: int) -> None:
        for _ in range(count):
            _read_all(store, reads, pools[thread])

    return _two_threads_vs_one(work, rounds)


def _two_threads_vs_one(work: Callable[[int, int], None], times: int) -> float:
    """``work(thread, count)`` done ``times`` times on thread 0 alone, over the same split between two threads
    at once (median of 3 each)."""

    def one() -> None:
        work(0, times)

    def two() -> None:
        threads = [threading.Thread(target=work, args=(thread, times // 2)) for thread in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return time_of(one, 3) / time_of(two, 3)


def on_chain(kind: str, lengths: tuple[int, ...], k: int, p: int, repeats: int) -> dict[str, Any]:
    points: list[dict[str, Any]] = []
    with open_chain(kind) as chain, tempfile.TemporaryDirectory(prefix="fedchain-bench-audit-") as tmp:
        store = open_store(str(Path(tmp) / "store"), max_blob_size=p * 4 + (1 << 21))
        history = History(chain, store, k, p)
        built = 0
        for n in sorted(lengths):
            print(f"audit: {chain_label(kind)}, building {n} rounds", file=sys.stderr, flush=True)
            history.grow(n - built)
            built = n
            rate = hashlib_rate()
            times, shas, cpu, main_cpu, read = [], [], [], [], 0
            for _ in range(repeats):
                # the reference right before each audit, so that each ratio is of two figures taken side
                # by side (the machine's speed drifts over the minutes a long history takes)
                nbytes, sha_seconds = _sha256_of(store, history.blobs)
                shas.append(sha_seconds)
                gc.collect()
                timed = TimedStore(store)
                started, cpu_started, main_started = time.perf_counter(), time.process_time(), time.thread_time()
                report = audit_ledger(history.ledger, timed, expect_rounds=n)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
                main_cpu.append(time.thread_time() - main_started)
                read = timed.bytes_read
                if not report.ok:
                    raise RuntimeError(
                        f"the benchmark's own history failed its audit: {[str(f) for f in report.all_failures]}"
                    )
            seconds, sha_seconds = median(times), median(shas)
            points.append(
                {
                    "rounds": n,
                    "mb": nbytes / MB,
                    "audit_seconds": seconds,
                    "sha256_seconds": sha_seconds,
                    "repeats": repeats,
                    "bytes_read": read,
                    "bound_seconds": read / rate,
                    "hashlib_mb_per_s": rate / MB,
                    "mb_per_s": nbytes / MB / seconds,
                    "vs_sha256": median([sha / t for sha, t in zip(shas, times, strict=True)]),
                    "vs_bound": read / rate / seconds,
                    "seconds_per_round": seconds / n,
                    # CPU seconds of the whole process (every thread) and of the verifying thread:
                    # with C cores the audit takes at least max(main, cpu / C), hashing overlapped or not
                    "cpu_seconds": median(cpu),
                    "main_thread_cpu_seconds": median(main_cpu),
                    "cpu_bound_vs_sha256": sha_seconds / max(median(main_cpu), median(cpu) / (os.cpu_count() or 1)),
                    # the machine's 1-minute load average after the audits (other jobs share its cores)
                    "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                }
            )
        work = work_per_round(history)
    cpus = os.cpu_count() or 1
    longest = points[-1]
    audit_cpu = longest["cpu_seconds"] / longest["rounds"]
    return {
        "k": k,
        "p": p,
        "points": points,
        "per_round_growth": points[-1]["seconds_per_round"] / points[0]["seconds_per_round"],
        "work_per_round": work,
        "cap_vs_sha256": work["hash"] / (work["total"] / cpus),
        "cap_at_measured_speedup": work["hash"] / (work["total"] / max(1.0, work["two_threads_speedup"])),
        # the audit's own CPU per round (every thread, longest history) against the pieces alone: what
        # running them side by side costs (cache and memory shared, the GIL, the glue between them)
        "audit_cpu_per_round": audit_cpu,
        "audit_cpu_vs_pieces": audit_cpu / work["total"],
        # the audit's wall time cannot be less than its CPU over what the cores are worth together at
        # hashing: sha256's time over that is what this machine allows the audit as it now works
        "cap_at_audit_cpu": work["hash"] / (audit_cpu / max(1.0, min(cpus, work["two_threads_hash_speedup"]))),
    }


def run(quick: bool, chains: tuple[str, ...] = CHAINS) -> dict[str, Any]:
    lengths: tuple[int, ...]
    if quick:
        lengths, k, p, repeats, chains = (2, 4), 3, 100_000, 1, ("embedded",)
    else:
        lengths, k, p, repeats = (10, 50, 200), 3, 1_000_000, 3
    out: dict[str, Any] = {"chains": {}}
    for kind in chains:
        if kind == "anvil" and (why := anvil_missing()):
            out["chains"][kind] = {"skipped": why}
            continue
        out["chains"][kind] = on_chain(kind, lengths, k, p, repeats)
    return out


def verdicts(result: dict[str, Any]) -> list[Verdict]:
    out = []
    for kind, c in result["chains"].items():
        if "points" not in c:
            continue
        for pt in c["points"]:
            if pt["rounds"] >= 50 or pt is c["points"][-1]:
                out.append(
                    Verdict(
                        f"audit vs sha256, {pt['rounds']} rounds ({chain_label(kind)})",
                        pt["vs_sha256"],
                        ">=",
                        TARGET,
                        f"vs its lower bound {pt['vs_bound']:.2f}",
                    )
                )
        out.append(
            Verdict(
                f"audit seconds per round, longest / shortest history ({chain_label(kind)})",
                c["per_round_growth"],
                "<=",
                TARGET_GROWTH,
            )
        )
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "## audit (K updates of P parameters per round; each blob byte hashed once)",
        "",
        "| chain | rounds | MB | audit s | sha256 s | audit MB/s | vs sha256 | bound s | vs bound | s/round | CPU s (main thread) | CPU bound vs sha256 | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, c in result["chains"].items():
        if "points" not in c:
            lines.append(f"| {chain_label(kind)} | skipped: {c['skipped']} |")
            continue
        for pt in c["points"]:
            lines.append(
                f"| {chain_label(kind)} | {pt['rounds']} | {pt['mb']:.0f} | {pt['audit_seconds']:.2f} | {pt['sha256_seconds']:.2f} "
                f"| {pt['mb_per_s']:.0f} | {pt['vs_sha256']:.2f} | {pt['bound_seconds']:.2f} | {pt['vs_bound']:.2f} | {pt['seconds_per_round']:.3f} "
                f"| {pt['cpu_seconds']:.2f} ({pt['main_thread_cpu_seconds']:.2f}) | {pt['cpu_bound_vs_sha256']:.2f} "
                f"| {_load(pt.get('load_1min'))} |"
            )
        lines.append(f"| {chain_label(kind)} | growth of s/round | | | | | | | | {c['per_round_growth']:.2f} | | | |")
    lines += [
        "",
        (
            "What one round's audit cannot skip, each piece alone on one thread (CPU ms; the cap is sha256 over "
            "the pieces' total spread perfectly over the cores):"
        ),
        "",
        (
            "| chain | hash | read | sums of squares | decode | FedAvg vs stored | header | chain | total | cap vs sha256 "
            "| two threads' reads vs one | cap at that speedup |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    bounds = [
        "",
        (
            "What the machine allows the audit as it works now: its own CPU per round (every thread, longest "
            "history) against the pieces' total, and sha256's time over that CPU spread over what two threads "
            "hashing are worth against one:"
        ),
        "",
        "| chain | audit CPU ms/round | vs the pieces | two threads' hashing vs one | cap at the audit's CPU |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, c in result["chains"].items():
        if "work_per_round" not in c:
            continue
        w = c["work_per_round"]
        cells = " | ".join(
            f"{w[key] * 1e3:.1f}"
            for key in ("hash", "read", "squares", "decode", "fedavg", "compare", "chain", "total")
        )
        lines.append(
            f"| {chain_label(kind)} | {cells} | {c['cap_vs_sha256']:.2f} | {w['two_threads_speedup']:.2f}x "
            f"| {c['cap_at_measured_speedup']:.2f} |"
        )
        bounds.append(
            f"| {chain_label(kind)} | {c['audit_cpu_per_round'] * 1e3:.1f} | {c['audit_cpu_vs_pieces']:.2f}x "
            f"| {w['two_threads_hash_speedup']:.2f}x | {c['cap_at_audit_cpu']:.2f} |"
        )
    return "\n".join(lines + bounds)


def _load(load: float | None) -> str:
    return "" if load is None else f"{load:.1f}"


def main(argv: list[str] | None = None) -> int:
    return part_main(__doc__, run, table, argv)


if __name__ == "__main__":
    sys.exit(main())
