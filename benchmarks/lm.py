"""Benchmark of the ``lm`` task: bytes per update, perplexity by training regime, seconds per round.

Run from the repository root (the base is pre-trained on first use, then cached)::

    OMP_NUM_THREADS=1 python benchmarks/lm.py --rounds 5

It prints three tables:

(a) bytes per update: the exchanged LoRA B matrices against the full model's parameters;
(b) perplexity (per byte) on each hospital's held-out titles and on the pooled held-out titles
    for the pre-trained base alone, each hospital fine-tuning alone, federated FedAvg over B
    (computed here in numpy float64, weighted by ``n_k``) and centralized fine-tuning on the
    pooled training text, each for the same number of epochs; the target is federated better
    than every hospital alone on the pooled held-out text;
(c) local training seconds (wall and CPU) per round per participant at K participants.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import numpy as np
import torch

from fedchain.fl import _safetensors
from fedchain.fl.schema import Arrays
from fedchain.tasks.lm import Corpus, LmTask

logger = logging.getLogger("benchmarks.lm")
T = TypeVar("T")


def fedavg(updates: list[tuple[Arrays, int]]) -> Arrays:
    """FedAvg of trained arrays weighted by sample count, in float64, cast to float32."""
    total = sum(n for _, n in updates)
    out: Arrays = {}
    for name, first in updates[0][0].items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for arrays, n in updates:  # fixed order: participant order
            acc += arrays[name].astype(np.float64) * (n / total)
        out[name] = acc.astype(np.float32)
    return out


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds (= local epochs for the non-federated runs)")
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 for reproducible figures)")
    parser.add_argument("--cache-dir", default=".fedchain-cache/lm")
    parser.add_argument("--lr", type=float, default=None, help="local learning rate (default: the task's)")
    parser.add_argument("--epochs", type=int, default=None, help="local epochs per round (default: the task's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    task = LmTask(cache_dir=args.cache_dir)
    (_, pre_wall, pre_cpu) = timed(task.frozen)
    split = task.demo_split(args.participants, args.seed)
    config = dict(task.train_config())
    if args.lr is not None:
        config["lr"] = args.lr
    if args.epochs is not None:
        config["epochs"] = args.epochs
    genesis = task.init(0)
    names = [h.name for h in split.holdings]
    heldouts: list[Corpus] = [h.heldout for h in split.holdings] + [split.pooled_heldout()]

    # (a) bytes per update
    schema = task.schema()
    full = task.base_parameters()
    lora_blob = len(_safetensors.render(genesis, {}))
    full_blob = len(_safetensors.render(task.base(), {}))
    print(f"\nbase: {task.describe()}")
    print(f"frozen: {dict(task.frozen())}")
    print(f"base ready in {pre_wall:.1f} s wall, {pre_cpu:.1f} s CPU (0 if it was cached)\n")
    print("(a) bytes per update")
    print(f"  LoRA B ({len(schema.tensors)} tensors)  {schema.size:>9,} parameters  {lora_blob:>11,} bytes")
    print(f"  full model           {full:>9,} parameters  {full_blob:>11,} bytes")
    print(f"  ratio                                      {full_blob / lora_blob:>10.1f}x\n")

    # (b) perplexity by regime
    def ppl(arrays: Arrays) -> list[float]:
        return [task.evaluate(arrays, c)["perplexity"] for c in heldouts]

    rows: list[tuple[str, list[float]]] = [("base (no fine-tuning)", ppl(genesis))]
    seconds: list[tuple[float, float]] = []
    fed = genesis
    for r in range(args.rounds):
        updates = []
        for k, h in enumerate(split.holdings):
            res, wall, cpu = timed(partial(task.train, fed, h.train, config, seed=1000 * r + k))
            seconds.append((wall, cpu))
            updates.append((res.arrays, res.num_samples))
        fed = fedavg(updates)
        logger.info("federated round %d done", r + 1)
    rows.append((f"federated FedAvg, {args.rounds} rounds", ppl(fed)))
    for k, h in enumerate(split.holdings):
        alone = genesis
        for r in range(args.rounds):
            alone = task.train(alone, h.train, config, seed=1000 * r + k).arrays
        rows.append((f"{h.name} alone", ppl(alone)))
    pooled = split.pooled_train()
    central = genesis
    for r in range(args.rounds):
        central = task.train(central, pooled, config, seed=1000 * r).arrays
    rows.append(("centralized (pooled)", ppl(central)))

    header = "".join(f"{n:>12}" for n in [*names, "pooled"])
    print(f"(b) perplexity per byte on held-out titles ({len(heldouts[0])} per hospital)")
    print(f"  {'regime':<30}{header}")
    for label, values in rows:
        print(f"  {label:<30}" + "".join(f"{v:>12.3f}" for v in values))
    fed_pooled = rows[1][1][-1]
    best_alone = min(v[-1] for label, v in rows if label.endswith(" alone"))
    verdict = "met" if fed_pooled < best_alone else "NOT met"
    print(f"  target federated < every hospital alone on pooled: {fed_pooled:.3f} < {best_alone:.3f}: {verdict}\n")

    # (c) seconds per round per participant
    walls, cpus = np.array([s[0] for s in seconds]), np.array([s[1] for s in seconds])
    print(f"(c) local training per round per participant, K={args.participants}, {len(seconds)} runs")
    print(f"  wall  mean {walls.mean():.2f} s  median {np.median(walls):.2f} s  max {walls.max():.2f} s")
    print(f"  CPU   mean {cpus.mean():.2f} s  median {np.median(cpus):.2f} s  max {cpus.max():.2f} s")
    print(f"  ({len(split.holdings[0].train)} titles each, config {dict(config)}, {args.threads} torch thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
