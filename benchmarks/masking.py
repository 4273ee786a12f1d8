"""Masking throughput against the raw ChaCha20 keystream rate of the same library, on this machine.

Run: ``PYTHONPATH=$PWD python benchmarks/masking.py [--elements 1000000] [--repeat 5]``.

Figures (best of ``--repeat`` runs, in bytes of keystream per second):

- raw: ``cryptography``'s ChaCha20 ``update_into`` of P*8 zero bytes into a preallocated buffer
  (its fastest path), one stream, and K streams of K keys (the keystream a participant needs);
- prg: :func:`fedchain.fl.masking.prg`, one stream of P words;
- mask: :func:`fedchain.fl.masking.mask_update` for a roster of K (K streams: K-1 pair masks
  and the self mask), in keystream bytes per second, and as the time per participant;
- quantize + mask: the whole per-participant cost of a masked update (clip, fixed point, masks).

The target is prg and mask >= 0.5 x raw. The machine is shared, so raw and masked runs alternate
and each keeps its best time.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedchain.fl import masking
from fedchain.types import Address


def _timed(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """The best time of each function, the functions run in turn ``repeat`` times (so a busy spell hits all alike)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(p: int, rosters: Sequence[int], repeat: int) -> dict[str, Any]:
    """Every figure of the module docstring at ``p`` words and each roster size, in seconds and bytes per second.

    ``one``: one stream (``raw``, ``prg``); ``quantize``; ``rosters``: per roster size K, the raw
    rate of K streams, ``mask_update``'s time and keystream rate, and their ratio.
    """
    nbytes = 8 * p
    zeros, out = np.zeros(nbytes, np.uint8), np.empty(nbytes, np.uint8)
    out.fill(0)  # touch the pages once: the raw rate then counts no page faults

    def raw(seeds: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            for seed in seeds:
                Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update_into(zeros, out)

        return run

    rng = np.random.default_rng(0)
    delta = {"w": rng.normal(0.0, 1e-3, size=p).astype(np.float32)}
    params = masking.MaskingParams(frac_bits=24, clip=1.0)
    q = masking.quantize(delta, 100, params)
    one = _timed({"raw": raw([bytes(32)]), "prg": lambda: masking.prg(bytes(32), p)}, repeat)
    raw_rate, prg_rate = nbytes / one["raw"], nbytes / one["prg"]
    quantize_time = _timed({"q": lambda: masking.quantize(delta, 100, params)}, repeat)["q"]
    me = Address("0x" + "80" + "00" * 19)
    per_k: list[dict[str, Any]] = []
    for k in rosters:
        others = {
            Address("0x" + hashlib.sha256(b"%d" % j).hexdigest()[:40]): hashlib.sha256(b"s%d" % j).digest()
            for j in range(1, k)
        }
        seeds = [bytes(32), *others.values()]
        times = _timed(
            {
                "raw": raw(seeds),
                "mask": partial(masking.mask_update, q, self_seed=bytes(32), pair_seeds=others, me=me),
            },
            repeat,
        )
        rate, raw_k = k * nbytes / times["mask"], k * nbytes / times["raw"]
        per_k.append(
            {
                "k": k,
                "raw_rate": raw_k,
                "mask_seconds": times["mask"],
                "mask_rate": rate,
                "ratio": rate / raw_k,
                "ratio_to_one_stream": rate / raw_rate,
                "quantize_and_mask_seconds": quantize_time + times["mask"],
            }
        )
    return {
        "p": p,
        "repeat": repeat,
        "raw_rate": raw_rate,
        "prg_rate": prg_rate,
        "prg_ratio": prg_rate / raw_rate,
        "quantize_seconds": quantize_time,
        "rosters": per_k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rosters", type=int, nargs="+", default=[3, 10, 30])
    args = parser.parse_args()
    m = measure(args.elements, args.rosters, args.repeat)
    p, nbytes = m["p"], 8 * m["p"]
    print(f"P = {p:,} words ({nbytes / 2**20:.1f} MiB per stream), best of {m['repeat']} interleaved runs")
    print(f"raw ChaCha20 keystream (update_into, 1 stream): {m['raw_rate'] / 1e9:.3f} GB/s")
    print(f"prg() (1 stream, allocating its result):        {m['prg_rate'] / 1e9:.3f} GB/s  ratio {m['prg_ratio']:.2f}")
    q = m["quantize_seconds"]
    print(f"quantize(): {q * 1e3:.1f} ms ({4 * p / q / 1e9:.3f} GB/s of float32)")
    for r in m["rosters"]:
        print(
            f"K = {r['k']:>2}: raw {r['k']} streams {r['raw_rate'] / 1e9:.3f} GB/s; mask_update {r['mask_seconds'] * 1e3:7.1f} ms"
            f" = {r['mask_rate'] / 1e9:.3f} GB/s of keystream, ratio {r['ratio']:.2f} ({r['ratio_to_one_stream']:.2f} of 1-stream raw);"
            f" quantize + mask {r['quantize_and_mask_seconds'] * 1e3:7.1f} ms per participant"
        )


if __name__ == "__main__":
    main()
